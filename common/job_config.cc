#include "common/job_config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/task_catalog.h"
#include "common/text.h"

namespace attune::common {

bool IsValidName(const std::string& name) {
  return IsWordOf(name, "._-", 1, 128);
}

absl::Status ValidateJobConfig(const JobConfig& c) {
  std::vector<std::string> bad;
  auto check = [&](bool ok, const char* field, const std::string& why) {
    if (!ok) bad.push_back(absl::StrCat(field, ": ", why));
  };
  auto finite = [](double v) { return std::isfinite(v); };
  check(IsValidName(c.name), "name", "must match [A-Za-z0-9._-]{1,128}");
  check(c.name != "." && c.name != "..", "name", "must not be . or ..");
  const int sources = !c.model_path.empty() + c.has_model_config + !c.model_from_job.empty();
  check(sources > 0, "model", "needs path, config or from_job");
  check(sources <= 1, "model", "give one of path, config and from_job");
  check(c.model_from_job.empty() || IsValidName(c.model_from_job), "model.from_job",
        "must be a job id or name ([A-Za-z0-9._-]{1,128})");
  auto bounded_early = [&](const std::string& v, const char* field) {
    check(v.size() <= kMaxPathBytes, field, absl::StrCat("longer than ", kMaxPathBytes, " bytes"));
  };
  const bool decoder_config = c.has_model_config && !c.model_config.model_type.empty();
  if (decoder_config) {
    const auto& m = c.model_config;
    check(m.model_type == "llama" || m.model_type == "mistral" || m.model_type == "qwen2" || m.model_type == "qwen3",
          "model.config.model_type", absl::StrCat("'", m.model_type, "' is not one of llama, mistral, qwen2, qwen3"));
    check(m.num_key_value_heads >= 0 && m.num_key_value_heads <= 1024 &&
              (m.num_key_value_heads == 0 || m.num_attention_heads % m.num_key_value_heads == 0),
          "model.config.num_key_value_heads", "must divide num_attention_heads (0: num_attention_heads)");
    check(m.head_dim >= 0 && m.head_dim <= 1024 && m.head_dim % 2 == 0, "model.config.head_dim",
          "must be an even number in [0, 1024] (0: hidden_size / num_attention_heads)");
    check(finite(m.rms_norm_eps) && m.rms_norm_eps > 0, "model.config.rms_norm_eps", "must be > 0");
    check(finite(m.rope_theta) && m.rope_theta > 0, "model.config.rope_theta", "must be > 0");
    check(!c.tokenizer_path.empty(), "model.tokenizer",
          "is required with a decoder's model.config (a directory with tokenizer.json or tokenizer.model)");
    check(c.task == "causal_lm", "model.config.model_type", "a decoder trains with task.type causal_lm");
  } else {
    check(c.tokenizer_path.empty(), "model.tokenizer", "only with a decoder's model.config (model.config.model_type)");
  }
  bounded_early(c.tokenizer_path, "model.tokenizer");
  bounded_early(c.eval_multiple_choice_path, "evaluation.multiple_choice");
  if (c.has_model_config) {
    const auto& m = c.model_config;
    check(m.vocab_size >= 0 && m.vocab_size <= 1'000'000, "model.config.vocab_size", "must be in [0, 1000000]");
    check(m.hidden_size > 0 && m.hidden_size <= 8192, "model.config.hidden_size", "must be in (0, 8192]");
    check(m.num_hidden_layers > 0 && m.num_hidden_layers <= 128, "model.config.num_hidden_layers", "must be in (0, 128]");
    check(m.num_attention_heads > 0 && (decoder_config ? m.num_attention_heads <= 1024 && (m.head_dim > 0 || m.hidden_size % std::max<int64_t>(m.num_attention_heads, 1) == 0)
                                                       : m.hidden_size % std::max<int64_t>(m.num_attention_heads, 1) == 0),
          "model.config.num_attention_heads", "must be > 0 and divide hidden_size");
    check(m.intermediate_size > 0 && m.intermediate_size <= 65536, "model.config.intermediate_size",
          "must be in (0, 65536]");
    check(m.max_position_embeddings > 0 && m.max_position_embeddings <= 8192, "model.config.max_position_embeddings",
          "must be in (0, 8192]");
    check(m.type_vocab_size > 0 && m.type_vocab_size <= 16, "model.config.type_vocab_size", "must be in (0, 16]");
    // Each bound above is generous alone; together they could still ask for a
    // model no rank can hold, which would fail late as a retried error.
    const double h = static_cast<double>(m.hidden_size);
    const double params = (std::max<double>(m.vocab_size, c.built_vocab_size) + m.max_position_embeddings) * h +
                          m.num_hidden_layers * (4 * h * h + 2 * h * m.intermediate_size);
    check(params <= kMaxModelParameters, "model.config",
          absl::StrCat("describes about ", static_cast<int64_t>(params / 1e6), " million parameters; at most ",
                       static_cast<int64_t>(kMaxModelParameters / 1e6), " million"));
    check(finite(m.hidden_dropout_prob) && m.hidden_dropout_prob >= 0 && m.hidden_dropout_prob < 1,
          "model.config.hidden_dropout_prob", "must be in [0, 1)");
    check(finite(m.attention_probs_dropout_prob) && m.attention_probs_dropout_prob >= 0 &&
              m.attention_probs_dropout_prob < 1,
          "model.config.attention_probs_dropout_prob", "must be in [0, 1)");
    check(m.classifier_dropout == -1 || (finite(m.classifier_dropout) && m.classifier_dropout >= 0 &&
                                         m.classifier_dropout < 1),
          "model.config.classifier_dropout", "must be in [0, 1) (absent: hidden_dropout_prob)");
    // Zero or negative: every LayerNorm divides by sqrt(var + eps) (NaN), or
    // every weight is drawn with no spread; the run would fail the same way on
    // every retry.
    check(finite(m.layer_norm_eps) && m.layer_norm_eps > 0, "model.config.layer_norm_eps", "must be > 0");
    check(finite(m.initializer_range) && m.initializer_range > 0, "model.config.initializer_range", "must be > 0");
    check(m.max_position_embeddings >= c.max_length, "data.max_length", "must be <= model.config.max_position_embeddings");
  }
  if (!c.init_embeddings.empty()) {
    std::vector<std::string> names(std::begin(kWordVectorTables), std::end(kWordVectorTables));
    check(IsWordVectorTable(c.init_embeddings), "model.init_embeddings",
          absl::StrCat("unknown word vectors '", c.init_embeddings, "' (known: ", absl::StrJoin(names, ", "), ")"));
    check(c.has_model_config, "model.init_embeddings",
          "only for a model trained from scratch (model.config): a pretrained model has its own embeddings");
  }
  check(c.built_vocab_size >= 16 && c.built_vocab_size <= 1'000'000, "model.vocab_size", "must be in [16, 1000000]");
  check(!c.train_path.empty(), "data.train", "is required");
  auto bounded = [&](const std::string& v, size_t max, const char* field) {
    check(v.size() <= max, field, absl::StrCat("longer than ", max, " bytes"));
  };
  bounded(c.model_path, kMaxPathBytes, "model.path");
  bounded(c.vocab_path, kMaxPathBytes, "model.vocab");
  bounded(c.train_path, kMaxPathBytes, "data.train");
  bounded(c.validation_path, kMaxPathBytes, "data.validation");
  bounded(c.output_dir, kMaxPathBytes, "output_dir");
  bounded(c.checkpoint_resume_from, kMaxPathBytes, "checkpoint.resume_from");
  bounded(c.text_column, kMaxNameBytes, "data.text_column");
  bounded(c.text_pair_column, kMaxNameBytes, "data.text_pair_column");
  bounded(c.label_column, kMaxNameBytes, "data.label_column");
  bounded(c.task, kMaxNameBytes, "task.type");
  check(c.label_names.size() <= kMaxLabelNames, "data.labels", absl::StrCat("more than ", kMaxLabelNames, " labels"));
  {
    std::set<std::string> seen;
    for (const auto& l : c.label_names) {
      // A repeated name would give two ids one name: id2label and label2id
      // would disagree in the exported config.
      if (l.empty() || l.size() > kMaxNameBytes) {
        check(false, "data.labels", absl::StrCat("each label must be 1 to ", kMaxNameBytes, " bytes"));
        break;
      }
      if (!seen.insert(l).second) {
        check(false, "data.labels", absl::StrCat("'", l, "' is listed twice"));
        break;
      }
    }
  }
  check(c.validation_path.empty() || c.validation_split == 0, "data.validation_split",
        "give validation or validation_split, not both");
  check(finite(c.validation_split) && c.validation_split >= 0 && c.validation_split < 1, "data.validation_split",
        "must be in [0, 1)");
  check(!c.validation_path.empty() || c.validation_split > 0, "data.validation",
        "is required (or set data.validation_split)");
  check(!c.text_column.empty(), "data.text_column", "must not be empty");
  check(!c.label_column.empty(), "data.label_column", "must not be empty");
  check(c.max_length >= 8 && c.max_length <= 8192, "data.max_length", "must be in [8, 8192]");
  check(c.max_field_bytes > 0 && c.max_field_bytes <= (int64_t{256} << 20), "data.max_field_bytes",
        "must be in (0, 256 MiB]");
  check(finite(c.augment_delete_rate) && c.augment_delete_rate >= 0 && c.augment_delete_rate < 0.5,
        "data.augment_delete_rate", "must be in [0, 0.5)");
  check(finite(c.augment_mask_rate) && c.augment_mask_rate >= 0 && c.augment_mask_rate < 0.5,
        "data.augment_mask_rate", "must be in [0, 0.5)");
  check(c.method == "full" || c.method == "head" || c.method == "lora" || c.method == "adapter", "method.type",
        "must be one of full, head, lora, adapter");
  if (c.method == "lora") {
    check(c.lora_rank > 0 && c.lora_rank <= 1024, "method.lora.rank", "must be in (0, 1024]");
    check(finite(c.lora_alpha) && c.lora_alpha > 0, "method.lora.alpha", "must be > 0");
    check(finite(c.lora_dropout) && c.lora_dropout >= 0 && c.lora_dropout < 1, "method.lora.dropout",
          "must be in [0, 1)");
    check(!c.lora_targets.empty(), "method.lora.targets", "must not be empty");
    for (const auto& t : c.lora_targets) {
      // BERT's modules by Attune's names, or a decoder's projections by HF's.
      const bool encoder = t == "query" || t == "key" || t == "value" || t == "attention.output" ||
                           t == "intermediate" || t == "output";
      const bool decoder = t == "q_proj" || t == "k_proj" || t == "v_proj" || t == "o_proj" || t == "gate_proj" ||
                           t == "up_proj" || t == "down_proj";
      check(encoder || decoder, "method.lora.targets",
            absl::StrCat("'", t,
                         "' is not one of query, key, value, attention.output, intermediate, output (BERT) or "
                         "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (decoders)"));
    }
  }
  if (c.method == "adapter") check(c.adapter_size > 0 && c.adapter_size <= 8192, "method.adapter.size", "must be in (0, 8192]");
  check(c.epochs > 0 && c.epochs <= 10000, "hyperparameters.epochs", "must be in (0, 10000]");
  check(c.max_steps >= 0 && c.max_steps <= kMaxSteps, "hyperparameters.max_steps",
        absl::StrCat("must be in [0, ", kMaxSteps, "]"));
  check(c.batch_size > 0 && c.batch_size <= 65536, "hyperparameters.batch_size", "must be > 0 and <= 65536");
  check(finite(c.learning_rate) && c.learning_rate > 0 && c.learning_rate < 1, "hyperparameters.learning_rate",
        "must be in (0, 1)");
  check(c.warmup_steps >= 0 && c.warmup_steps <= kMaxSteps, "hyperparameters.warmup_steps",
        absl::StrCat("must be in [0, ", kMaxSteps, "]"));
  check(finite(c.warmup_ratio) && c.warmup_ratio >= 0 && c.warmup_ratio < 1, "hyperparameters.warmup_ratio",
        "must be in [0, 1)");
  check(c.warmup_steps == 0 || c.warmup_ratio == 0, "hyperparameters.warmup_ratio",
        "give warmup_steps or warmup_ratio, not both");
  check(c.lr_scheduler == "linear" || c.lr_scheduler == "cosine" || c.lr_scheduler == "constant",
        "hyperparameters.lr_scheduler", "must be linear, cosine or constant");
  check(finite(c.weight_decay) && c.weight_decay >= 0 && c.weight_decay < 1, "hyperparameters.weight_decay",
        "must be in [0, 1)");
  check(c.gradient_accumulation_steps > 0 && c.gradient_accumulation_steps <= 4096,
        "hyperparameters.gradient_accumulation_steps", "must be in (0, 4096]");
  check(finite(c.max_grad_norm) && c.max_grad_norm >= 0, "hyperparameters.max_grad_norm", "must be >= 0");
  check(c.seed >= 0, "hyperparameters.seed", "must be >= 0");
  check(finite(c.adam_beta1) && c.adam_beta1 >= 0 && c.adam_beta1 < 1, "hyperparameters.adam_beta1", "must be in [0, 1)");
  check(finite(c.adam_beta2) && c.adam_beta2 >= 0 && c.adam_beta2 < 1, "hyperparameters.adam_beta2", "must be in [0, 1)");
  check(finite(c.adam_epsilon) && c.adam_epsilon > 0, "hyperparameters.adam_epsilon", "must be > 0");
  check(c.threads > 0 && c.threads <= 256, "hyperparameters.threads", "must be in (0, 256]");
  check(c.precision == "fp32" || c.precision == "bf16", "hyperparameters.precision", "must be fp32 or bf16");
  check(c.eval_every_steps >= 0 && c.eval_every_steps <= kMaxSteps, "evaluation.every_steps",
        absl::StrCat("must be in [0, ", kMaxSteps, "]"));
  check(c.eval_batch_size > 0 && c.eval_batch_size <= 65536, "evaluation.batch_size", "must be in (0, 65536]");
  const TaskInfo* task = FindTask(c.task);
  if (task == nullptr) {
    std::vector<std::string> known;
    for (const auto& t : Tasks()) known.push_back(t.name);
    check(false, "task.type", absl::StrCat("'", c.task, "' is not a task this version runs (", absl::StrJoin(known, ", "), ")"));
  }
  check(finite(c.mlm_probability) && c.mlm_probability > 0 && c.mlm_probability < 1, "task.mlm_probability",
        "must be in (0, 1)");
  if (c.task == "token_classification" || c.task == "masked_lm") {
    check(c.augment_delete_rate == 0 && c.augment_mask_rate == 0, "data.augment",
          absl::StrCat("does not apply to ", c.task));
  }
  if (c.task == "token_classification") {
    check(c.text_pair_column.empty(), "data.text_pair_column", "does not apply to token_classification");
  }
  if (c.task == "masked_lm") {
    check(c.text_pair_column.empty(), "data.text_pair_column", "does not apply to masked_lm");
  }
  if (c.task == "causal_lm") {
    check(c.text_pair_column.empty(), "data.text_pair_column", "does not apply to causal_lm");
    check(c.augment_delete_rate == 0 && c.augment_mask_rate == 0, "data.augment", "does not apply to causal_lm");
    check(c.data_format.empty() || c.data_format == "messages" || c.data_format == "alpaca" || c.data_format == "prompt_completion" ||
              c.data_format == "text",
          "data.format", absl::StrCat("'", c.data_format, "' is not one of messages, alpaca, prompt_completion, text"));
    check(c.train_on == "assistant" || c.train_on == "all", "task.train_on",
          absl::StrCat("'", c.train_on, "' is not one of assistant, all"));
    check(c.init_embeddings.empty(), "model.init_embeddings", "does not apply to causal_lm");
    check(c.eval_generate_max_new_tokens >= 0 && c.eval_generate_max_new_tokens <= 4096,
          "evaluation.generate.max_new_tokens", "must be in [1, 4096]");
    check(c.eval_generate_max_new_tokens == 0 || c.data_format != "text", "evaluation.generate",
          "needs prompts with reference answers: data.format messages, alpaca or prompt_completion, not text");
  } else {
    check(c.eval_generate_max_new_tokens == 0, "evaluation.generate", "applies to task causal_lm only");
    check(c.eval_multiple_choice_path.empty(), "evaluation.multiple_choice", "applies to task causal_lm only");
    check(!c.gradient_checkpointing, "hyperparameters.gradient_checkpointing",
          "decoders only (task causal_lm): BERT cannot recompute its activations yet");
    check(c.data_format.empty(), "data.format", "applies to task causal_lm only");
    check(!c.packing, "data.packing", "applies to task causal_lm only");
    check(c.train_on == "assistant", "task.train_on", "applies to task causal_lm only");
  }
  if (!c.early_stopping_metric.empty() && task != nullptr) {
    check(FindMetric(*task, c.early_stopping_metric) != nullptr, "evaluation.early_stopping.metric",
          absl::StrCat("'", c.early_stopping_metric, "' is not a metric of ", task->name, " (", MetricNames(*task), ")"));
    const std::string& m = c.early_stopping_metric;
    check(!(m == "exact_match" || m == "rouge_l") || c.eval_generate_max_new_tokens != 0,
          "evaluation.early_stopping.metric", absl::StrCat(m, " is computed only with evaluation.generate"));
    check(!(m == "mc_accuracy" || m == "mc_accuracy_norm") || !c.eval_multiple_choice_path.empty(),
          "evaluation.early_stopping.metric", absl::StrCat(m, " is computed only with evaluation.multiple_choice"));
    check(c.early_stopping_mode.empty() || c.early_stopping_mode == "max" || c.early_stopping_mode == "min",
          "evaluation.early_stopping.mode", "must be max or min");
    check(c.early_stopping_patience > 0 && c.early_stopping_patience <= 1'000'000, "evaluation.early_stopping.patience",
          "must be in (0, 1000000]");
    check(finite(c.early_stopping_min_delta) && c.early_stopping_min_delta >= 0, "evaluation.early_stopping.min_delta",
          "must be >= 0");
  }
  check(c.checkpoint_every_steps >= 0 && c.checkpoint_every_steps <= kMaxSteps, "checkpoint.every_steps",
        absl::StrCat("must be in [0, ", kMaxSteps, "]"));
  check(c.checkpoint_keep_last > 0 && c.checkpoint_keep_last <= 1000, "checkpoint.keep_last", "must be in (0, 1000]");
  check(c.checkpoint_resume_from.empty() || !c.checkpoint_overwrite, "checkpoint.overwrite",
        "cannot be combined with checkpoint.resume_from");
  check(c.world_size > 0 && c.world_size <= 1024, "workers.count", "must be in (0, 1024]");
  check(c.backend == "gloo" || c.backend == "nccl", "workers.backend", "must be gloo or nccl");
  check(c.sharding == "none" || c.sharding == "optimizer" || c.sharding == "gradients", "workers.sharding",
        c.sharding == "full" ? "'full' is not implemented yet; none, optimizer (ZeRO-1) or gradients (ZeRO-2) are"
                             : "must be none, optimizer or gradients");
  check(c.cpus_per_rank > 0 && c.cpus_per_rank <= 1024, "workers.cpus_per_rank", "must be in (0, 1024]");
  check(c.gpus_per_rank >= 0 && c.gpus_per_rank <= 64, "workers.gpus_per_rank", "must be in [0, 64]");
  check(c.max_restarts >= 0 && c.max_restarts <= 100, "max_restarts", "must be in [0, 100]");
  check(!c.output_dir.empty(), "output_dir", "is required");
  check(c.labels.size() <= kMaxJobLabels, "labels", absl::StrCat("more than ", kMaxJobLabels, " labels"));
  for (const auto& [k, v] : c.labels) {
    // Values are what selectors match ("domain=reviews"): the same characters
    // as names, and possibly empty.
    check(v.empty() || IsValidName(v), "labels",
          absl::StrCat("value of '", k.substr(0, 128), "' must match [A-Za-z0-9._-]{0,128}"));
    // Like Kubernetes: an optional prefix, "attune.dev/sweep".
    const size_t slash = k.find('/');
    const bool ok = slash == std::string::npos
                        ? IsValidName(k)
                        : IsValidName(k.substr(0, slash)) && IsValidName(k.substr(slash + 1));
    check(ok, "labels", absl::StrCat("key '", k.substr(0, 128), "' must match [prefix/]name with each part [A-Za-z0-9._-]{1,128}"));
  }
  if (bad.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(bad, "; "));
}

std::string ShowStagedPaths(const std::map<std::string, std::string>& staged, const std::string& text) {
  if (staged.empty() || text.empty()) return text;
  std::vector<std::pair<std::string, std::string>> order(staged.begin(), staged.end());
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  std::string out = text;
  for (const auto& [from, to] : order) out = absl::StrReplaceAll(out, {{from, to}});
  return out;
}

}  // namespace attune::common
