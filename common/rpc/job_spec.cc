#include "common/rpc/job_spec.h"

#include <limits>
#include <map>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/spec_path.h"
#include "common/task_catalog.h"
#include "common/text.h"

namespace attune::common {
namespace {

namespace pb = google::protobuf;

// Bounds on what a spec may expand to. Aliases are expanded when converted,
// so a 1 KB file of nested aliases ("billion laughs") could otherwise become
// gigabytes; nesting is bounded so that recursion cannot exhaust the stack.
constexpr size_t kMaxSpecBytes = size_t{1} << 20;
constexpr int64_t kMaxSpecValues = 200'000;
constexpr int kMaxSpecDepth = 64;

struct Budget {
  int64_t values_left = kMaxSpecValues;
};

absl::StatusOr<nlohmann::json> YamlToJson(const YAML::Node& n, const std::string& path, Budget& budget,
                                          int depth = 0) {
  const std::string where = path.empty() ? "spec" : path;
  if (--budget.values_left < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: more than ", kMaxSpecValues, " values (after expanding aliases)"));
  }
  if (depth > kMaxSpecDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(where.substr(0, 64), where.size() > 64 ? "..." : "", ": nested deeper than ", kMaxSpecDepth, " levels"));
  }
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nlohmann::json(nullptr);
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (size_t i = 0; i < n.size(); ++i) {
        auto v = YamlToJson(n[i], absl::StrCat(path, "[", i, "]"), budget, depth + 1);
        if (!v.ok()) return v.status();
        a.push_back(std::move(*v));
      }
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (auto it = n.begin(); it != n.end(); ++it) {
        if (!it->first.IsScalar()) return absl::InvalidArgumentError(absl::StrCat(where, ": a key must be a plain text"));
        const std::string& key = it->first.Scalar();
        if (!IsValidUtf8(key)) return absl::InvalidArgumentError(absl::StrCat(where, ": a key is not valid UTF-8"));
        const std::string p = path.empty() ? key : absl::StrCat(path, ".", key);
        // As Kubernetes' strict decoding: the second value would silently win.
        if (o.contains(key)) return absl::InvalidArgumentError(absl::StrCat(p, ": duplicate key"));
        auto v = YamlToJson(it->second, p, budget, depth + 1);
        if (!v.ok()) return v.status();
        o[key] = std::move(*v);
      }
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (!IsValidUtf8(s)) return absl::InvalidArgumentError(absl::StrCat(where, ": not valid UTF-8"));
      if (n.Tag() == "!") return nlohmann::json(s);  // quoted: always a string
      if (s == "~" || s == "null" || s == "Null" || s == "NULL") return nlohmann::json(nullptr);
      if (s == "true" || s == "True" || s == "TRUE") return nlohmann::json(true);
      if (s == "false" || s == "False" || s == "FALSE") return nlohmann::json(false);
      if (LooksLikeInteger(s)) {
        auto v = ParseInt64(s);
        if (!v) return absl::InvalidArgumentError(absl::StrCat(where, ": integer out of range"));
        return nlohmann::json(*v);
      }
      if (LooksLikeFloat(s)) {
        auto v = ParseFiniteDouble(s);
        if (!v) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": number out of range (", s.size() > 32 ? s.substr(0, 32) + "..." : s,
                           " is not a finite double of normal size)"));
        }
        return nlohmann::json(*v);
      }
      // YAML's special floats travel as the strings proto3 JSON uses for them.
      if (s == ".nan" || s == ".NaN" || s == ".NAN") return nlohmann::json("NaN");
      if (s == ".inf" || s == ".Inf" || s == "+.inf") return nlohmann::json("Infinity");
      if (s == "-.inf" || s == "-.Inf") return nlohmann::json("-Infinity");
      return nlohmann::json(s);
    }
  }
  return nlohmann::json(nullptr);
}

// YAML text to JSON, every failure a Status: yaml-cpp reports some problems
// (bad conversions, deep nesting) by exceptions, which must not escape.
// `source` names the text in every error ("spec.yaml", "--set a=b").
absl::StatusOr<nlohmann::json> LoadYaml(const std::string& text, const std::string& source, const std::string& path) {
  try {
    const YAML::Node root = YAML::Load(text);
    Budget budget;
    auto j = YamlToJson(root, path, budget);
    if (!j.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", j.status().message()));
    return j;
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) return absl::InvalidArgumentError(absl::StrCat(source, ": malformed YAML: ", e.msg));
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed YAML: ", e.what()));
  }
}

// proto3 JSON writes 64-bit integers as strings: "-123".
bool IsIntegerText(const std::string& s) { return s.size() <= 20 && LooksLikeInteger(s) && s[0] != '+'; }

// Names every key that is not a field of `d` (proto or JSON name), and every
// value of the wrong kind, with its path, so a typo is never silently ignored.
void CheckFields(const nlohmann::json& j, const pb::Descriptor* d, const std::string& path,
                 std::vector<std::string>* errors) {
  if (!j.is_object()) {
    errors->push_back(absl::StrCat(path.empty() ? "spec" : path, ": must be a mapping"));
    return;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    std::string p = path.empty() ? key : absl::StrCat(path, ".", key);
    const pb::FieldDescriptor* f = d->FindFieldByName(key);
    for (int i = 0; !f && i < d->field_count(); ++i) {
      if (d->field(i)->json_name() == key) f = d->field(i);
    }
    if (!f) {
      errors->push_back(absl::StrCat(p, ": unknown field"));
      continue;
    }
    const nlohmann::json& v = it.value();
    if (v.is_null()) continue;
    if (f->is_map()) {
      if (!v.is_object()) {
        errors->push_back(absl::StrCat(p, ": must be a mapping"));
      } else if (f->message_type()->map_value()->type() == pb::FieldDescriptor::TYPE_MESSAGE &&
                 f->message_type()->map_value()->message_type()->file()->package() == "attune.v1") {
        for (auto e = v.begin(); e != v.end(); ++e) {
          CheckFields(e.value(), f->message_type()->map_value()->message_type(), absl::StrCat(p, ".", e.key()), errors);
        }
      }
      continue;
    }
    if (f->is_repeated()) {
      if (!v.is_array()) errors->push_back(absl::StrCat(p, ": must be a list"));
      continue;
    }
    if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      CheckFields(v, f->message_type(), p, errors);
      continue;
    }
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (!v.is_string()) errors->push_back(absl::StrCat(p, ": must be a string"));
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        if (!v.is_boolean()) errors->push_back(absl::StrCat(p, ": must be true or false"));
        break;
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64:
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        // proto3 JSON writes 64-bit integers as strings.
        if (!v.is_number_integer() &&
            !(v.is_string() && IsIntegerText(v.get<std::string>()))) {
          errors->push_back(absl::StrCat(p, ": must be an integer"));
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        if (!v.is_number() && !(v.is_string() && (v == "NaN" || v == "Infinity" || v == "-Infinity"))) {
          errors->push_back(absl::StrCat(p, ": must be a number"));
        }
        break;
      default:
        break;
    }
  }
}

// Drops nulls (YAML "key:" with no value) so that proto fields keep defaults.
void DropNulls(nlohmann::json& j) {
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end();) {
    if (it.value().is_null()) {
      it = j.erase(it);
    } else {
      DropNulls(it.value());
      ++it;
    }
  }
}

template <typename T>
T Or(T v, T def) {
  return v == T{} ? def : v;
}


absl::Status ParseYamlInto(const std::string& text, const std::string& source, pb::Message* out,
                           const std::vector<std::string>& overrides = {}) {
  if (text.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": larger than ", kMaxSpecBytes >> 20, " MiB"));
  }
  auto j = LoadYaml(text, source, "");
  if (!j.ok()) return j.status();
  if (!overrides.empty()) {
    std::map<std::string, std::string> sets;
    for (const std::string& o : overrides) {
      const size_t eq = o.find('=');
      if (eq == std::string::npos || eq == 0) {
        return absl::InvalidArgumentError(absl::StrCat("--set ", o, ": expected PATH=VALUE"));
      }
      auto value = LoadYaml(o.substr(eq + 1), absl::StrCat("--set ", o), o.substr(0, eq));
      if (!value.ok()) return value.status();
      sets[o.substr(0, eq)] = value->dump();
    }
    auto applied = SetSpecPaths(j->dump(), sets);
    if (!applied.ok()) return absl::InvalidArgumentError(absl::StrCat("--set ", applied.status().message()));
    *j = nlohmann::json::parse(*applied);
  }
  DropNulls(*j);
  std::vector<std::string> errors;
  CheckFields(*j, out->GetDescriptor(), "", &errors);
  if (!errors.empty()) {
    std::string msg = source + ": ";
    for (size_t i = 0; i < errors.size(); ++i) absl::StrAppend(&msg, i ? "; " : "", errors[i]);
    return absl::InvalidArgumentError(msg);
  }
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = pb::util::JsonStringToMessage(j->dump(), out, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", std::string(st.message())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text, const std::string& source,
                                         const std::vector<std::string>& overrides) {
  v1::JobSpec spec;
  if (auto s = ParseYamlInto(text, source, &spec, overrides); !s.ok()) return s;
  return spec;
}

absl::StatusOr<v1::SweepSpec> ParseSweepSpec(const std::string& text, const std::string& source) {
  v1::SweepSpec spec;
  if (auto s = ParseYamlInto(text, source, &spec); !s.ok()) return s;
  return spec;
}

JobConfig JobConfigFromProto(const v1::JobSpec& s) {
  JobConfig c;
  c.task = Or<std::string>(s.task().type(), c.task);
  if (s.task().has_mlm_probability()) c.mlm_probability = s.task().mlm_probability();
  if (s.task().has_whole_word_mask()) c.whole_word_mask = s.task().whole_word_mask();
  if (s.task().has_group_texts()) c.group_texts = s.task().group_texts();
  if (s.task().has_label_all_subwords()) c.label_all_subwords = s.task().label_all_subwords();
  c.train_on = Or(s.task().train_on(), c.train_on);
  c.name = s.name();
  c.labels.insert(s.labels().begin(), s.labels().end());
  c.model_path = s.model().path();
  c.model_from_job = s.model().from_job();
  c.has_model_config = s.model().has_config();
  if (c.has_model_config) {
    const auto& m = s.model().config();
    auto& f = c.model_config;
    f.vocab_size = m.vocab_size();
    f.hidden_size = Or<int64_t>(m.hidden_size(), f.hidden_size);
    f.num_hidden_layers = Or<int64_t>(m.num_hidden_layers(), f.num_hidden_layers);
    f.num_attention_heads = Or<int64_t>(m.num_attention_heads(), f.num_attention_heads);
    f.intermediate_size = Or<int64_t>(m.intermediate_size(), f.intermediate_size);
    f.max_position_embeddings = Or<int64_t>(m.max_position_embeddings(), f.max_position_embeddings);
    f.type_vocab_size = Or<int64_t>(m.type_vocab_size(), f.type_vocab_size);
    // Dropout 0 is a legitimate value, so these are proto3 optionals.
    if (m.has_hidden_dropout_prob()) f.hidden_dropout_prob = m.hidden_dropout_prob();
    if (m.has_attention_probs_dropout_prob()) f.attention_probs_dropout_prob = m.attention_probs_dropout_prob();
    f.layer_norm_eps = Or(m.layer_norm_eps(), f.layer_norm_eps);
    f.initializer_range = Or(m.initializer_range(), f.initializer_range);
    // Absent means hidden_dropout_prob (HF's null); a given value must be a
    // probability: a negative one becomes NaN so that validation names it
    // instead of reading it as "absent".
    if (m.has_classifier_dropout()) {
      f.classifier_dropout =
          m.classifier_dropout() >= 0 ? m.classifier_dropout() : std::numeric_limits<double>::quiet_NaN();
    }
    f.model_type = m.model_type();
    f.num_key_value_heads = m.num_key_value_heads();
    f.head_dim = m.head_dim();
    f.rms_norm_eps = Or(m.rms_norm_eps(), f.rms_norm_eps);
    f.rope_theta = Or(m.rope_theta(), f.rope_theta);
    if (m.has_tie_word_embeddings()) f.tie_word_embeddings = m.tie_word_embeddings();
  }
  c.vocab_path = s.model().vocab();
  c.built_vocab_size = Or<int64_t>(s.model().vocab_size(), c.built_vocab_size);
  if (s.model().has_do_lower_case()) c.do_lower_case = s.model().do_lower_case();
  c.init_embeddings = s.model().init_embeddings();
  c.tokenizer_path = s.model().tokenizer();
  const auto& d = s.data();
  c.train_path = d.train();
  c.validation_path = d.validation();
  c.validation_split = d.validation_split();
  c.text_column = Or(d.text_column(), c.text_column);
  c.text_pair_column = d.text_pair_column();
  c.label_column = Or(d.label_column(), c.label_column);
  c.max_length = Or<int64_t>(d.max_length(), c.max_length);
  if (d.cleaning().has_drop_missing()) c.drop_missing = d.cleaning().drop_missing();
  if (d.cleaning().has_drop_duplicates()) c.drop_duplicates = d.cleaning().drop_duplicates();
  if (d.cleaning().has_drop_conflicting()) c.drop_conflicting = d.cleaning().drop_conflicting();
  c.label_names.assign(d.labels().begin(), d.labels().end());
  c.max_field_bytes = Or<int64_t>(d.max_field_bytes(), c.max_field_bytes);
  c.augment_delete_rate = d.augment_delete_rate();
  c.augment_mask_rate = d.augment_mask_rate();
  c.data_format = d.format();
  if (d.has_packing()) c.packing = d.packing();
  const auto& m = s.method();
  c.method = Or(m.type(), c.method);
  c.lora_rank = Or<int64_t>(m.lora().rank(), c.lora_rank);
  c.lora_alpha = Or(m.lora().alpha(), c.lora_alpha);
  c.lora_dropout = m.lora().dropout();
  if (m.lora().targets_size() > 0) {
    c.lora_targets.assign(m.lora().targets().begin(), m.lora().targets().end());
    c.lora_targets_given = true;
  }
  c.adapter_size = Or<int64_t>(m.adapter().size(), c.adapter_size);
  if (m.has_merge_lora()) c.merge_lora = m.merge_lora();
  if (s.hyperparameters().has_gradient_checkpointing()) c.gradient_checkpointing = s.hyperparameters().gradient_checkpointing();
  const auto& h = s.hyperparameters();
  if (h.has_epochs()) c.epochs = h.epochs();
  c.max_steps = h.max_steps();
  if (h.has_batch_size()) c.batch_size = h.batch_size();
  if (h.has_learning_rate()) c.learning_rate = h.learning_rate();
  c.warmup_steps = h.warmup_steps();
  c.warmup_ratio = h.warmup_ratio();
  c.lr_scheduler = Or(h.lr_scheduler(), c.lr_scheduler);
  c.weight_decay = h.weight_decay();
  if (h.has_gradient_accumulation_steps()) c.gradient_accumulation_steps = h.gradient_accumulation_steps();
  if (h.has_max_grad_norm()) c.max_grad_norm = h.max_grad_norm();
  // Zero is a legitimate seed and beta, so these are proto3 optionals.
  if (h.has_seed()) c.seed = h.seed();
  if (h.has_adam_beta1()) c.adam_beta1 = h.adam_beta1();
  if (h.has_adam_beta2()) c.adam_beta2 = h.adam_beta2();
  if (h.has_adam_epsilon()) c.adam_epsilon = h.adam_epsilon();
  c.threads = Or<int64_t>(h.threads(), c.threads);
  c.precision = Or<std::string>(h.precision(), c.precision);
  const auto& e = s.evaluation();
  c.eval_every_steps = e.every_steps();
  c.eval_batch_size = Or<int64_t>(e.batch_size(), c.eval_batch_size);
  if (e.has_baseline()) c.eval_baseline = e.baseline();
  // An empty generate section asks for generation too: its bound is checked.
  if (e.has_generate()) c.eval_generate_max_new_tokens = e.generate().max_new_tokens() ? e.generate().max_new_tokens() : -1;
  c.eval_multiple_choice_path = e.multiple_choice();
  if (e.has_early_stopping()) {
    const TaskInfo* task = FindTask(c.task);  // unknown: refused by validation
    c.early_stopping_metric = Or<std::string>(e.early_stopping().metric(), task ? task->default_objective : "");
    c.early_stopping_mode = e.early_stopping().mode();
    c.early_stopping_patience = Or<int64_t>(e.early_stopping().patience(), c.early_stopping_patience);
    c.early_stopping_min_delta = e.early_stopping().min_delta();
  }
  c.checkpoint_every_steps = s.checkpoint().every_steps();
  c.checkpoint_keep_last = Or<int64_t>(s.checkpoint().keep_last(), c.checkpoint_keep_last);
  c.checkpoint_resume_from = s.checkpoint().resume_from();
  c.checkpoint_overwrite = s.checkpoint().overwrite();
  if (s.workers().has_count()) c.world_size = s.workers().count();
  c.backend = Or(s.workers().backend(), c.backend);
  c.sharding = Or(s.workers().sharding(), c.sharding);
  c.cpus_per_rank = Or<int64_t>(s.workers().cpus_per_rank(), c.cpus_per_rank);
  c.gpus_per_rank = s.workers().gpus_per_rank();
  c.priority = s.priority();
  c.max_restarts = s.max_restarts();
  c.output_dir = s.output_dir();
  return c;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path, const std::vector<std::string>& overrides) {
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) return text.status();
  auto spec = ParseJobSpec(*text, path, overrides);
  if (!spec.ok()) return spec.status();
  JobConfig c = JobConfigFromProto(*spec);
  if (auto s = ValidateJobConfig(c); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return c;
}

}  // namespace attune::common
