// Hugging Face model directories both ways (hf_checkpoint.h): BERT's
// parameter names, then the architecture-independent path that reads and
// writes them by the model's HfFacts.

#include "worker/model/hf_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/json_fields.h"
#include "common/safetensors.h"
#include "worker/model/bert.h"
#include "worker/model/decoder.h"
#include "worker/model/hf_io.h"
#include "worker/model/peft.h"
#include "worker/model/tensor_io.h"

namespace attune::worker::model {

namespace {

const std::string kPeftPrefix = "base_model.model.";

bool StartsWithAny(const std::string& name, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return absl::StartsWith(name, p); });
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> BertClassifierImpl::NamedParameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto& m = *this;
  auto add_ln = [&](const std::string& p, torch::nn::LayerNorm& ln) {
    out.emplace_back(p + ".weight", ln->weight);
    out.emplace_back(p + ".bias", ln->bias);
  };
  auto add_linear = [&](const std::string& p, LoraLinear& l) {
    out.emplace_back(p + ".weight", l->weight);
    out.emplace_back(p + ".bias", l->bias);
    if (l->lora_A) {
      out.emplace_back(p + ".lora_A.weight", l->lora_A->weight);
      out.emplace_back(p + ".lora_B.weight", l->lora_B->weight);
    }
  };
  auto add_adapter = [&](const std::string& p, BottleneckAdapter& a) {
    if (!a) return;
    out.emplace_back(p + ".adapter.down.weight", a->down->weight);
    out.emplace_back(p + ".adapter.down.bias", a->down->bias);
    out.emplace_back(p + ".adapter.up.weight", a->up->weight);
    out.emplace_back(p + ".adapter.up.bias", a->up->bias);
  };
  out.emplace_back("bert.embeddings.word_embeddings.weight", m.word->weight);
  out.emplace_back("bert.embeddings.position_embeddings.weight", m.position->weight);
  out.emplace_back("bert.embeddings.token_type_embeddings.weight", m.token_type->weight);
  add_ln("bert.embeddings.LayerNorm", m.emb_ln);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    auto& l = m.layers[i];
    std::string p = absl::StrCat("bert.encoder.layer.", i);
    add_linear(p + ".attention.self.query", l->query);
    add_linear(p + ".attention.self.key", l->key);
    add_linear(p + ".attention.self.value", l->value);
    add_linear(p + ".attention.output.dense", l->attn_out);
    add_adapter(p + ".attention.output", l->attn_adapter);
    add_ln(p + ".attention.output.LayerNorm", l->attn_ln);
    add_linear(p + ".intermediate.dense", l->inter);
    add_linear(p + ".output.dense", l->out);
    add_adapter(p + ".output", l->ffn_adapter);
    add_ln(p + ".output.LayerNorm", l->out_ln);
  }
  if (m.pooler) {
    out.emplace_back("bert.pooler.dense.weight", m.pooler->weight);
    out.emplace_back("bert.pooler.dense.bias", m.pooler->bias);
  }
  if (m.classifier) {
    out.emplace_back("classifier.weight", m.classifier->weight);
    out.emplace_back("classifier.bias", m.classifier->bias);
  } else {
    out.emplace_back("cls.predictions.transform.dense.weight", m.mlm_dense->weight);
    out.emplace_back("cls.predictions.transform.dense.bias", m.mlm_dense->bias);
    add_ln("cls.predictions.transform.LayerNorm", m.mlm_ln);
    out.emplace_back("cls.predictions.bias", m.mlm_bias);
  }
  return out;
}

absl::Status LoadStateDict(Model& model, const std::string& path, std::vector<std::string>* fresh,
                           bool require_all) {
  auto file = common::ReadSafeTensors(path);
  if (!file.ok()) return file.status();
  return LoadStateDict(model, *file, path, fresh, require_all);
}

absl::Status LoadStateDict(Model& model, const common::SafeTensorsFile& weights, const std::string& path,
                           std::vector<std::string>* fresh, bool require_all) {
  const HfFacts& facts = model.hf();
  // Normalise names: the base prefix on bare names, legacy suffixes, aliases.
  std::map<std::string, const common::SafeTensor*> by_name;
  for (const auto& [raw, t] : weights.tensors) {
    std::string name = raw;
    if (!StartsWithAny(name, facts.top_prefixes)) name = facts.base_prefix + name;
    for (const auto& [old_suffix, new_suffix] : facts.legacy_suffixes) {
      if (absl::EndsWith(name, old_suffix)) {
        name = name.substr(0, name.size() - old_suffix.size()) + new_suffix;
        break;
      }
    }
    if (auto alias = facts.aliases.find(name); alias != facts.aliases.end()) {
      if (!weights.tensors.count(alias->second)) by_name[alias->second] = &t;
      continue;
    }
    by_name[name] = &t;
  }
  // Everything is checked before any parameter changes; then each tensor is
  // converted and copied in turn, so that loading never holds a second copy
  // of the checkpoint (the file itself is mapped, not read: ReadSafeTensors).
  std::vector<std::string> missing, mismatched;
  std::vector<std::tuple<std::string, torch::Tensor, const common::SafeTensor*>> copies;
  for (auto& [name, param] : model.NamedParameters()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      // The head and the method's own weights start fresh (PEFT markers: .lora_, .adapter.).
      bool optional = StartsWithAny(name, facts.head_prefixes) || absl::StrContains(name, ".lora_") ||
                      absl::StrContains(name, ".adapter.");
      if (optional && !require_all) {
        if (fresh) fresh->push_back(name);
      } else {
        missing.push_back(name);
      }
      continue;
    }
    const common::SafeTensor& t = *it->second;
    if (!IsLoadableDtype(t.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, ": unsupported dtype ", t.dtype));
    }
    if (c10::IntArrayRef(t.shape) != param.sizes()) {
      if (!require_all && StartsWithAny(name, facts.resizable_prefixes)) {
        // A head for other labels: start it afresh, as a new head would.
        if (fresh) fresh->push_back(name + " (checkpoint has " + ShapeString(t.shape) + ")");
        continue;
      }
      mismatched.push_back(absl::StrCat(name, " (checkpoint ", ShapeString(t.shape), ", model ",
                                        ShapeString(param.sizes()), ")"));
      continue;
    }
    copies.emplace_back(name, param, &t);
  }
  if (!missing.empty() || !mismatched.empty()) {
    std::string msg = absl::StrCat(path, ": cannot load checkpoint");
    if (!missing.empty()) absl::StrAppend(&msg, "; missing keys: ", absl::StrJoin(missing, ", "));
    if (!mismatched.empty()) absl::StrAppend(&msg, "; shape mismatches: ", absl::StrJoin(mismatched, ", "));
    return absl::InvalidArgumentError(msg);
  }
  torch::NoGradGuard g;
  for (auto& [name, dst, src] : copies) {
    // Straight from the file's bytes where they are aligned for their type
    // (copy_ converts F16/BF16 on the way); else through a converted copy.
    if (std::optional<torch::Tensor> view = BytesAsTensor(*src); view.has_value()) {
      dst.copy_(*view);
    } else {
      auto tensor = ToTorch(*src, name);
      if (!tensor.ok()) return tensor.status();
      dst.copy_(*tensor);
    }
    // A NaN or infinite weight would give confident garbage ("logits":
    // [null, null]) or a NaN loss at the first step.
    if (dst.is_floating_point() && !torch::isfinite(dst).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", name, " holds NaN or infinite values; the checkpoint is damaged"));
    }
  }
  return absl::OkStatus();
}

absl::Status SaveHfModel(Model& model, const std::string& dir, bool merge_lora, const std::string& shown_dir) {
  if (auto s = common::MakeDirs(dir); !s.ok()) return s;
  common::SafeTensorsFile base, adapter;
  base.metadata["format"] = "pt";
  adapter.metadata["format"] = "pt";
  // Merging works on copies so that the live model keeps training unchanged.
  const auto params = model.NamedParameters();
  const bool has_lora = std::any_of(params.begin(), params.end(),
                                    [](const auto& p) { return absl::StrContains(p.first, ".lora_A."); });
  const MethodConfig& method = model.method();
  const HfFacts& facts = model.hf();
  std::map<std::string, torch::Tensor> by_name(params.begin(), params.end());
  for (const auto& [name, t] : params) {
    if (absl::StrContains(name, ".lora_")) {
      if (!merge_lora) adapter.tensors[kPeftPrefix + name] = FromTorch(t);
      continue;
    }
    // The trained head travels in the adapter too, as PEFT's modules_to_save.
    if (!merge_lora && has_lora && t.requires_grad()) adapter.tensors[kPeftPrefix + name] = FromTorch(t);
    torch::Tensor value = t;
    if (merge_lora && has_lora && absl::EndsWith(name, ".weight")) {
      std::string stem = name.substr(0, name.size() - 7);
      auto a = by_name.find(stem + ".lora_A.weight");
      if (a != by_name.end()) {
        const torch::Tensor& b = by_name.at(stem + ".lora_B.weight");
        double scale = method.lora_alpha / static_cast<double>(method.lora_rank);
        torch::NoGradGuard g;
        value = t + torch::matmul(b, a->second) * scale;
      }
    }
    base.tensors[name] = FromTorch(value);
  }
  if (auto s = common::WriteSafeTensors(dir + "/model.safetensors", base); !s.ok()) return s;
  if (!adapter.tensors.empty()) {
    if (auto s = common::WriteSafeTensors(dir + "/adapter_model.safetensors", adapter); !s.ok()) return s;
    // NOTE [PEFT layout]: what PEFT's PeftModel.from_pretrained reads
    // (peft/utils/save_and_load.py and tuners_utils.check_target_module_exists):
    // tensor names under "base_model.model." without the adapter name;
    // target_modules as module-name suffixes, each naming exactly the
    // Linear modules that carry lora_A/lora_B; the trained head as
    // modules_to_save. The base model is this directory's model.safetensors.
    std::error_code ec;
    const std::string base_path =
        std::filesystem::absolute(shown_dir.empty() ? dir : shown_dir, ec).lexically_normal().string();
    nlohmann::json ac = {{"peft_type", "LORA"},
                         {"task_type", facts.peft_task_type.empty() ? nlohmann::json() : nlohmann::json(facts.peft_task_type)},
                         {"base_model_name_or_path", base_path},
                         {"r", method.lora_rank},
                         {"lora_alpha", method.lora_alpha},
                         {"lora_dropout", method.lora_dropout},
                         {"target_modules", model.PeftTargetModules()},
                         {"modules_to_save", facts.modules_to_save},
                         {"bias", "none"},
                         {"fan_in_fan_out", false},
                         {"inference_mode", true},
                         {"init_lora_weights", true},
                         {"use_rslora", false},
                         {"use_dora", false},
                         {"layers_to_transform", nullptr},
                         {"layers_pattern", nullptr},
                         {"revision", nullptr}};
    if (auto s = common::WriteFileAtomic(dir + "/adapter_config.json", ac.dump(2)); !s.ok()) return s;
  }
  std::string cfg = model.ConfigJson();
  if (method.type == Method::kAdapter) {
    auto j = nlohmann::json::parse(cfg);
    j["attune_adapter_size"] = method.adapter_size;
    cfg = j.dump(2);
  }
  return common::WriteFileAtomic(dir + "/config.json", cfg);
}

namespace {

// adapter_model.safetensors of `dir` into `model`'s LoRA branches (PEFT's
// names, NOTE [PEFT layout], or bare ones from older exports), each of which
// leaves `fresh`. Every tensor must have a place and its shape.
absl::Status LoadPeftAdapter(Model& model, const std::string& dir, std::vector<std::string>* fresh) {
  auto adapter = common::ReadSafeTensors(dir + "/adapter_model.safetensors");
  if (!adapter.ok()) return adapter.status();
  std::map<std::string, torch::Tensor> params;
  for (auto& [n, t] : model.NamedParameters()) params[n] = t;
  torch::NoGradGuard g;
  std::set<std::string> loaded;
  for (const auto& [peft_name, st] : adapter->tensors) {
    const std::string name = absl::StartsWith(peft_name, kPeftPrefix) ? peft_name.substr(kPeftPrefix.size()) : peft_name;
    auto it = params.find(name);
    if (it == params.end()) return absl::InvalidArgumentError(absl::StrCat("adapter tensor ", name, " has no place in the model"));
    auto t = ToTorch(st, name);
    if (!t.ok()) return t.status();
    if (t->sizes() != it->second.sizes()) return absl::InvalidArgumentError(absl::StrCat("adapter tensor ", name, ": shape mismatch"));
    it->second.copy_(*t);
    loaded.insert(name);
  }
  for (const auto& f : *fresh) {
    if (absl::StrContains(f, ".lora_") && !loaded.count(f)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_model.safetensors: lacks ", kPeftPrefix, f));
    }
  }
  fresh->erase(std::remove_if(fresh->begin(), fresh->end(),
                              [](const std::string& n) { return absl::StrContains(n, ".lora_"); }),
               fresh->end());
  return absl::OkStatus();
}

// adapter_config.json's LoRA facts into `method` (r, lora_alpha); its
// target_modules are returned as written.
absl::StatusOr<std::vector<std::string>> ReadLoraConfig(const std::string& dir, const std::string& text,
                                                        const std::vector<std::string>& default_modules,
                                                        MethodConfig* method) {
  auto ac = nlohmann::json::parse(text, nullptr, false);
  const auto bad_field = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_config.json: ", what));
  };
  if (ac.is_discarded()) return bad_field("not JSON");
  if (!ac.is_object()) return bad_field("not a JSON object");
  method->type = Method::kLora;
  if (ac.contains("r") && (!common::JsonToInt(ac["r"], &method->lora_rank) || method->lora_rank < 1 ||
                           method->lora_rank > 1024)) {
    return bad_field("r must be a whole number in [1, 1024]");
  }
  if (ac.contains("lora_alpha")) {
    if (!ac["lora_alpha"].is_number() || !(ac["lora_alpha"].get<double>() > 0)) {
      return bad_field("lora_alpha must be a number > 0");
    }
    method->lora_alpha = ac["lora_alpha"].get<double>();
  }
  std::vector<std::string> modules = default_modules;
  if (ac.contains("target_modules")) {
    const auto& t = ac["target_modules"];
    if (!t.is_array() || !std::all_of(t.begin(), t.end(), [](const nlohmann::json& m) { return m.is_string(); })) {
      return bad_field("target_modules must be a list of module names");
    }
    modules = t.get<std::vector<std::string>>();
  }
  return modules;
}

// A decoder directory: config.json and the complete weights (tied models
// without lm_head), and an unmerged LoRA adapter beside them when
// adapter_config.json is there.
absl::StatusOr<ModelPtr> LoadDecoder(const std::string& dir, const std::string& config_text) {
  auto config = DecoderConfig::FromJson(config_text, dir + "/config.json");
  if (!config.ok()) return config.status();
  MethodConfig method;
  auto ac_text = common::ReadFile(dir + "/adapter_config.json", 1 << 20);
  if (ac_text.ok()) {
    auto modules = ReadLoraConfig(dir, *ac_text, DecoderLoraTargets(), &method);
    if (!modules.ok()) return modules.status();
    method.lora_targets = *modules;
  } else if (!absl::IsNotFound(ac_text.status())) {
    return ac_text.status();
  }
  ModelPtr model;
  if (method.type == Method::kLora) {
    auto decoder = CreateDecoder(*config, method, 0);
    if (!decoder.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_config.json: ", decoder.status().message()));
    }
    model = decoder->ptr();
  } else {
    model = DecoderLm(*config, method).ptr();
  }
  auto weights = ReadHfWeights(dir);
  if (!weights.ok()) return weights.status();
  std::vector<std::string> fresh;
  if (auto s = LoadStateDict(*model, weights->file, weights->source, &fresh, /*require_all=*/!ac_text.ok()); !s.ok()) {
    return s;
  }
  if (ac_text.ok()) {
    if (auto s = LoadPeftAdapter(*model, dir, &fresh); !s.ok()) return s;
  }
  if (!fresh.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": the export lacks ", fresh.front()));
  model->eval();
  return model;
}

}  // namespace

absl::StatusOr<ModelPtr> LoadHfModel(const std::string& dir) {
  auto text = common::ReadFile(dir + "/config.json", 1 << 20);
  if (!text.ok()) return text.status();
  auto model_type = ModelTypeOf(*text, dir + "/config.json");
  if (!model_type.ok()) return model_type.status();
  if (DecoderConfig::IsDecoderType(*model_type)) return LoadDecoder(dir, *text);
  auto config = BertConfig::FromJson(*text, dir + "/config.json");
  if (!config.ok()) return config.status();
  MethodConfig method;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  // The method's numbers are input like any other: a float such as 1e300
  // must not reach an integer cast, nor a string an exception.
  if (j.is_object() && j.contains("attune_adapter_size")) {
    method.type = Method::kAdapter;
    if (!common::JsonToInt(j["attune_adapter_size"], &method.adapter_size) || method.adapter_size < 1 ||
        method.adapter_size > 8192) {
      return absl::InvalidArgumentError(dir + "/config.json: attune_adapter_size must be a whole number in [1, 8192]");
    }
  }
  auto ac_text = common::ReadFile(dir + "/adapter_config.json", 1 << 20);
  if (ac_text.ok()) {
    auto modules = ReadLoraConfig(dir, *ac_text, {"query", "value"}, &method);
    if (!modules.ok()) return modules.status();
    auto targets = AttuneTargets(*modules);
    if (!targets.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_config.json: ", targets.status().message()));
    method.lora_targets = *targets;
  }
  if (config->labels.empty()) config->labels = {"LABEL_0", "LABEL_1"};
  auto bert = CreateModel(*config, method, 0);
  if (!bert.ok()) return bert.status();
  ModelPtr model = bert->ptr();
  std::vector<std::string> fresh;
  auto weights = ReadHfWeights(dir);
  if (!weights.ok()) return weights.status();
  if (auto s = LoadStateDict(*model, weights->file, weights->source, &fresh); !s.ok()) return s;
  if (ac_text.ok()) {
    if (auto s = LoadPeftAdapter(*model, dir, &fresh); !s.ok()) return s;
  }
  for (const auto& f : fresh) {
    if (StartsWithAny(f, model->hf().head_prefixes)) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": exported model lacks ", f));
    }
  }
  model->eval();
  return model;
}

}  // namespace attune::worker::model
