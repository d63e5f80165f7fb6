#pragma once

// JobConfig: the domain form of attune.v1.JobSpec, with defaults applied.
// Torch-free and proto-free; common/rpc/job_spec.h converts from the proto.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace attune::common {

struct ModelConfigFields {
  int64_t vocab_size = 0;  // 0: from the vocabulary
  int64_t hidden_size = 128;
  int64_t num_hidden_layers = 2;
  int64_t num_attention_heads = 2;
  int64_t intermediate_size = 512;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  double classifier_dropout = -1;  // -1: absent (hidden_dropout_prob is used); NaN: a negative value was given
  // A decoder (model_type llama | mistral | qwen2 | qwen3; empty: BERT).
  std::string model_type;
  int64_t num_key_value_heads = 0;  // 0: num_attention_heads
  int64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  bool tie_word_embeddings = false;
};

// `text` with each key of `staged` (longest first) replaced by its value.
std::string ShowStagedPaths(const std::map<std::string, std::string>& staged, const std::string& text);

struct JobConfig {
  std::string name;
  std::string task = "sequence_classification";  // a name of the task catalog
  // masked_lm
  double mlm_probability = 0.15;
  bool whole_word_mask = false;
  bool group_texts = true;
  // token_classification
  bool label_all_subwords = false;
  // causal_lm: assistant | all
  std::string train_on = "assistant";
  std::map<std::string, std::string> labels;
  // model
  std::string model_path;
  std::string model_from_job;  // model.from_job: the coordinator sets model_path from it
  bool has_model_config = false;
  ModelConfigFields model_config;
  std::string vocab_path;
  int64_t built_vocab_size = 8192;
  bool do_lower_case = true;
  std::string init_embeddings;  // model.init_embeddings: a name of kWordVectorTables, or empty
  std::string tokenizer_path;   // model.tokenizer: a decoder-from-scratch's tokenizer directory
  // data
  std::string train_path, validation_path;
  double validation_split = 0;
  std::string text_column = "text", text_pair_column, label_column = "label";
  int64_t max_length = 128;
  bool drop_missing = true, drop_duplicates = true, drop_conflicting = true;
  std::vector<std::string> label_names;
  int64_t max_field_bytes = int64_t{1} << 20;
  double augment_delete_rate = 0, augment_mask_rate = 0;
  std::string data_format;  // causal_lm: messages (empty) | alpaca | prompt_completion | text
  bool packing = false;
  // method
  std::string method = "full";
  int64_t lora_rank = 8;
  double lora_alpha = 16, lora_dropout = 0.0;
  // BERT's default; a decoder's default (lora_targets_given false) is every projection.
  std::vector<std::string> lora_targets = {"query", "value"};
  bool lora_targets_given = false;
  int64_t adapter_size = 64;
  bool merge_lora = true;
  // hyperparameters
  int64_t epochs = 3, max_steps = 0, batch_size = 16;
  double learning_rate = 5e-5;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0;
  std::string lr_scheduler = "linear";
  double weight_decay = 0.0;
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;
  int64_t seed = 42;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  int64_t threads = 1;
  std::string precision = "fp32";  // fp32 | bf16
  bool gradient_checkpointing = false;
  // evaluation
  int64_t eval_every_steps = 0;
  int64_t eval_batch_size = 64;
  bool eval_baseline = true;  // evaluation.baseline: the TF-IDF + logistic regression baseline
  int64_t eval_generate_max_new_tokens = 0;  // evaluation.generate.max_new_tokens (0: no generation)
  std::string eval_multiple_choice_path;     // evaluation.multiple_choice: a JSONL file of questions
  std::string early_stopping_metric;  // empty: off
  std::string early_stopping_mode;    // max | min
  int64_t early_stopping_patience = 3;
  double early_stopping_min_delta = 0;
  // checkpoint
  int64_t checkpoint_every_steps = 0;
  int64_t checkpoint_keep_last = 2;
  std::string checkpoint_resume_from;  // an output_dir whose checkpoints a new job may start from
  bool checkpoint_overwrite = false;   // discard other jobs' checkpoints in output_dir
  // workers
  int64_t world_size = 1;
  std::string backend = "gloo";
  // workers.sharding: none | optimizer (ZeRO-1, NOTE [sharded buckets] in worker/comm/reducer.h).
  std::string sharding = "none";
  int64_t cpus_per_rank = 1, gpus_per_rank = 0;
  int64_t priority = 0, max_restarts = 0;
  std::string output_dir;
  // Set by the trainer under a data root (NOTE [open-time confinement]): the
  // staged path it reads -> the path the spec gave, for reports.
  std::map<std::string, std::string> staged_inputs;
  const std::string& ShownPath(const std::string& path) const {
    auto it = staged_inputs.find(path);
    return it == staged_inputs.end() ? path : it->second;
  }
  // `text` with every staged prefix (an input, the pinned output_dir) put
  // back as the spec gave it: for logs and events.
  std::string ShownText(const std::string& text) const { return ShowStagedPaths(staged_inputs, text); }
};

// Checks every field and returns kInvalidArgument listing each bad one as
// "path: reason" (for example "hyperparameters.batch_size: must be > 0"),
// separated by "; ". Paths are not resolved here.
absl::Status ValidateJobConfig(const JobConfig& c);

// Caps on what a spec may ask for, enforced at submit and in the trainer.
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxNameBytes = 256;    // columns, label names, task
inline constexpr size_t kMaxLabelNames = 10000; // data.labels
inline constexpr size_t kMaxJobLabels = 64;     // the job's own labels
inline constexpr int64_t kMaxSteps = 1'000'000'000;
inline constexpr double kMaxModelParameters = 2e9;

// model.init_embeddings: the word-vector tables a from-scratch model's token
// embeddings may start from (installed by scripts/fetch-embeddings.sh).
inline constexpr const char* kWordVectorTables[] = {"glove-6b-100d"};
inline bool IsWordVectorTable(const std::string& name) {
  for (const char* t : kWordVectorTables) {
    if (name == t) return true;
  }
  return false;
}

// A job or label name, or a job id: [A-Za-z0-9._-]{1,128}. Where it names a
// directory, callers refuse . and .. too.
bool IsValidName(const std::string& name);

}  // namespace attune::common
