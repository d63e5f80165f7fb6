#include "worker/train/engine.h"

#include <sys/resource.h>

#include <chrono>
#include <mutex>
#include <cmath>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/checkpoint.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/task_catalog.h"
#include "worker/comm/torch_logging.h"
#include "worker/eval/report.h"
#include "worker/model/bert.h"
#include "worker/model/decoder.h"
#include "worker/model/decoder_config.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/hf_io.h"
#include "worker/model/module_kinds.h"
#include "worker/train/device.h"
#include "worker/train/evaluator.h"
#include "worker/train/exporter.h"
#include "worker/train/optimizer.h"
#include "worker/train/sharded_optimizer.h"

namespace attune::worker::train {
namespace {

using Clock = std::chrono::steady_clock;

using task::Encoded;

using task::Batch;
using task::MixBits;

// Loads, cleans, labels and splits the data; writes data_report.json.
absl::StatusOr<PreparedData> PrepareData(const common::JobConfig& c, const task::Task& task, bool write_report) {
  data::ReaderOptions ro;
  ro.text_column = c.text_column;
  ro.text_pair_column = c.text_pair_column;
  ro.label_column = c.label_column;
  ro.label_list = task.label_kind() == data::LabelKind::kMultiLabel;
  ro.require_label = task.label_kind() != data::LabelKind::kNone;
  ro.token_lists = task.label_kind() == data::LabelKind::kTags;
  ro.max_field_bytes = c.max_field_bytes;
  ro.max_row_bytes = std::max<int64_t>(ro.max_row_bytes, 4 * c.max_field_bytes);
  task.AdjustReader(c, &ro);
  data::CleaningPolicy policy{c.drop_missing, c.drop_duplicates, c.drop_conflicting, task.label_kind()};
  std::optional<data::LabelMap> explicit_labels;
  if (!c.label_names.empty()) explicit_labels = data::LabelMap(c.label_names);

  ATTUNE_ASSIGN_OR_RETURN(auto train_records, data::ReadRecords(c.train_path, ro));
  data::CleanResult train = data::Clean(train_records, policy, explicit_labels, c.ShownPath(c.train_path));
  ATTUNE_RETURN_IF_ERROR(task.CheckLabels(train.labels, c.ShownPath(c.train_path)));
  PreparedData out;
  out.labels = train.labels;
  nlohmann::json report;
  report["task"] = task.name();
  report["train"] = nlohmann::json::parse(train.report.ToJson());
  if (!c.validation_path.empty()) {
    ATTUNE_ASSIGN_OR_RETURN(auto val_records, data::ReadRecords(c.validation_path, ro));
    data::CleanResult val = data::Clean(val_records, policy, train.labels, c.ShownPath(c.validation_path));
    out.train = std::move(train.examples);
    out.validation = std::move(val.examples);
    report["validation"] = nlohmann::json::parse(val.report.ToJson());
    report["split"] = "file";
  } else {
    data::StratifiedSplit(std::move(train.examples), c.validation_split, static_cast<uint64_t>(c.seed), &out.train,
                          &out.validation);
    report["split"] = absl::StrFormat("%s %.3f, seed %d",
                                      task.label_kind() == data::LabelKind::kClass ? "stratified" : "random",
                                      c.validation_split, c.seed);
  }
  if (out.train.empty()) return absl::InvalidArgumentError(absl::StrCat(c.ShownPath(c.train_path), ": no training rows left after cleaning"));
  if (out.validation.empty()) return absl::InvalidArgumentError("data.validation: no validation rows left after cleaning");
  report["labels"] = out.labels.labels();
  report["train_examples"] = out.train.size();
  report["validation_examples"] = out.validation.size();
  out.report_json = report.dump(2);
  if (write_report) {
    ATTUNE_RETURN_IF_ERROR(common::MakeDirs(c.output_dir));
    ATTUNE_RETURN_IF_ERROR(common::WriteFileAtomic(c.output_dir + "/data_report.json", out.report_json));
  }
  return out;
}

// The model's own tokenizer (NOTE [tokenizer interface]), else a WordPiece
// vocabulary given or built from the training texts.
absl::StatusOr<std::unique_ptr<text::Tokenizer>> MakeTokenizer(const common::JobConfig& c,
                                                               const std::vector<data::Example>& train) {
  if (!c.model_path.empty()) return text::Tokenizer::FromDirectory(c.model_path);
  if (!c.tokenizer_path.empty()) return text::Tokenizer::FromDirectory(c.tokenizer_path);
  auto owned = [](absl::StatusOr<text::WordPieceTokenizer> t) -> absl::StatusOr<std::unique_ptr<text::Tokenizer>> {
    if (!t.ok()) return t.status();
    return std::unique_ptr<text::Tokenizer>(std::make_unique<text::WordPieceTokenizer>(*std::move(t)));
  };
  text::TokenizerOptions to;
  to.do_lower_case = c.do_lower_case;
  to.strip_accents = c.do_lower_case;
  if (!c.vocab_path.empty()) return owned(text::WordPieceTokenizer::FromVocabFile(c.vocab_path, to));
  std::vector<std::string> texts;
  for (const auto& e : train) {
    texts.push_back(e.text);
    if (e.text_pair) texts.push_back(*e.text_pair);
  }
  text::VocabBuilderOptions vo;
  vo.vocab_size = static_cast<int>(c.built_vocab_size);
  vo.tokenizer = to;
  auto vocab = text::BuildWordPieceVocab(texts, vo);
  LOG(INFO) << "built a WordPiece vocabulary of " << vocab.size() << " tokens from " << texts.size() << " texts";
  return owned(text::WordPieceTokenizer::Create(std::move(vocab), to));
}

// config.json's model_type of model.path, or model.config's ("bert" when
// neither names one).
absl::StatusOr<std::string> ModelType(const common::JobConfig& c) {
  if (c.model_path.empty()) return c.model_config.model_type.empty() ? std::string("bert") : c.model_config.model_type;
  ATTUNE_ASSIGN_OR_RETURN(std::string text, common::ReadFile(c.model_path + "/config.json", 1 << 20));
  return model::ModelTypeOf(text, c.model_path + "/config.json");
}

// Decoders train with causal_lm, encoders with every other task.
absl::Status CheckModelFitsTask(const common::JobConfig& c, const std::string& model_type, const task::Task& task) {
  const bool decoder = model::DecoderConfig::IsDecoderType(model_type);
  if (decoder == (task.name() == "causal_lm")) return absl::OkStatus();
  const std::string where = c.model_path.empty() ? "model.config" : c.ShownPath(c.model_path) + "/config.json";
  return absl::InvalidArgumentError(
      decoder ? absl::StrCat(where, ": a ", model_type, " decoder trains with task.type causal_lm, not ", task.name())
              : absl::StrCat("task.type causal_lm trains a decoder (model_type llama, mistral, qwen2 or qwen3); ", where,
                             " describes model_type ", model_type));
}

// A from-scratch decoder's config.json, from model.config's keys and the tokenizer's specials.
std::string DecoderConfigJson(const common::JobConfig& c, const text::Tokenizer& tok) {
  const auto& f = c.model_config;
  static const std::map<std::string, std::string> kArchitecture = {{"llama", "LlamaForCausalLM"},
                                                                    {"mistral", "MistralForCausalLM"},
                                                                    {"qwen2", "Qwen2ForCausalLM"},
                                                                    {"qwen3", "Qwen3ForCausalLM"}};
  auto arch = kArchitecture.find(f.model_type);
  nlohmann::json j = {{"model_type", f.model_type},
                      {"architectures", {arch == kArchitecture.end() ? std::string() : arch->second}},
                      {"vocab_size", f.vocab_size > 0 ? f.vocab_size : static_cast<int64_t>(tok.vocab_size())},
                      {"hidden_size", f.hidden_size},
                      {"intermediate_size", f.intermediate_size},
                      {"num_hidden_layers", f.num_hidden_layers},
                      {"num_attention_heads", f.num_attention_heads},
                      {"num_key_value_heads", f.num_key_value_heads > 0 ? f.num_key_value_heads : f.num_attention_heads},
                      {"max_position_embeddings", f.max_position_embeddings},
                      {"rms_norm_eps", f.rms_norm_eps},
                      {"rope_theta", f.rope_theta},
                      {"tie_word_embeddings", f.tie_word_embeddings},
                      {"initializer_range", f.initializer_range},
                      {"hidden_act", "silu"},
                      {"torch_dtype", "float32"}};
  if (f.head_dim > 0) j["head_dim"] = f.head_dim;
  if (tok.special().cls >= 0) j["bos_token_id"] = tok.special().cls;
  if (tok.special().sep >= 0) j["eos_token_id"] = tok.special().sep;
  return j.dump(2);
}

// The model the spec describes, freshly initialised (a checkpoint is loaded
// into it afterwards): an encoder with the task's head, or a decoder for
// causal_lm. `names` gets the head's output names (id2label).
// Initialisation seeds and draws from libtorch's one global generator:
// engines that share a process (in-process ranks in tests) build their models
// one at a time, or one's seed lands amid another's draws. (Dropout draws from
// it too: in-process ranks with dropout are not reproducible; processes are.)
std::mutex& GlobalGeneratorMutex() {
  static std::mutex mu;
  return mu;
}

absl::StatusOr<model::ModelPtr> MakeModel(const common::JobConfig& c, const text::Tokenizer& tok, const task::Task& task,
                                          const data::LabelMap& labels, const model::MethodConfig& method,
                                          std::vector<std::string>* names) {
  ATTUNE_ASSIGN_OR_RETURN(const std::string model_type, ModelType(c));
  ATTUNE_RETURN_IF_ERROR(CheckModelFitsTask(c, model_type, task));
  const bool decoder = model::DecoderConfig::IsDecoderType(model_type);
  const std::string where = c.model_path.empty() ? "model.config" : c.ShownPath(c.model_path) + "/config.json";
  *names = task.OutputNames(labels);
  int64_t positions = 0, vocab = 0;
  model::ModelPtr out;
  if (decoder) {
    std::string text = DecoderConfigJson(c, tok);
    if (!c.model_path.empty()) {
      ATTUNE_ASSIGN_OR_RETURN(text, common::ReadFile(c.model_path + "/config.json", 1 << 20));
    }
    ATTUNE_ASSIGN_OR_RETURN(model::DecoderConfig dc, model::DecoderConfig::FromJson(text, where));
    positions = dc.max_position_embeddings;
    vocab = dc.vocab_size;
    ATTUNE_ASSIGN_OR_RETURN(model::DecoderLm m, model::CreateDecoder(dc, method, static_cast<uint64_t>(c.seed)));
    out = m.ptr();
  } else {
    model::BertConfig bc;
    if (!c.model_path.empty()) {
      ATTUNE_ASSIGN_OR_RETURN(std::string text, common::ReadFile(c.model_path + "/config.json", 1 << 20));
      ATTUNE_ASSIGN_OR_RETURN(bc, model::BertConfig::FromJson(text, c.model_path + "/config.json"));
    } else {
      const auto& f = c.model_config;
      bc.vocab_size = f.vocab_size > 0 ? f.vocab_size : tok.vocab_size();
      bc.hidden_size = f.hidden_size;
      bc.num_hidden_layers = f.num_hidden_layers;
      bc.num_attention_heads = f.num_attention_heads;
      bc.intermediate_size = f.intermediate_size;
      bc.max_position_embeddings = f.max_position_embeddings;
      bc.type_vocab_size = f.type_vocab_size;
      bc.hidden_dropout_prob = f.hidden_dropout_prob;
      bc.attention_probs_dropout_prob = f.attention_probs_dropout_prob;
      bc.layer_norm_eps = f.layer_norm_eps;
      bc.initializer_range = f.initializer_range;
      bc.classifier_dropout = f.classifier_dropout;
    }
    if (method.type == model::Method::kLora) {
      for (const auto& t : method.lora_targets) {
        if (absl::EndsWith(t, "_proj")) {
          return absl::InvalidArgumentError(absl::StrCat(
              "method.lora.targets: '", t,
              "' names a decoder's projection; BERT's targets are query, key, value, attention.output, intermediate, "
              "output"));
        }
      }
    }
    bc.labels = *names;
    bc.problem_type = task.problem_type();
    bc.architecture = task.architecture();
    positions = bc.max_position_embeddings;
    vocab = bc.vocab_size;
    ATTUNE_ASSIGN_OR_RETURN(model::BertClassifier m, model::CreateModel(bc, method, static_cast<uint64_t>(c.seed)));
    out = m.ptr();
  }
  if (vocab < tok.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrFormat("model vocab_size %d is smaller than the vocabulary (%d tokens)",
                                                      vocab, tok.vocab_size()));
  }
  if (positions < c.max_length) {
    return absl::InvalidArgumentError(absl::StrFormat("data.max_length %d exceeds the model's max_position_embeddings %d",
                                                      c.max_length, positions));
  }
  return out;
}

model::MethodConfig MakeMethod(const common::JobConfig& c, bool decoder) {
  model::MethodConfig m;
  m.type = *model::ParseMethod(c.method);
  m.lora_rank = c.lora_rank;
  m.lora_alpha = c.lora_alpha;
  m.lora_dropout = c.lora_dropout;
  m.lora_targets = c.lora_targets;
  if (decoder && !c.lora_targets_given) m.lora_targets = model::DecoderLoraTargets();
  m.adapter_size = c.adapter_size;
  return m;
}

// "micro_f1 0.6120 macro_f1 0.5011 ...": the task's headline metrics, for logs.
std::string Headline(const task::Task& task, const eval::Metrics& m) {
  const auto named = m.Named();
  std::string out = absl::StrFormat("loss %.4f", m.loss);
  for (const auto& name : task.info().headline) {
    auto it = named.find(name);
    if (it != named.end()) absl::StrAppendFormat(&out, " %s %.4f", name, it->second);
  }
  return out;
}

// NOTE [exceptions at the adapter]: libtorch reports failures by throwing
// c10::Error; they stop here and become a Status.
template <typename F>
auto Guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

}  // namespace

Engine::Engine(const common::JobConfig& c, const TrainerOptions& o, TrainerObserver* obs)
    : c_(c),
      o_(o),
      obs_(obs),
      comm_(o.communicator),
      rank_(comm_ ? comm_->rank() : 0),
      world_(comm_ ? comm_->world_size() : 1) {}

Engine::~Engine() = default;

absl::Status Engine::Setup() {
  if (set_up_) return absl::FailedPreconditionError("the engine is already set up");
  ATTUNE_RETURN_IF_ERROR(Guarded([&] { return DoSetup(); }));
  set_up_ = true;
  return absl::OkStatus();
}

bool Engine::Done() const { return !set_up_ || stop_ || (!epoch_open_ && s_.sampler.epoch >= c_.epochs); }

absl::Status Engine::Step() {
  if (Done()) return absl::FailedPreconditionError("no step to take: the engine is not set up or training is over");
  return Guarded([&] { return DoStep(); });
}

absl::StatusOr<eval::Metrics> Engine::Evaluate() {
  if (!set_up_) return absl::FailedPreconditionError("the engine is not set up");
  return Guarded([&]() -> absl::StatusOr<eval::Metrics> {
    ATTUNE_RETURN_IF_ERROR(EvaluateAt(EpochFraction()));
    return *latest_;
  });
}

absl::StatusOr<TrainResult> Engine::Finish() {
  if (!set_up_) return absl::FailedPreconditionError("the engine is not set up");
  return Guarded([&] { return DoFinish(); });
}

absl::Status Engine::WriteCheckpoint(const LoopState& s) {
  auto t0 = Clock::now();
  if (sharded_) {
    // NOTE [consolidated optimizer checkpoints]: every rank sends its part; rank 0 writes.
    ATTUNE_RETURN_IF_ERROR(sharded_->ExportTo(*opt_));
  }
  if (rank_ != 0) return absl::OkStatus();
  absl::StatusOr<std::string> written = checkpointer_->Write(s, *model_, *opt_, best_);
  if (sharded_) opt_->state().clear();
  ATTUNE_ASSIGN_OR_RETURN(std::string dir, std::move(written));
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string shown = c_.ShownText(dir);
  LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " step=" << s.step << " checkpoint committed: " << shown
            << absl::StrFormat(" (%.2f s)", secs);
  if (obs_) obs_->OnCheckpoint(s.step, shown, secs);
  return absl::OkStatus();
}

double Engine::EpochFraction() const {
  return static_cast<double>(s_.sampler.epoch) +
         static_cast<double>(s_.sampler.cursor) / static_cast<double>(std::max<size_t>(1, train_.size()));
}

absl::Status Engine::DoSetup() {
  LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " " << ConfigureThreads(static_cast<int>(c_.threads));
  ATTUNE_ASSIGN_OR_RETURN(precision_, ParsePrecision(c_.precision));
  LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " precision=" << PrecisionName(precision_)
            << (precision_ == Precision::kBf16 ? " (autocast bf16 matmuls; fp32 weights, LayerNorm, softmax, loss, "
                                                "gradients and allreduce)"
                                              : "");
  ATTUNE_ASSIGN_OR_RETURN(device_, ResolveDevice(o_.device, c_, rank_));
  LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " device=" << device_.str();
  if (comm_ && world_ > 1 && device_.is_cuda() && comm_->backend() != "nccl") {
    return absl::FailedPreconditionError(absl::StrCat("job=", c_.name, " rank=", rank_, ": ranks on ", device_.str(),
                                                      " synchronise with workers.backend: nccl, not ",
                                                      comm_->backend()));
  }
  ATTUNE_RETURN_IF_ERROR(common::MakeDirs(c_.output_dir));
  CheckpointerOptions co;
  co.output_dir = c_.output_dir;
  co.keep_last = static_cast<int>(c_.checkpoint_keep_last);
  co.owner = o_.owner;
  co.resume_from = c_.checkpoint_resume_from;
  co.overwrite = c_.checkpoint_overwrite;
  co.job_name = c_.name;
  co.rank = rank_;
  co.shown_paths = c_.staged_inputs;
  checkpointer_ = std::make_unique<Checkpointer>(co);
  ATTUNE_RETURN_IF_ERROR(checkpointer_->Prepare());
  if (rank_ == 0) ATTUNE_RETURN_IF_ERROR(common::TakeLease(c_.output_dir, o_.owner));

  task_ = task::MakeTask(c_.task);
  if (task_ == nullptr) return absl::InvalidArgumentError(absl::StrCat("task.type: unknown task '", c_.task, "'"));
  const task::Task& task = *task_;
  ATTUNE_ASSIGN_OR_RETURN(const std::string model_type, ModelType(c_));
  ATTUNE_RETURN_IF_ERROR(CheckModelFitsTask(c_, model_type, task));
  if (!c_.model_path.empty() && c_.label_names.empty() && !model::DecoderConfig::IsDecoderType(model_type) &&
      (task.label_kind() == data::LabelKind::kClass || task.label_kind() == data::LabelKind::kMultiLabel ||
       task.label_kind() == data::LabelKind::kTags)) {
    // A classifier checkpoint of the same problem with named labels keeps its
    // label order, so that its rows still mean the same classes.
    ATTUNE_ASSIGN_OR_RETURN(std::string text, common::ReadFile(c_.model_path + "/config.json", 1 << 20));
    ATTUNE_ASSIGN_OR_RETURN(model::BertConfig base, model::BertConfig::FromJson(text, c_.model_path + "/config.json"));
    bool generic = true;
    for (size_t i = 0; i < base.labels.size(); ++i) generic &= base.labels[i] == absl::StrCat("LABEL_", i);
    if (!generic && base.problem_type == task.problem_type() && base.architecture == task.architecture()) {
      c_.label_names = base.labels;
    }
  }
  ATTUNE_ASSIGN_OR_RETURN(data_, PrepareData(c_, task, rank_ == 0));
  ATTUNE_ASSIGN_OR_RETURN(tokenizer_, MakeTokenizer(c_, data_.train));
  const text::Tokenizer& tok = *tokenizer_;
  ATTUNE_RETURN_IF_ERROR(task_->Configure(tok, c_));
  model::MethodConfig method = MakeMethod(c_, model::DecoderConfig::IsDecoderType(model_type));
  std::vector<std::string> output_names;
  {
    std::lock_guard<std::mutex> l(GlobalGeneratorMutex());
    ATTUNE_ASSIGN_OR_RETURN(model_, MakeModel(c_, tok, task, data_.labels, method, &output_names));
  }
  outputs_ = static_cast<int>(output_names.size());
  task_->SetOutputs(output_names);
  loss_units_ = task.LossUnitsPerExample(outputs_);
  auto t_enc = Clock::now();
  task::EncodeReport train_report, val_report;
  train_ = task.Encode(tok, data_.train, static_cast<int>(c_.max_length), &train_report);
  val_ = task.Encode(tok, data_.validation, static_cast<int>(c_.max_length), &val_report);
  if (!train_report.dropped.empty() || !val_report.dropped.empty() || train_report.truncated > 0 ||
      val_report.truncated > 0 || train_report.sequences != train_report.examples) {
    // What encoding dropped, cut or packed, beside what cleaning did.
    auto report = nlohmann::json::parse(data_.report_json);
    report["train_encoding"] = train_report.ToJson();
    report["validation_encoding"] = val_report.ToJson();
    data_.report_json = report.dump(2);
    if (rank_ == 0) ATTUNE_RETURN_IF_ERROR(common::WriteFileAtomic(c_.output_dir + "/data_report.json", data_.report_json));
    for (const auto* r : {&train_report, &val_report}) {
      for (const auto& [reason, n] : r->dropped) {
        auto first = r->first_error.find(reason);
        LOG(WARNING) << "job=" << c_.name << " rank=" << rank_ << " dropped " << n << " "
                     << (r == &train_report ? "training" : "validation") << " examples: " << reason
                     << (first == r->first_error.end() ? "" : " (first: " + first->second + ")");
      }
    }
  }
  if (train_.empty() || val_.empty()) {
    const task::EncodeReport& r = train_.empty() ? train_report : val_report;
    std::string why;
    for (const auto& [reason, n] : r.dropped) {
      auto first = r.first_error.find(reason);
      absl::StrAppend(&why, why.empty() ? ": dropped " : ", ", n, " ", reason,
                      first == r.first_error.end() ? "" : " (" + first->second + ")");
    }
    return absl::InvalidArgumentError(absl::StrCat("data: no ", train_.empty() ? "training" : "validation",
                                                   " sequences after encoding", why));
  }
  LOG(INFO) << absl::StrFormat("job=%s rank=%d tokenized %d train and %d validation examples in %.2f s", c_.name,
                               rank_, train_.size(), val_.size(),
                               std::chrono::duration<double>(Clock::now() - t_enc).count());
  ATTUNE_ASSIGN_OR_RETURN(answers_, PrepareAnswerEvals(c_, task, tok, *model_, c_.model_path, data_.validation));
  if (c_.eval_generate_max_new_tokens > 0) {
    LOG(INFO) << absl::StrFormat("job=%s rank=%d evaluation.generate: %d validation prompts (%d too long for the "
                                 "model's positions), up to %d new tokens each",
                                 c_.name, rank_, answers_.generation.size(), answers_.skipped, answers_.max_new_tokens);
    if (answers_.generation.empty()) {
      return absl::InvalidArgumentError("evaluation.generate: no validation example has a prompt to answer");
    }
  }
  if (!answers_.questions.empty()) {
    LOG(INFO) << absl::StrFormat("job=%s rank=%d evaluation.multiple_choice: %d questions, %d choices", c_.name,
                                 rank_, answers_.questions.size(), answers_.choices.size());
  }

  if (!c_.model_path.empty()) {
    std::vector<std::string> fresh;
    ATTUNE_ASSIGN_OR_RETURN(model::HfWeights weights, model::ReadHfWeights(c_.model_path));
    LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " read " << weights.file.tensors.size() << " tensors from "
              << c_.ShownText(weights.source) << " (" << weights.format << ")";
    ATTUNE_RETURN_IF_ERROR(model::LoadStateDict(*model_, weights.file, weights.source, &fresh));
    for (const auto& f : fresh) LOG(INFO) << "job=" << c_.name << " freshly initialised (not in checkpoint): " << f;
  }
  if (!c_.init_embeddings.empty() && rank_ == 0) {
    // Rank 0 alone reads and projects the table (137 MB, hashed): its weights
    // are broadcast to every rank below, and it writes the report.
    const auto t0 = Clock::now();
    ATTUNE_ASSIGN_OR_RETURN(model::WordVectors vectors, model::ReadWordVectors(o_.embeddings_dir, c_.init_embeddings));
    const model::VocabularyMatch match = model::MatchVocabulary(tok.vocab(), vectors);
    ATTUNE_RETURN_IF_ERROR(model::InitWordEmbeddings(*model_, vectors, match, static_cast<uint64_t>(c_.seed)));
    result_.init_embeddings = match.coverage;
    LOG(INFO) << absl::StrFormat("job=%s rank=%d token embeddings from %s in %.2f s", c_.name, rank_,
                                 model::CoverageLine(match.coverage),
                                 std::chrono::duration<double>(Clock::now() - t0).count());
  }
  if (!model_->SetGradientCheckpointing(c_.gradient_checkpointing)) {
    return absl::InvalidArgumentError(absl::StrCat("hyperparameters.gradient_checkpointing: ", model_->hf().architecture,
                                                   " cannot recompute its activations (decoders can)"));
  }
  if (c_.gradient_checkpointing) {
    LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " gradient checkpointing: each decoder layer is recomputed in backward";
  }
  model_->to(device_);  // before the optimizer takes the parameters
  {
    std::lock_guard<std::mutex> l(GlobalGeneratorMutex());
    torch::manual_seed(static_cast<uint64_t>(c_.seed) + 1);  // dropout stream, independent of initialisation
  }
  model_->train();
  counts_ = model::CountParameters(*model_);
  result_.trainable_parameters = counts_.trainable;
  result_.total_parameters = counts_.total;
  LOG(INFO) << absl::StrFormat("job=%s method=%s parameters: %d trainable of %d total (%.2f%%)", c_.name, c_.method,
                               counts_.trainable, counts_.total,
                               100.0 * counts_.trainable / std::max<int64_t>(1, counts_.total));

  OptimizerSetup optimizer = MakeAdamW(*model_, c_);
  opt_ = std::move(optimizer.optimizer);
  trainable_ = std::move(optimizer.trainable);

  sampler_ = std::make_unique<data::EpochSampler>(static_cast<int64_t>(train_.size()), c_.batch_size, rank_,
                                                  world_, static_cast<uint64_t>(c_.seed));
  accum_ = c_.gradient_accumulation_steps;
  steps_per_epoch_ = (sampler_->StepsPerEpoch() + accum_ - 1) / accum_;
  total_ = c_.epochs * steps_per_epoch_;
  if (c_.max_steps > 0) total_ = std::min(total_, c_.max_steps);
  warmup_ = c_.warmup_steps > 0 ? c_.warmup_steps
                                : static_cast<int64_t>(std::ceil(c_.warmup_ratio * static_cast<double>(total_)));
  es_on_ = !c_.early_stopping_metric.empty();
  const common::MetricInfo* es_metric = common::FindMetric(task.info(), c_.early_stopping_metric);
  if (es_on_ && es_metric == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("evaluation.early_stopping.metric: '", c_.early_stopping_metric, "' is not a known metric"));
  }
  const bool maximize = c_.early_stopping_mode.empty() ? es_on_ && es_metric->higher_is_better
                                                       : c_.early_stopping_mode == "max";
  stopper_.emplace(maximize, c_.early_stopping_patience, c_.early_stopping_min_delta);
  mask_id_ = tok.special().mask;

  const WeightsMeaning meaning{output_names, VocabularyFingerprint(tok.vocab())};
  s_.sampler = sampler_->state();
  const bool shard = (c_.sharding == "optimizer" || c_.sharding == "gradients") && comm_ != nullptr && world_ > 1;
  if (o_.resume) {
    ATTUNE_ASSIGN_OR_RETURN(const bool resumed, checkpointer_->Resume(meaning, *model_, *opt_, &s_, &best_));
    if (resumed) result_.resumed_from_step = s_.step;
    // A sharded run keeps only its part, moved where its parameters are, below.
    if (resumed && !shard) PlaceStateWithParameters(*opt_);
  }
  s_.labels = meaning.labels;
  s_.vocab_fingerprint = meaning.vocab_fingerprint;
  if (comm_ && world_ > 1) {
    // Every rank starts identical: rank 0's weights (fresh or resumed) win.
    std::vector<torch::Tensor> all, in_order;
    for (auto& [name, t] : model_->NamedParameters()) {
      all.push_back(t);
      if (t.requires_grad()) in_order.push_back(t);
    }
    ATTUNE_RETURN_IF_ERROR(comm::Reducer::BroadcastFromRankZero(*comm_, all));
    comm::ReducerOptions ro;
    ro.bucket_cap_bytes = o_.bucket_cap_bytes;
    ro.compression = o_.gradient_compression;
    ro.overlap = o_.overlap;
    ro.shard = shard;
    ro.shard_gradients = shard && c_.sharding == "gradients";
    reducer_ = std::make_unique<comm::Reducer>(in_order, *comm_, ro);
    if (shard) {
      // The decay groups as MakeAdamW chose them (NOTE [no weight decay by kind]), in the reducer's order.
      const auto no_decay = model::NoWeightDecayParameters(*model_);
      std::vector<bool> decays;
      for (const auto& t : in_order) decays.push_back(no_decay.count(t.unsafeGetTensorImpl()) == 0);
      ATTUNE_ASSIGN_OR_RETURN(sharded_, ShardedAdamW::Create(in_order, decays, *reducer_, *comm_, c_));
      // NOTE [consolidated optimizer checkpoints]: a resumed state is loaded whole, then cut to this rank's part.
      sharded_->ImportFrom(*opt_);
      opt_->state().clear();
    }
  } else if (c_.sharding != "none") {
    LOG(INFO) << "job=" << c_.name << " workers.sharding " << c_.sharding << " on one rank: nothing to shard";
  }
  run_start_ = Clock::now();
  start_step_ = s_.step;
  samples_seen_ = 0;
  if (s_.es_has_best) stopper_->Restore(true, s_.es_best, s_.es_bad);
  LOG(INFO) << absl::StrFormat("job=%s rank=%d training: %d steps (%d per epoch), warmup %d, %d examples, batch %d x %d ranks x %d accumulation",
                               c_.name, rank_, total_, steps_per_epoch_, warmup_, train_.size(), c_.batch_size,
                               world_, accum_);

  stop_ = o_.eval_only || s_.step >= total_ || (es_on_ && stopper_->ShouldStop());
  if (o_.eval_only) stop_reason_ = "eval_only";
  window_start_ = Clock::now();
  return absl::OkStatus();
}

absl::Status Engine::EvaluateAnswersInto(eval::Metrics* m) {
  const auto start = Clock::now();
  ATTUNE_RETURN_IF_ERROR(EvaluateAnswers(*model_, *task_, *tokenizer_, answers_, tokenizer_->pad_id(), comm_,
                                         precision_, device_, m, &answer_summary_));
  LOG(INFO) << absl::StrFormat("job=%s rank=%d step=%d answers: %d prompts (%d rows a batch), %d questions (%d "
                               "choices, %d a batch) in %.2f s",
                               c_.name, rank_, s_.step, answers_.generation.size(), answers_.generation_rows,
                               answers_.questions.size(), answers_.choices.size(), answers_.choice_rows,
                               std::chrono::duration<double>(Clock::now() - start).count());
  return absl::OkStatus();
}

absl::Status Engine::EvaluateAt(double epoch) {
  ATTUNE_ASSIGN_OR_RETURN(eval::Metrics m, train::Evaluate(*model_, *task_, outputs_, val_, c_.eval_batch_size,
                                                           tokenizer_->pad_id(), comm_, precision_, device_));
  if (!answers_.empty()) ATTUNE_RETURN_IF_ERROR(EvaluateAnswersInto(&m));
  latest_ = m;
  s_.evals.push_back({s_.step, epoch, m});
  s_.last_eval_step = s_.step;
  LOG(INFO) << absl::StrFormat("job=%s rank=%d step=%d eval: %s", c_.name, rank_, s_.step, Headline(*task_, m));
  if (obs_) obs_->OnEval(s_.step, m);
  if (es_on_) {
    double v = 0;
    m.Get(c_.early_stopping_metric, &v);
    if (stopper_->Update(v)) {
      s_.best_step = s_.step;
      best_ = SnapshotParams(*model_);
      if (rank_ == 0) {
        ATTUNE_RETURN_IF_ERROR(common::MakeDirs(c_.output_dir + "/best"));
        ATTUNE_RETURN_IF_ERROR(SaveTensors(model_->NamedParameters(), checkpointer_->best_path()));
      }
    }
    s_.es_has_best = stopper_->has_best();
    s_.es_best = stopper_->best();
    s_.es_bad = stopper_->bad_evals();
  }
  return absl::OkStatus();
}

absl::Status Engine::OpenEpoch() {
  if (s_.mid_epoch) {
    sampler_->Restore(s_.sampler);  // a resumed run, inside the epoch it stopped in
  } else {
    sampler_->StartEpoch(s_.sampler.epoch);
  }
  s_.mid_epoch = true;
  epoch_open_ = true;
  return absl::OkStatus();
}

// End of an epoch: evaluate (unless this step was just evaluated) and checkpoint.
absl::Status Engine::EndEpoch() {
  epoch_open_ = false;
  s_.mid_epoch = false;
  s_.sampler.epoch += 1;
  s_.sampler.cursor = 0;
  if (s_.last_eval_step != s_.step) ATTUNE_RETURN_IF_ERROR(EvaluateAt(static_cast<double>(s_.sampler.epoch)));
  if (es_on_ && stopper_->ShouldStop() && !stop_) {
    stop_ = true;
    stop_reason_ = "early_stopping";
  }
  ATTUNE_RETURN_IF_ERROR(WriteCheckpoint(s_));  // rank 0 writes (with every rank's part when sharded)
  return absl::OkStatus();
}

absl::Status Engine::DoStep() {
  const task::Task& task = *task_;
  // One optimizer step: `accum_` micro-batches; the loss is summed and
  // divided by the examples of the whole step, so accumulation equals a
  // larger batch exactly. An epoch with no batch left ends first.
  Clock::time_point t0;
  std::vector<std::vector<int64_t>> micro;
  int64_t step_examples = 0;
  while (micro.empty()) {
    if (!epoch_open_) ATTUNE_RETURN_IF_ERROR(OpenEpoch());
    t0 = Clock::now();
    for (int64_t a = 0; a < accum_; ++a) {
      auto idx = sampler_->Next();
      if (sampler_->last_global_batch() == 0) break;
      step_examples += sampler_->last_global_batch();
      micro.push_back(std::move(idx));
    }
    if (micro.empty()) {
      ATTUNE_RETURN_IF_ERROR(EndEpoch());
      if (Done()) return absl::OkStatus();
    }
  }
  StepEvent ev;
  auto lap = [last = t0](double* phase) mutable {
    auto now = Clock::now();
    *phase += std::chrono::duration<double>(now - last).count();
    last = now;
  };
  opt_->zero_grad();
  bool signalled = false;
  double loss_sum = 0;
  int64_t tokens = 0;
  std::vector<std::optional<Batch>> batches(micro.size());
  double units = static_cast<double>(step_examples * loss_units_);
  if (task.LossUnitsVary()) units = 0;
  for (size_t k = 0; k < micro.size(); ++k) {
    if (micro[k].empty()) continue;
    task::CollateContext ctx;
    ctx.pad_id = tokenizer_->pad_id();
    ctx.epoch = s_.sampler.epoch;
    ctx.delete_rate = c_.augment_delete_rate;
    ctx.mask_rate = c_.augment_mask_rate;
    ctx.mask_id = mask_id_;
    ctx.aug_seed = MixBits(static_cast<uint64_t>(c_.seed) ^ MixBits(static_cast<uint64_t>(s_.step) * 64 + k));
    batches[k] = task.Collate(train_, micro[k], ctx, outputs_);
    if (task.LossUnitsVary()) units += batches[k]->loss_units;
  }
  if (task.LossUnitsVary() && comm_ && world_ > 1) {
    // The step's loss normaliser (masked tokens) over every rank, before
    // any backward, so that gradients equal one large batch's.
    torch::Tensor u = torch::tensor(std::vector<double>{units}, torch::kFloat64);
    ATTUNE_RETURN_IF_ERROR(comm::AllReduceSumBlocking(*comm_, u));
    units = u.item<double>();
  }
  units = std::max(units, 1.0);
  const comm::ReducerStats before = reducer_ ? reducer_->stats() : comm::ReducerStats{};
  for (size_t k = 0; k < micro.size(); ++k) {
    // NOTE [sharded gradients]: each micro-batch is reduced on every rank,
    // rows or not; the last one below, as in the other modes.
    const bool reduce_now = reducer_ && reducer_->reduces_every_backward() && k + 1 < micro.size();
    if (!batches[k]) {
      if (reduce_now) {
        reducer_->PrepareForBackward(true);
        ATTUNE_RETURN_IF_ERROR(reducer_->FinishBackward());
      }
      continue;
    }
    const Batch b = OnDevice(*batches[k], device_);
    ev.samples += static_cast<int64_t>(micro[k].size());
    if (reducer_) reducer_->PrepareForBackward(/*sync=*/k + 1 == micro.size());
    lap(&ev.data_seconds);
    torch::Tensor loss;
    {
      // NOTE [mixed precision]: forward under autocast, the loss on fp32
      // logits, backward outside it.
      AutocastScope autocast(precision_, device_.is_cuda());  // CUDA autocast too on a GPU
      loss = task.SummedLoss(task.Forward(*model_, b).to(torch::kFloat), b.targets);
    }
    loss_sum += loss.item<double>();
    lap(&ev.forward_seconds);
    (loss / units).backward();
    if (reduce_now) ATTUNE_RETURN_IF_ERROR(reducer_->FinishBackward());
    tokens += b.tokens;
    lap(&ev.backward_seconds);
  }
  lap(&ev.data_seconds);
  if (reducer_) {
    // A rank with no rows in this step's last micro-batch still joins the reduction.
    if (micro.back().empty()) reducer_->PrepareForBackward(true);
    ATTUNE_RETURN_IF_ERROR(reducer_->FinishBackward());
    torch::Tensor l = torch::tensor(std::vector<double>{loss_sum, StopRequested() ? 1.0 : 0.0}, torch::kFloat64);
    ATTUNE_RETURN_IF_ERROR(comm::AllReduceSumBlocking(*comm_, l));
    loss_sum = l[0].item<double>();
    signalled = l[1].item<double>() > 0;
    const comm::ReducerStats& after = reducer_->stats();
    ev.reduce_seconds = after.comm_seconds - before.comm_seconds;
    ev.reduce_exposed_seconds = after.exposed_seconds - before.exposed_seconds;
    ev.reduce_bytes = after.bytes_per_step * (after.steps - before.steps);  // several with sharded gradients
    ev.last_collective_unix_seconds =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    lap(&ev.allreduce_seconds);
  }
  samples_seen_ += step_examples;
  const double step_loss = loss_sum / units;
  if (!std::isfinite(step_loss)) {
    if (obs_) obs_->OnNonFinite(s_.step + 1);
    return absl::FailedPreconditionError(
        absl::StrFormat("non-finite loss (%f) at step %d; no checkpoint was written for it", step_loss, s_.step + 1));
  }
  if (c_.max_grad_norm > 0) {
    double norm = 0;
    if (sharded_) {
      ATTUNE_ASSIGN_OR_RETURN(norm, sharded_->ClipGradNorm(c_.max_grad_norm));
    } else {
      norm = torch::nn::utils::clip_grad_norm_(trainable_, c_.max_grad_norm);
    }
    if (!std::isfinite(norm)) {
      if (obs_) obs_->OnNonFinite(s_.step + 1);
      return absl::FailedPreconditionError(absl::StrFormat("non-finite gradient norm at step %d", s_.step + 1));
    }
  }
  const double lr = c_.learning_rate * LearningRateFactor(c_.lr_scheduler, s_.step, warmup_, total_);
  if (sharded_) {
    sharded_->SetLearningRate(lr);
    ATTUNE_RETURN_IF_ERROR(sharded_->Step());
  } else {
    SetLearningRate(*opt_, lr);
    opt_->step();
  }
  lap(&ev.optimizer_seconds);
  ++s_.step;
  s_.sampler = sampler_->state();
  s_.train_loss.emplace_back(s_.step, step_loss);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  window_loss_ += step_loss;
  ++window_n_;
  window_samples_ += step_examples;
  window_tokens_ += tokens * world_;
  const double epoch_f = EpochFraction();
  if (obs_ || s_.step % o_.log_every_steps == 0 || s_.step == total_) {
    double wsecs = std::chrono::duration<double>(Clock::now() - window_start_).count();
    ev.step = s_.step;
    ev.total_steps = total_;
    ev.epoch = epoch_f;
    ev.loss = step_loss;
    ev.learning_rate = lr;
    ev.samples_per_second = window_samples_ / std::max(wsecs, 1e-9);
    ev.tokens_per_second = window_tokens_ / std::max(wsecs, 1e-9);
    ev.step_seconds = secs;
    ev.tokens = tokens;
    if (obs_) obs_->OnStep(ev);
    if (s_.step % o_.log_every_steps == 0 || s_.step == total_) {
      LOG(INFO) << absl::StrFormat(
          "job=%s rank=%d step=%d/%d epoch=%.2f loss=%.4f lr=%.3g samples/s=%.1f tokens/s=%.0f", c_.name, rank_,
          s_.step, total_, epoch_f, window_loss_ / window_n_, lr, ev.samples_per_second, ev.tokens_per_second);
      window_loss_ = 0;
      window_n_ = window_samples_ = window_tokens_ = 0;
      window_start_ = Clock::now();
    }
  }
  if (c_.eval_every_steps > 0 && s_.step % c_.eval_every_steps == 0) ATTUNE_RETURN_IF_ERROR(EvaluateAt(epoch_f));
  if (es_on_ && stopper_->ShouldStop()) {
    stop_ = true;
    stop_reason_ = "early_stopping";
  }
  if (s_.step >= total_) {
    stop_ = true;
    if (c_.max_steps > 0 && s_.step == c_.max_steps && stop_reason_ == "completed") stop_reason_ = "max_steps";
  }
  if (!comm_) signalled = StopRequested();
  bool checkpointed = false;
  if (c_.checkpoint_every_steps > 0 && s_.step % c_.checkpoint_every_steps == 0 &&
      sampler_->state().cursor < static_cast<int64_t>(train_.size())) {
    // (A step that ends the epoch is checkpointed at the epoch's end, with the epoch advanced.)
    ATTUNE_RETURN_IF_ERROR(WriteCheckpoint(s_));
    checkpointed = true;
  }
  if (signalled) {
    if (!checkpointed) ATTUNE_RETURN_IF_ERROR(WriteCheckpoint(s_));
    LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " stopping on request after step " << s_.step;
    return absl::CancelledError(
        absl::StrCat("stopped on request (SIGTERM) after step ", s_.step, "; checkpoint committed at that step"));
  }
  if (o_.abort_after_step > 0 && s_.step == o_.abort_after_step) {
    return absl::AbortedError(absl::StrCat("aborted after step ", s_.step, " (test hook)"));
  }
  // A last step that used the epoch's last rows ends the epoch now.
  if (stop_ && sampler_->state().cursor >= static_cast<int64_t>(train_.size())) ATTUNE_RETURN_IF_ERROR(EndEpoch());
  return absl::OkStatus();
}

namespace {
int64_t PeakResidentMiB() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) / 1024;  // KiB on Linux
}
}  // namespace

absl::StatusOr<TrainResult> Engine::DoFinish() {
  const task::Task& task = *task_;
  // Before the final evaluation and the export, which have their own needs.
  LOG(INFO) << absl::StrFormat("job=%s rank=%d peak resident memory while training: %d MiB (sharding %s)", c_.name,
                               rank_, PeakResidentMiB(), sharded_ ? c_.sharding : "none");
  if (!o_.eval_only && s_.last_eval_step != s_.step) {
    ATTUNE_RETURN_IF_ERROR(EvaluateAt(static_cast<double>(s_.sampler.epoch)));
  }
  // Export the best model (early stopping) or the last one. The last one was
  // just evaluated; the best one (or a model never evaluated here) is evaluated now.
  bool reuse_latest = latest_.has_value() && s_.last_eval_step == s_.step;
  if (es_on_ && s_.best_step >= 0 && s_.best_step != s_.step) {
    // Every rank restores its own in-memory copy: no file is read here.
    ATTUNE_RETURN_IF_ERROR(RestoreParams(*model_, best_));
    LOG(INFO) << "job=" << c_.name << " rank=" << rank_ << " exporting the best model, from step " << s_.best_step;
    reuse_latest = false;
  }
  eval::Metrics final_metrics;
  if (reuse_latest) {
    final_metrics = *latest_;
  } else {
    ATTUNE_ASSIGN_OR_RETURN(final_metrics, train::Evaluate(*model_, task, outputs_, val_, c_.eval_batch_size,
                                                           tokenizer_->pad_id(), comm_, precision_, device_));
    if (!answers_.empty()) ATTUNE_RETURN_IF_ERROR(EvaluateAnswersInto(&final_metrics));
  }
  result_.final_metrics = final_metrics;
  // The exported model's evaluation is the job's last word.
  if (obs_) obs_->OnEval(es_on_ && s_.best_step >= 0 ? s_.best_step : s_.step, final_metrics);
  result_.label_names = data_.labels.labels();
  result_.steps = s_.step;
  result_.best_step = s_.best_step;
  result_.stop_reason = stop_reason_;
  result_.model_dir = c_.output_dir + "/model";
  // The baselines are rank 0's, which reports them. TF-IDF + logistic
  // regression costs a few seconds of one thread (the other ranks wait at the
  // final barrier); a failure to fit it costs the report its baseline, never
  // the job.
  if (rank_ == 0) {
    result_.trivial_baseline = task.ComputeBaseline(train_, val_, outputs_);
    AddAnswerBaselines(task, data_.train, answers_, &result_.trivial_baseline);
  }
  if (rank_ == 0 && c_.eval_baseline) {
    absl::StatusOr<std::optional<task::Baseline>> b = task.TextBaseline(data_.train, data_.validation, outputs_);
    if (!b.ok()) {
      LOG(WARNING) << "job=" << c_.name << " the TF-IDF baseline could not be fitted: " << b.status();
    } else if (b->has_value()) {
      result_.reference_baseline = **b;
      LOG(INFO) << absl::StrFormat("job=%s baseline %s fitted in %.2f s (%d features)", c_.name, (*b)->method,
                                   (*b)->details["seconds"], static_cast<int64_t>((*b)->details["features"]));
      if (obs_) obs_->OnBaseline(**b);
    }
  }
  if (rank_ == 0) {
    eval::ReportInput rep;
    rep.job_name = c_.name;
    rep.method = c_.method;
    rep.label_names = result_.label_names;
    rep.trainable_parameters = counts_.trainable;
    rep.total_parameters = counts_.total;
    rep.train_loss = s_.train_loss;
    rep.evals = s_.evals;
    rep.final_eval = {es_on_ && s_.best_step >= 0 ? s_.best_step : s_.step, 0, final_metrics};
    rep.best_step = s_.best_step;
    rep.stop_reason = stop_reason_;
    rep.task = task.name();
    rep.precision = PrecisionName(precision_);
    rep.trivial = result_.trivial_baseline;
    rep.reference = result_.reference_baseline;
    if (!answers_.empty()) rep.answers = answer_summary_;
    rep.world_size = world_;
    rep.spec_text = o_.spec_text;
    rep.data_report_json = data_.report_json;
    rep.init_embeddings = result_.init_embeddings;
    ATTUNE_RETURN_IF_ERROR(ExportRun(*model_, *tokenizer_, c_, o_.owner, result_.model_dir, std::move(rep)));
  }
  const double run_secs = std::chrono::duration<double>(Clock::now() - run_start_).count();
  if (s_.step > start_step_) result_.train_samples_per_second = samples_seen_ / std::max(run_secs, 1e-9);
  if (reducer_) {
    const auto& st = reducer_->stats();
    result_.allreduce_hidden_fraction = st.hidden_fraction();
    // Per optimizer step (sharded gradients reduce every micro-batch).
    const auto steps = static_cast<double>(s_.step - start_step_);
    result_.allreduce_seconds_per_step = steps > 0 ? st.comm_seconds / steps : 0;
    result_.allreduce_bytes_per_step =
        steps > 0 ? static_cast<int64_t>(static_cast<double>(st.bytes_per_step * st.steps) / steps) : st.bytes_per_step;
    LOG(INFO) << absl::StrFormat("job=%s rank=%d allreduce: %d bytes/step, %.4f s/step, %.0f%% hidden behind backward",
                                 c_.name, rank_, result_.allreduce_bytes_per_step, result_.allreduce_seconds_per_step,
                                 100 * st.hidden_fraction());
  }
  LOG(INFO) << absl::StrFormat("job=%s rank=%d peak resident memory at the end: %d MiB", c_.name, rank_,
                               PeakResidentMiB());
  // Rank 0 serves the rendezvous store: nobody leaves before everyone is done.
  if (comm_ && world_ > 1) ATTUNE_RETURN_IF_ERROR(comm_->Barrier());
  return result_;
}

}  // namespace attune::worker::train
