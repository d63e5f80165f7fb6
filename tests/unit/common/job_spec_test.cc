#include "common/rpc/job_spec.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace attune::common {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

constexpr char kSpec[] = R"(
name: legal-osi
labels: {team: legal}
model:
  config: {hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 512,
           max_position_embeddings: 256, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.1}
  vocab: models/base/vocab.txt
data:
  train: data/legal/train.csv
  validation: data/legal/valid.csv
  text_column: text
  label_column: label
  max_length: 128
method: {type: lora, lora: {rank: 8, alpha: 16, dropout: 0.1, targets: [query, value]}}
hyperparameters: {epochs: 3, max_steps: 0, batch_size: 16, learning_rate: 5.0e-5, warmup_steps: 100,
                  weight_decay: 0.01, gradient_accumulation_steps: 1, max_grad_norm: 1.0, seed: 42}
evaluation: {every_steps: 100, early_stopping: {metric: f1, patience: 3, min_delta: 0.001}}
checkpoint: {every_steps: 200}
workers: {count: 2, backend: gloo}
output_dir: runs/legal-osi
)";

JobConfig Parse(const std::string& text) {
  auto spec = ParseJobSpec(text, "spec.yaml");
  EXPECT_THAT(spec, IsOk());
  return JobConfigFromProto(*spec);
}

// Every bundled example is a valid spec, as shipped; a sweep file's base spec too.
TEST(JobSpecTest, EveryExampleIsValid) {
  int seen = 0, sweeps = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(ATTUNE_SOURCE_DIR) + "/examples")) {
    if (e.path().extension() != ".yaml") continue;
    ++seen;
    std::ifstream in(e.path());
    std::stringstream text;
    text << in.rdbuf();
    if (e.path().filename().string().rfind("sweep_", 0) == 0) {
      auto sweep = ParseSweepSpec(text.str(), e.path().string());
      ASSERT_TRUE(sweep.ok()) << e.path() << ": " << sweep.status();
      EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(sweep->spec())), IsOk()) << e.path();
      EXPECT_FALSE(sweep->parameters().empty()) << e.path();
      ++sweeps;
      continue;
    }
    auto spec = ParseJobSpec(text.str(), e.path().string());
    ASSERT_TRUE(spec.ok()) << e.path() << ": " << spec.status();
    EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*spec)), IsOk()) << e.path();
  }
  EXPECT_GE(seen, 6);
  EXPECT_GE(sweeps, 1);
}

// model: exactly one of path, config and from_job.
TEST(JobSpecTest, FromJobExcludesPathAndConfig) {
  auto both = ParseJobSpec("name: x\nmodel: {path: /m, from_job: pre}\ndata: {train: t.csv}\noutput_dir: o\n", "s");
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*both)),
              StatusIs(absl::StatusCode::kInvalidArgument, "model: give one of path, config and from_job"));
  auto bad = ParseJobSpec("name: x\nmodel: {from_job: ../x}\ndata: {train: t.csv}\noutput_dir: o\n", "s");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*bad)), StatusIs(absl::StatusCode::kInvalidArgument, "model.from_job"));
}

// model.init_embeddings: a known table's name, for a model trained from scratch.
TEST(JobSpecTest, InitEmbeddingsIsAKnownTableForAFromScratchModel) {
  auto ok = ParseJobSpec(
      "name: x\nmodel: {config: {hidden_size: 64}, init_embeddings: glove-6b-100d}\n"
      "data: {train: t.csv, validation: v.csv}\noutput_dir: o\n", "s");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(JobConfigFromProto(*ok).init_embeddings, "glove-6b-100d");
  EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*ok)), IsOk());
  auto unknown = ParseJobSpec(
      "name: x\nmodel: {config: {}, init_embeddings: ../../etc/glove}\ndata: {train: t.csv}\noutput_dir: o\n", "s");
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*unknown)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "model.init_embeddings: unknown word vectors '../../etc/glove' (known: glove-6b-100d)"));
  auto pretrained =
      ParseJobSpec("name: x\nmodel: {path: /m, init_embeddings: glove-6b-100d}\ndata: {train: t.csv}\noutput_dir: o\n",
                   "s");
  ASSERT_TRUE(pretrained.ok()) << pretrained.status();
  EXPECT_THAT(ValidateJobConfig(JobConfigFromProto(*pretrained)),
              StatusIs(absl::StatusCode::kInvalidArgument, "model.init_embeddings: only for a model trained from scratch"));
}

TEST(JobSpecTest, TheDocumentedSpecParses) {
  JobConfig c = Parse(kSpec);
  EXPECT_THAT(ValidateJobConfig(c), IsOk());
  EXPECT_EQ(c.name, "legal-osi");
  EXPECT_EQ(c.labels.at("team"), "legal");
  EXPECT_TRUE(c.has_model_config);
  EXPECT_EQ(c.model_config.hidden_size, 128);
  EXPECT_EQ(c.model_config.hidden_dropout_prob, 0.0);  // an explicit 0 is kept
  EXPECT_EQ(c.method, "lora");
  EXPECT_EQ(c.lora_rank, 8);
  EXPECT_EQ(c.lora_targets, (std::vector<std::string>{"query", "value"}));
  EXPECT_DOUBLE_EQ(c.learning_rate, 5e-5);
  EXPECT_EQ(c.warmup_steps, 100);
  EXPECT_EQ(c.early_stopping_metric, "f1");
  EXPECT_EQ(c.checkpoint_every_steps, 200);
  EXPECT_EQ(c.world_size, 2);
  EXPECT_EQ(c.output_dir, "runs/legal-osi");
}

TEST(JobSpecTest, JsonIsAcceptedToo) {
  JobConfig c = Parse(R"({"name": "j", "model": {"path": "m"}, "data": {"train": "t.csv", "validation_split": 0.1},
                          "output_dir": "o"})");
  EXPECT_THAT(ValidateJobConfig(c), IsOk());
  EXPECT_EQ(c.batch_size, 16);  // defaults apply
  EXPECT_EQ(c.method, "full");
}

TEST(JobSpecTest, ZeroSeedAndBetasAreKept) {
  const std::string base = "name: j\nmodel: {path: m}\ndata: {train: t.csv, validation_split: 0.1}\noutput_dir: o\n";
  JobConfig zero = Parse(base + "hyperparameters: {seed: 0, adam_beta1: 0.0, adam_beta2: 0.0}\n");
  EXPECT_EQ(zero.seed, 0);
  EXPECT_EQ(zero.adam_beta1, 0.0);
  EXPECT_EQ(zero.adam_beta2, 0.0);
  EXPECT_THAT(ValidateJobConfig(zero), IsOk());
  JobConfig unset = Parse(base);
  EXPECT_EQ(unset.seed, 42);
  EXPECT_DOUBLE_EQ(unset.adam_beta1, 0.9);
  EXPECT_DOUBLE_EQ(unset.adam_beta2, 0.999);
  EXPECT_DOUBLE_EQ(unset.adam_epsilon, 1e-8);
}

TEST(JobSpecTest, DegenerateLayerNormAndInitialisationAreRefused) {
  JobConfig c = Parse(kSpec);
  c.model_config.layer_norm_eps = -1;
  c.model_config.initializer_range = 0;
  EXPECT_THAT(ValidateJobConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "model.config.layer_norm_eps: must be > 0"));
  EXPECT_THAT(ValidateJobConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "model.config.initializer_range: must be > 0"));
}

// A given classifier_dropout is a probability; only its absence means
// "use hidden_dropout_prob" (a negative value once passed as absent).
TEST(JobSpecTest, ClassifierDropoutIsAProbabilityOrAbsent) {
  auto with = [](const std::string& value) {
    std::string spec = kSpec;
    const std::string at = "attention_probs_dropout_prob: 0.1";
    spec.replace(spec.find(at), at.size(), at + (value.empty() ? "" : ", classifier_dropout: " + value));
    return Parse(spec);
  };
  for (const std::string bad : {"-5", "1.0", "-1"}) {
    EXPECT_THAT(ValidateJobConfig(with(bad)), StatusIs(absl::StatusCode::kInvalidArgument,
                                                       "model.config.classifier_dropout: must be in [0, 1)"))
        << bad;
  }
  EXPECT_EQ(with("0").model_config.classifier_dropout, 0.0);
  EXPECT_THAT(ValidateJobConfig(with("0")), IsOk());
  EXPECT_EQ(with("").model_config.classifier_dropout, -1.0);  // absent
  EXPECT_THAT(ValidateJobConfig(with("")), IsOk());
}

TEST(JobSpecTest, EarlyStoppingMetricComesFromTheTaskCatalog) {
  const std::string base = "name: j\nmodel: {path: m}\ndata: {train: t.csv, validation_split: 0.1}\noutput_dir: o\n";
  JobConfig unnamed = Parse(base + "evaluation: {early_stopping: {patience: 2}}\n");
  EXPECT_EQ(unnamed.early_stopping_metric, "f1");  // the catalog's default objective
  JobConfig hf = Parse(base + "evaluation: {early_stopping: {metric: eval_loss}}\n");
  EXPECT_THAT(ValidateJobConfig(hf), IsOk());
  JobConfig bad = Parse(base + "evaluation: {early_stopping: {metric: perplexity}}\n");
  EXPECT_THAT(ValidateJobConfig(bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "evaluation.early_stopping.metric: 'perplexity' is not a metric of sequence_classification"));
  EXPECT_THAT(ValidateJobConfig(bad), StatusIs(absl::StatusCode::kInvalidArgument, "roc_auc"));
}

TEST(JobSpecTest, SetOverridesApplyByPathAsYamlScalarsBeforeTheChecks) {
  const std::string text = "name: x\nmodel: {config: {hidden_size: 16}}\ndata: {train: t.csv}\noutput_dir: o\n";
  auto spec = ParseJobSpec(text, "s.yaml", {"hyperparameters.learning_rate=3e-4", "method.type=lora",
                                            "method.lora.rank=4", "evaluation.baseline=false", "name=y"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  const JobConfig c = JobConfigFromProto(*spec);
  EXPECT_DOUBLE_EQ(c.learning_rate, 3e-4);
  EXPECT_EQ(c.method, "lora");
  EXPECT_EQ(c.lora_rank, 4);
  EXPECT_FALSE(c.eval_baseline);
  EXPECT_EQ(c.name, "y");
  EXPECT_EQ(c.model_config.hidden_size, 16);  // the rest of the file stands
  EXPECT_THAT(ParseJobSpec(text, "s.yaml", {"hyperparameters.learnin_rate=1"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.learnin_rate: unknown field"));
  EXPECT_THAT(ParseJobSpec(text, "s.yaml", {"hyperparameters.batch_size=lots"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.batch_size: must be an integer"));
  EXPECT_THAT(ParseJobSpec(text, "s.yaml", {"name.first=z"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--set name.first: name is not a mapping"));
  EXPECT_THAT(ParseJobSpec(text, "s.yaml", {"Method.Type=lora"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a spec path"));
  EXPECT_THAT(ParseJobSpec(text, "s.yaml", {"=lora"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "expected PATH=VALUE"));
}

TEST(JobSpecTest, UnknownFieldIsNamedWithItsPath) {
  EXPECT_THAT(ParseJobSpec("name: x\nhyperparameters: {batch_sise: 4}\n", "s.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.batch_sise: unknown field"));
}

TEST(JobSpecTest, WrongTypeIsNamed) {
  EXPECT_THAT(ParseJobSpec("hyperparameters: {batch_size: lots}\n", "s.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.batch_size: must be an integer"));
  EXPECT_THAT(ParseJobSpec("method: {lora: {targets: query}}\n", "s.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, "method.lora.targets: must be a list"));
}

TEST(JobSpecTest, MalformedYamlGivesLine) {
  EXPECT_THAT(ParseJobSpec("name: x\ndata: {train: [\n", "s.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, "s.yaml:"));
}

struct BadCase {
  std::string yaml_line;
  std::string expected;
};

class InvalidSpecTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(InvalidSpecTest, NamesTheField) {
  // A case's top-level key replaces the base's (a repeated key is an error).
  const std::string& line = GetParam().yaml_line;
  const std::string key = line.substr(0, line.find(':') + 1);
  std::string spec;
  for (const char* base : {"name: ok", "model: {path: m}", "data: {train: t.csv, validation: v.csv}", "output_dir: o"}) {
    if (std::string(base).rfind(key, 0) != 0) spec += std::string(base) + "\n";
  }
  JobConfig c = Parse(spec + line + "\n");
  EXPECT_THAT(ValidateJobConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, InvalidSpecTest,
    ::testing::Values(
        BadCase{"hyperparameters: {batch_size: -1}", "hyperparameters.batch_size: must be > 0"},
        BadCase{"hyperparameters: {batch_size: 2147483648}", "hyperparameters.batch_size"},
        BadCase{"hyperparameters: {learning_rate: -0.1}", "hyperparameters.learning_rate"},
        BadCase{"hyperparameters: {learning_rate: .nan}", "hyperparameters.learning_rate"},
        BadCase{"hyperparameters: {epochs: 1000000000000}", "hyperparameters.epochs"},
        BadCase{"hyperparameters: {gradient_accumulation_steps: -2}", "hyperparameters.gradient_accumulation_steps"},
        BadCase{"hyperparameters: {lr_scheduler: step}", "hyperparameters.lr_scheduler"},
        BadCase{"hyperparameters: {warmup_steps: 10, warmup_ratio: 0.1}", "hyperparameters.warmup_ratio"},
        BadCase{"hyperparameters: {max_grad_norm: -1}", "hyperparameters.max_grad_norm"},
        BadCase{"method: {type: prefix}", "method.type"},
        BadCase{"method: {type: lora, lora: {targets: [query, bogus]}}", "method.lora.targets"},
        BadCase{"method: {type: lora, lora: {rank: -4}}", "method.lora.rank"},
        BadCase{"evaluation: {early_stopping: {metric: bleu}}", "evaluation.early_stopping.metric"},
        BadCase{"evaluation: {early_stopping: {metric: f1, mode: up}}", "evaluation.early_stopping.mode"},
        BadCase{"workers: {count: -1}", "workers.count"},
        BadCase{"workers: {backend: mpi}", "workers.backend"},
        BadCase{"workers: {sharding: zero9}", "workers.sharding: must be none, optimizer or gradients"},
        BadCase{"workers: {sharding: full}", "workers.sharding: 'full' is not implemented yet"},
        BadCase{"data: {train: t.csv, validation: v.csv, max_length: 4}", "data.max_length"},
        BadCase{"data: {train: t.csv, validation: v.csv, validation_split: 0.2}", "data.validation_split"},
        BadCase{"data: {train: t.csv}", "data.validation: is required"},
        BadCase{"max_restarts: -3", "max_restarts"},
        BadCase{"checkpoint: {every_steps: -5}", "checkpoint.every_steps"},
        // Sizes an attacker (or a typo) could ask for; each failed late, and was retried, before.
        BadCase{"model: {config: {vocab_size: 100000000000}}", "model.config.vocab_size"},
        BadCase{"model: {config: {intermediate_size: 1000000000000}}", "model.config.intermediate_size"},
        BadCase{"model: {config: {hidden_size: 8192, num_hidden_layers: 128, num_attention_heads: 64}}",
                "million parameters"},
        BadCase{"data: {train: t.csv, validation: v.csv, labels: [a, b, a]}", "data.labels: 'a' is listed twice"},
        BadCase{"data: {train: t.csv, validation: v.csv, labels: [a, '']}", "data.labels: each label"},
        BadCase{"labels: {team: '" + std::string(300, 'x') + "'}", "labels: value of 'team'"},
        BadCase{"labels: {team: 'a,b=c'}", "labels: value of 'team'"},
        BadCase{"data: {train: '" + std::string(5000, 'p') + "', validation: v.csv}", "data.train: longer than 4096"},
        BadCase{"data: {train: t.csv, validation: v.csv, text_column: '" + std::string(300, 'c') + "'}",
                "data.text_column: longer than 256"},
        BadCase{"hyperparameters: {max_steps: 100000000000}", "hyperparameters.max_steps"},
        BadCase{"evaluation: {batch_size: 10000000}", "evaluation.batch_size"},
        BadCase{"checkpoint: {keep_last: 100000}", "checkpoint.keep_last"},
        BadCase{"workers: {cpus_per_rank: 100000}", "workers.cpus_per_rank"},
        // Decoders and causal_lm.
        BadCase{"task: {type: causal_lm, train_on: everything}", "task.train_on: 'everything' is not one of"},
        BadCase{"data: {train: t.jsonl, validation: v.jsonl, format: messages}", "data.format: applies to task causal_lm"},
        BadCase{"data: {train: t.jsonl, validation: v.jsonl, packing: true}", "data.packing: applies to task causal_lm"},
        BadCase{"model: {config: {model_type: gpt2}, tokenizer: tok}", "model.config.model_type: 'gpt2' is not one of"},
        BadCase{"model: {config: {model_type: llama, num_attention_heads: 4, num_key_value_heads: 3}, tokenizer: tok}",
                "model.config.num_key_value_heads: must divide"},
        BadCase{"model: {config: {model_type: llama, head_dim: 7}, tokenizer: tok}", "model.config.head_dim"},
        BadCase{"model: {config: {model_type: llama, rope_theta: -1}, tokenizer: tok}", "model.config.rope_theta"},
        BadCase{"model: {config: {model_type: llama, rms_norm_eps: .nan}, tokenizer: tok}", "model.config.rms_norm_eps"},
        BadCase{"model: {config: {model_type: llama}}", "model.tokenizer: is required"},
        BadCase{"model: {config: {model_type: llama}, tokenizer: tok}", "a decoder trains with task.type causal_lm"},
        BadCase{"model: {path: m, tokenizer: tok}", "model.tokenizer: only with a decoder"},
        BadCase{"model: {config: {model_type: llama}, tokenizer: '" + std::string(5000, 't') + "'}",
                "model.tokenizer: longer than 4096"},
        BadCase{"hyperparameters: {gradient_checkpointing: true}", "hyperparameters.gradient_checkpointing: decoders only"},
        BadCase{"method: {type: lora, lora: {targets: [q_proj, wq]}}", "method.lora.targets: 'wq'"},
        BadCase{"evaluation: {generate: {max_new_tokens: 8}}", "evaluation.generate: applies to task causal_lm only"},
        BadCase{"evaluation: {multiple_choice: mc.jsonl}", "evaluation.multiple_choice: applies to task causal_lm"},
        BadCase{"task: {type: causal_lm}\nevaluation: {generate: {}}", "evaluation.generate.max_new_tokens: must be in"},
        BadCase{"task: {type: causal_lm}\nevaluation: {generate: {max_new_tokens: 100000}}",
                "evaluation.generate.max_new_tokens: must be in [1, 4096]"},
        BadCase{"data: {train: t.txt, validation: v.txt, format: text}\ntask: {type: causal_lm}\n"
                "evaluation: {generate: {max_new_tokens: 8}}",
                "evaluation.generate: needs prompts with reference answers"},
        BadCase{"task: {type: causal_lm}\nevaluation: {early_stopping: {metric: exact_match}}",
                "exact_match is computed only with evaluation.generate"},
        BadCase{"task: {type: causal_lm}\nevaluation: {early_stopping: {metric: mc_accuracy}}",
                "mc_accuracy is computed only with evaluation.multiple_choice"},
        BadCase{"task: {type: causal_lm}\nevaluation: {multiple_choice: '" + std::string(5000, 'm') + "'}",
                "evaluation.multiple_choice: longer than 4096"}));

TEST(JobSpecTest, TooManyLabelNamesAreRefused) {
  std::string labels;
  for (size_t i = 0; i <= kMaxLabelNames; ++i) labels += (i ? ", l" : "l") + std::to_string(i);
  JobConfig c = Parse("name: ok\nmodel: {path: m}\ndata: {train: t.csv, validation: v.csv, labels: [" + labels +
                      "]}\noutput_dir: o\n");
  EXPECT_THAT(ValidateJobConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "data.labels: more than 10000"));
}

TEST(JobSpecTest, EveryBadFieldIsListed) {
  JobConfig c = Parse("name: ../x\nhyperparameters: {batch_size: 0, learning_rate: 2}\n");
  absl::Status s = ValidateJobConfig(c);
  ASSERT_FALSE(s.ok());
  for (const char* field : {"name:", "model:", "data.train:", "output_dir:", "hyperparameters.batch_size:",
                            "hyperparameters.learning_rate:"}) {
    EXPECT_NE(std::string(s.message()).find(field), std::string::npos) << field << " not in: " << s.message();
  }
}

}  // namespace
}  // namespace attune::common
