// task causal_lm on a tiny random Llama 3.1-shaped decoder (make_tiny_decoder.py)
// carrying the real Llama 3.1 tokenizer and chat template that npm ships,
// driven in-process (NOTE [engine phases]):
// - the first step's loss equals an independent float64 forward pass's
//   token-weighted loss over the assistant tokens `attune tokenize` marks
//   (causal_lm_loss_reference.py);
// - one optimizer step over the same conversations of uneven lengths, taken
//   as one batch, as four accumulated micro-batches, over two ranks, or
//   packed into shared sequences, gives the same losses and parameters (to
//   1e-6 in fp32): the loss is normalised by the step's trained tokens,
//   whatever the split;
// - malformed conversations are dropped and counted with their lines, and a
//   from-scratch decoder (model.config + model.tokenizer) trains, exports a
//   directory that attune predict reads, and reports the bigram baseline.

#include <algorithm>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/engine_ranks.h"
#include "tests/testing/json_lines.h"
#include "tests/testing/process.h"
#include "tests/testing/weights.h"
#include "worker/comm/fake_communicator.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/task/task.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/tokenizer.h"
#include "worker/train/engine.h"

namespace attune::worker::train {
namespace {

using ::attune::testing::Bin;
using ::attune::testing::Fixture;
using ::attune::testing::IsOk;
using ::attune::testing::NpmTokenizer;
using ::attune::testing::ReadText;
using ::attune::testing::RunCommand;
using ::attune::testing::WriteText;
using Json = nlohmann::json;

const char* const kQuestions[] = {"What is the usual adult dose of aspirin for pain?", "Is a verbal agreement binding?",
                                  "What did revenue do in the third quarter?", "Define indemnity.",
                                  "What is hypertension, and how is it treated?"};
const char* const kAnswers[] = {"325 to 650 mg every four hours, at most 4 g a day.", "Often, yes.",
                                "It rose 12% on the year, driven by the lending book and lower funding costs; margins "
                                "widened by 30 basis points.",
                                "A promise to cover another party's loss.", "High blood pressure. Lifestyle changes first."};

// Conversations of uneven lengths: system turns in some, two exchanges in
// others, answers from a few words to a few sentences.
std::string Conversations(int n, int seed) {
  const auto& questions = kQuestions;
  const auto& answers = kAnswers;
  std::string out;
  for (int i = 0; i < n; ++i) {
    const int k = (i * 3 + seed) % 5;
    Json messages = Json::array();
    if (i % 3 == 0) messages.push_back({{"role", "system"}, {"content", "You are a careful assistant."}});
    messages.push_back({{"role", "user"}, {"content", absl::StrCat(questions[k], " (case ", i, ")")}});
    messages.push_back({{"role", "assistant"}, {"content", answers[k]}});
    if (i % 4 == 1) {
      messages.push_back({{"role", "user"}, {"content", "And in short?"}});
      messages.push_back({{"role", "assistant"}, {"content", answers[(k + 1) % 5]}});
    }
    out += Json{{"messages", messages}}.dump() + "\n";
  }
  return out;
}

class CausalLmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto made = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_decoder.py") + " " + model_ +
                           " --arch llama3 --tokenizer " + NpmTokenizer("tokenizer-llama3_1") + " --eos 128009");
    ASSERT_EQ(made.exit_code, 0) << made.output;
    WriteText(dir_ / "train.jsonl", Conversations(8, 0));
    WriteText(dir_ / "valid.jsonl", Conversations(4, 2));
  }

  common::JobConfig Config(const std::string& out) const {
    common::JobConfig c;
    c.name = "clm";
    c.task = "causal_lm";
    c.model_path = model_;
    c.train_path = dir_ / "train.jsonl";
    c.validation_path = dir_ / "valid.jsonl";
    c.max_length = 128;
    c.batch_size = 8;
    c.epochs = 3;
    c.learning_rate = 1e-3;
    c.weight_decay = 0.01;
    c.eval_baseline = false;
    c.output_dir = dir_ / out;
    return c;
  }
  static std::vector<std::pair<std::string, torch::Tensor>> Parameters(Engine& e) {
    return attune::testing::CopyParameters(e);
  }
  // Runs `c` (on `world` ranks of a FakeGroup) to the end, exported; rank 0's engine.
  std::unique_ptr<Engine> Train(const common::JobConfig& c, int world = 1, bool eval_only = false) {
    auto ranks = attune::testing::RunEngines(c, world, /*resume=*/false, eval_only);
    for (const auto& s : ranks->statuses) EXPECT_THAT(s, IsOk());
    return std::move(ranks->engines[0]);
  }

  attune::testing::TempDir dir_{"causal_lm"};
  std::string model_ = dir_ / "model";
};

TEST_F(CausalLmTest, TheFirstStepsLossIsTheReferencesTokenWeightedLoss) {
  auto tok = RunCommand(Bin("attune") + " tokenize --model " + model_ + " --input " + (dir_ / "train.jsonl") +
                        " --output " + (dir_ / "tokenized.jsonl"));
  ASSERT_EQ(tok.exit_code, 0) << tok.output;
  auto ref = RunCommand("/usr/bin/python3 " + Fixture("causal_lm_loss_reference.py") + " " + model_ + " " +
                        (dir_ / "tokenized.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const Json expected = Json::parse(ref.output.substr(ref.output.rfind('{')));

  common::JobConfig c = Config("first");
  c.max_steps = 1;
  auto e = Train(c);
  ASSERT_FALSE(e->state().train_loss.empty());
  EXPECT_NEAR(e->state().train_loss.front().second, expected["loss"].get<double>(), 1e-5) << expected;
  EXPECT_GT(expected["tokens"].get<int>(), 100) << expected;
}

TEST_F(CausalLmTest, AccumulationRanksAndPackingTakeTheSameSteps) {
  // AdamW divides each gradient by its root mean square plus epsilon: with
  // the default 1e-8 a gradient that is zero but for rounding (1e-11) moves
  // its weight by lr * 1e-3. A larger epsilon keeps rounding at its own
  // size, so that what differs is only what the split of the step changes.
  auto config = [&](const std::string& out) {
    common::JobConfig c = Config(out);
    c.adam_epsilon = 1e-6;
    return c;
  };
  auto one = Train(config("one"));
  const auto reference = Parameters(*one);
  const auto losses = one->state().train_loss;
  ASSERT_EQ(losses.size(), 3u);

  common::JobConfig accumulated = config("accumulated");
  accumulated.batch_size = 2;
  accumulated.gradient_accumulation_steps = 4;
  common::JobConfig two_ranks = config("two_ranks");
  two_ranks.batch_size = 4;
  // ZeRO-1: each rank keeps the AdamW state of half the weights (clipped at
  // the default max_grad_norm 1.0, which binds on these first steps).
  common::JobConfig sharded = config("sharded");
  sharded.batch_size = 2;
  sharded.gradient_accumulation_steps = 2;
  sharded.sharding = "optimizer";
  common::JobConfig zero2 = config("zero2");
  zero2.batch_size = 2;
  zero2.gradient_accumulation_steps = 2;
  zero2.sharding = "gradients";
  common::JobConfig packed = config("packed");
  packed.packing = true;
  packed.max_length = 128;
  for (const auto& [name, c, world] : {std::tuple<std::string, common::JobConfig, int>{"accumulation 4", accumulated, 1},
                                       {"two ranks", two_ranks, 2},
                                       {"two ranks, sharded optimizer, accumulation 2", sharded, 2},
                                       {"two ranks, sharded gradients, accumulation 2", zero2, 2},
                                       {"packed", packed, 1}}) {
    auto e = Train(c, world);
    ASSERT_EQ(e->state().train_loss.size(), losses.size()) << name;
    for (size_t i = 0; i < losses.size(); ++i) {
      // fp32 holds a loss of about 12 to 1e-6.
      EXPECT_NEAR(e->state().train_loss[i].second, losses[i].second, 1e-6 * std::abs(losses[i].second))
          << name << " step " << i + 1;
    }
    const auto got = Parameters(*e);
    ASSERT_EQ(got.size(), reference.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, (got[i].second - reference[i].second).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-6) << name;
  }
  // Packing put the eight conversations into fewer sequences.
  const Json report = Json::parse(ReadText(dir_ / "packed/data_report.json"));
  EXPECT_EQ(report["train_encoding"]["examples"], 8) << report;
  EXPECT_LT(report["train_encoding"]["sequences"].get<int>(), 8) << report;
}

TEST_F(CausalLmTest, MalformedConversationsAreDroppedAndCountedWithTheirLines) {
  std::string train = Conversations(8, 0);
  train += R"({"messages": [{"role": "user", "content": "no answer"}]})" "\n";                          // line 9
  train += R"({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})" "\n";  // 10
  train += R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]})" "\n";   // 11
  train += R"({"messages": "not a list"})" "\n";                                                                // 12
  train += R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]})" "\n";  // 13
  WriteText(dir_ / "train.jsonl", train);
  common::JobConfig c = Config("drops");
  c.max_steps = 1;
  Train(c);
  const Json report = Json::parse(ReadText(dir_ / "drops/data_report.json"));
  const Json& enc = report["train_encoding"];
  EXPECT_EQ(enc["examples"], 8) << enc;
  EXPECT_EQ(enc["dropped"], (Json{{"no_assistant_turn", 2}, {"unknown_role", 1}, {"empty_assistant_content", 1},
                                  {"malformed_conversation", 1}}))
      << enc;
  EXPECT_EQ(enc["sample_lines"]["no_assistant_turn"], (Json{9, 13})) << enc;
  EXPECT_EQ(enc["sample_lines"]["unknown_role"], (Json{10})) << enc;
  // The HTML report says the same.
  const std::string html = ReadText(dir_ / "drops/eval_report.html");
  EXPECT_NE(html.find("Encoding (training): 8 examples kept in 8 sequences, 0 cut to max_length; dropped "),
            std::string::npos)
      << html.substr(html.find("<h2>Data</h2>"));
  EXPECT_NE(html.find("no_assistant_turn: 2 (lines 9, 13)"), std::string::npos);
}

TEST_F(CausalLmTest, AConversationCutBeforeItsFirstAnswerIsDroppedAndOneCutAfterIsTrained) {
  // Where each conversation's first trained token lies, from attune tokenize.
  auto tok = RunCommand(Bin("attune") + " tokenize --model " + model_ + " --input " + (dir_ / "train.jsonl") +
                        " --output " + (dir_ / "tokenized.jsonl"));
  ASSERT_EQ(tok.exit_code, 0) << tok.output;
  std::vector<size_t> first, length;
  for (const auto& line : attune::testing::JsonLines(ReadText(dir_ / "tokenized.jsonl"))) {
    const auto mask = line["assistant_mask"].get<std::vector<int>>();
    first.push_back(static_cast<size_t>(std::find(mask.begin() + 1, mask.end(), 1) - mask.begin()));
    length.push_back(mask.size());
  }
  // A cut between the earliest and the latest first answer.
  const size_t lo = *std::min_element(first.begin(), first.end()), hi = *std::max_element(first.begin(), first.end());
  ASSERT_LT(lo + 1, hi);
  const size_t max_length = (lo + hi) / 2 + 1;
  int dropped = 0, truncated = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    dropped += first[i] >= max_length;
    truncated += first[i] < max_length && length[i] > max_length;
  }
  ASSERT_GT(dropped, 0);
  common::JobConfig c = Config("cut");
  c.max_length = static_cast<int64_t>(max_length);
  c.max_steps = 1;
  c.validation_path.clear();
  c.validation_split = 0.25;
  WriteText(dir_ / "train.jsonl", Conversations(8, 0) + Conversations(8, 0));
  c.drop_duplicates = false;
  Train(c);
  const Json report = Json::parse(ReadText(dir_ / "cut/data_report.json"));
  const Json& train = report["train_encoding"];
  const Json& valid = report["validation_encoding"];
  EXPECT_EQ(train["dropped"].value("no_trained_token_within_max_length", 0) +
                valid["dropped"].value("no_trained_token_within_max_length", 0),
            2 * dropped)
      << report;
  EXPECT_EQ(train["truncated"].get<int>() + valid["truncated"].get<int>(), 2 * truncated) << report;
}

TEST_F(CausalLmTest, AFromScratchDecoderTrainsExportsAndReportsTheBigramBaseline) {
  const std::string spec = "name: scratch\ntask: {type: causal_lm}\n"
                           "model:\n  config: {model_type: llama, hidden_size: 32, num_hidden_layers: 2, "
                           "num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, "
                           "max_position_embeddings: 128, tie_word_embeddings: true}\n"
                           "  tokenizer: " + NpmTokenizer("tokenizer-llama3_1") + "\n"
                           "data: {train: " + (dir_ / "train.jsonl") + ", validation: " + (dir_ / "valid.jsonl") +
                           ", max_length: 128}\n"
                           "hyperparameters: {epochs: 2, batch_size: 4, learning_rate: 1.0e-3, seed: 5}\n"
                           "output_dir: " + (dir_ / "scratch") + "\n";
  WriteText(dir_ / "scratch.yaml", spec);
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir_ / "scratch.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json config = Json::parse(ReadText(dir_ / "scratch/model/config.json"));
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["architectures"], Json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(config["vocab_size"], 128256);
  EXPECT_EQ(config["tie_word_embeddings"], true);
  const Json generation = Json::parse(ReadText(dir_ / "scratch/model/generation_config.json"));
  EXPECT_EQ(generation["bos_token_id"], 128000) << generation;
  const Json report = Json::parse(ReadText(dir_ / "scratch/eval_report.json"));
  EXPECT_EQ(report["task"], "causal_lm");
  for (const char* k : {"loss", "perplexity", "token_accuracy", "trained_tokens"}) {
    EXPECT_TRUE(report["final"].contains(k)) << k << " " << report["final"];
  }
  EXPECT_NEAR(report["final"]["perplexity"].get<double>(), std::exp(report["final"]["loss"].get<double>()), 1e-6);
  EXPECT_EQ(report["trivial_baseline"]["method"], "bigram") << report;
  // The export loads for inference: log-probabilities of the validation texts.
  WriteText(dir_ / "q.jsonl", R"({"text": "What is hypertension?"})" "\n");
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir_ / "scratch/model") + " --input " +
                      (dir_ / "q.jsonl") + " --logprobs --output " + (dir_ / "lp.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  const auto lines = attune::testing::JsonLines(ReadText(dir_ / "lp.jsonl"));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["logprobs"].size() + 1, lines[0]["ids"].size());
}

// NOTE [tokenizer.model]: model.tokenizer may be a directory with
// SentencePiece's tokenizer.model alone; the export carries it with the
// tokenizer.json it converts to, and that export tokenises and scores text.
TEST_F(CausalLmTest, AFromScratchDecoderTrainsOnATokenizerModelAndExportsIt) {
  const std::string spm = dir_ / "spm";
  auto made = RunCommand("/usr/bin/python3 " + Fixture("sentencepiece_reference.py") + " make " +
                         NpmTokenizer("tokenizer-llama2") + "/tokenizer.json " + spm);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::string texts;
  for (int i = 0; i < 24; ++i) {
    texts += Json{{"text", "Patient " + std::to_string(i) + " was given " + std::to_string(25 * i) +
                               " mg of aspirin; blood pressure 120/80 mmHg."}}.dump() + "\n";
  }
  WriteText(dir_ / "spm-train.jsonl", texts);
  const std::string spec = "name: scratch-spm\ntask: {type: causal_lm}\n"
                           "model:\n  config: {model_type: llama, hidden_size: 32, num_hidden_layers: 1, "
                           "num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, "
                           "max_position_embeddings: 256}\n"
                           "  tokenizer: " + spm + "\n"
                           "data: {train: " + (dir_ / "spm-train.jsonl") + ", validation_split: 0.25, format: text, max_length: 256}\n"
                           "hyperparameters: {epochs: 1, max_steps: 2, batch_size: 4, learning_rate: 1.0e-3}\n"
                           "output_dir: " + (dir_ / "scratch-spm") + "\n";
  WriteText(dir_ / "scratch-spm.yaml", spec);
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir_ / "scratch-spm.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string model = dir_ / "scratch-spm/model";
  EXPECT_EQ(Json::parse(ReadText(model + "/config.json"))["vocab_size"], 32000);
  EXPECT_EQ(ReadText(model + "/tokenizer.model"), ReadText(spm + "/tokenizer.model"));
  WriteText(dir_ / "q.jsonl", R"({"text": "What is hypertension?"})" "\n");
  auto p = RunCommand(Bin("attune") + " predict --model " + model + " --input " + (dir_ / "q.jsonl") +
                      " --logprobs --output " + (dir_ / "lp.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  const auto lines = attune::testing::JsonLines(ReadText(dir_ / "lp.jsonl"));
  ASSERT_EQ(lines.size(), 1u);
  auto original = text::BpeTokenizer::FromTokenizerJson(NpmTokenizer("tokenizer-llama2") + "/tokenizer.json");
  ASSERT_THAT(original.status(), IsOk());
  EXPECT_EQ(lines[0]["ids"].get<std::vector<int64_t>>(), (*original)->EncodeText("What is hypertension?", true));
  EXPECT_EQ(lines[0]["logprobs"].size() + 1, lines[0]["ids"].size());
}

// method lora on a decoder: PEFT-initialised branches on every projection
// (the default targets), the base frozen, the first step's loss the base
// model's; the merged export and the unmerged PEFT adapter (task_type
// CAUSAL_LM, names under base_model.model.) give the same log-probabilities.
TEST_F(CausalLmTest, LoraTrainsOnlyItsBranchesAndBothExportsScoreAlike) {
  common::JobConfig full = Config("full");
  full.max_steps = 1;
  auto f = Train(full);
  common::JobConfig lora = Config("lora");
  lora.method = "lora";
  lora.lora_rank = 4;
  lora.lora_alpha = 8;
  lora.learning_rate = 1e-2;
  auto l = Train(lora);
  EXPECT_NEAR(l->state().train_loss.front().second, f->state().train_loss.front().second, 1e-6);
  int branches = 0;
  for (auto& [name, t] : l->model()->NamedParameters()) {
    const bool branch = name.find(".lora_") != std::string::npos;
    EXPECT_EQ(t.requires_grad(), branch) << name;
    branches += branch;
  }
  EXPECT_EQ(branches, 2 * 7 * 2);  // A and B on 7 projections in each of 2 layers
  // The base weights are those the checkpoint holds.
  auto start = model::LoadHfModel(model_);
  ASSERT_THAT(start.status(), IsOk());
  std::map<std::string, torch::Tensor> initial;
  for (auto& [name, t] : (*start)->NamedParameters()) initial[name] = t;
  for (auto& [name, t] : l->model()->NamedParameters()) {
    if (name.find(".lora_") == std::string::npos) {
      EXPECT_TRUE(torch::equal(t, initial.at(name))) << name;
    }
  }

  lora.merge_lora = false;
  lora.output_dir = dir_ / "lora_unmerged";
  Train(lora);
  const Json ac = Json::parse(ReadText(dir_ / "lora_unmerged/model/adapter_config.json"));
  EXPECT_EQ(ac["task_type"], "CAUSAL_LM") << ac;
  EXPECT_EQ(ac["peft_type"], "LORA") << ac;
  EXPECT_EQ(ac["r"], 4);
  EXPECT_EQ(ac["target_modules"],
            Json::array({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}))
      << ac;
  WriteText(dir_ / "q.jsonl", R"({"text": "What is the usual adult dose of aspirin for pain?"})" "\n");
  auto logprobs = [&](const std::string& model) {
    auto p = RunCommand(Bin("attune") + " predict --model " + model + " --input " + (dir_ / "q.jsonl") +
                        " --logprobs --output -");
    EXPECT_EQ(p.exit_code, 0) << p.output;
    return Json::parse(p.output.substr(p.output.find('{'), p.output.find('\n', p.output.find('{')) - p.output.find('{')));
  };
  const Json merged = logprobs(dir_ / "lora/model"), unmerged = logprobs(dir_ / "lora_unmerged/model"),
             base = logprobs(model_);
  ASSERT_EQ(merged["logprobs"].size(), unmerged["logprobs"].size());
  double worst = 0, moved = 0;
  for (size_t i = 0; i < merged["logprobs"].size(); ++i) {
    worst = std::max(worst, std::abs(merged["logprobs"][i].get<double>() - unmerged["logprobs"][i].get<double>()));
    moved = std::max(moved, std::abs(merged["logprobs"][i].get<double>() - base["logprobs"][i].get<double>()));
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_GT(moved, 1e-3) << "LoRA training changed nothing";
}

// NOTE [gradient checkpointing]: recomputing each layer in backward gives the
// gradients of keeping its activations, for full fine-tuning and for LoRA
// (whose first layer's input, the frozen embeddings, needs no gradient).
TEST_F(CausalLmTest, GradientCheckpointingTakesTheSameSteps) {
  for (const std::string method : {"full", "lora"}) {
    common::JobConfig plain = Config("plain_" + method);
    plain.method = method;
    plain.learning_rate = 1e-2;
    plain.adam_epsilon = 1e-6;
    common::JobConfig checkpointed = plain;
    checkpointed.output_dir = dir_ / ("checkpointed_" + method);
    checkpointed.gradient_checkpointing = true;
    auto a = Train(plain);
    auto b = Train(checkpointed);
    ASSERT_EQ(a->state().train_loss.size(), b->state().train_loss.size());
    for (size_t i = 0; i < a->state().train_loss.size(); ++i) {
      EXPECT_NEAR(a->state().train_loss[i].second, b->state().train_loss[i].second,
                  1e-6 * std::abs(a->state().train_loss[i].second))
          << method << " step " << i + 1;
    }
    const auto pa = Parameters(*a), pb = Parameters(*b);
    ASSERT_EQ(pa.size(), pb.size());
    double worst = 0, moved = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
      worst = std::max(worst, (pa[i].second - pb[i].second).abs().max().item<double>());
      if (pa[i].first == "model.layers.0.self_attn.q_proj.lora_B.weight") moved = pb[i].second.abs().max().item<double>();
    }
    EXPECT_LT(worst, 1e-6) << method;
    if (method == "lora") {
      EXPECT_GT(moved, 0) << "the first layer's LoRA branch was not trained";
    }
  }
  // BERT cannot, and the spec check says so.
  common::JobConfig encoder = Config("encoder_checkpointed");
  encoder.task = "masked_lm";
  encoder.model_path.clear();
  encoder.has_model_config = true;
  encoder.gradient_checkpointing = true;
  absl::Status s = common::ValidateJobConfig(encoder);
  EXPECT_NE(std::string(s.message()).find("hyperparameters.gradient_checkpointing: decoders only"), std::string::npos)
      << s;
}

TEST_F(CausalLmTest, AnEncoderTaskOnADecoderAndCausalLmOnAnEncoderAreRefusedByName) {
  common::JobConfig c = Config("wrong");
  c.task = "sequence_classification";
  Engine e(c, TrainerOptions{}, nullptr);
  absl::Status s = e.Setup();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("trains with task.type causal_lm"), std::string::npos) << s;

  common::JobConfig encoder = Config("encoder");
  encoder.model_path.clear();
  encoder.has_model_config = true;  // BERT's keys: no model_type
  Engine e2(encoder, TrainerOptions{}, nullptr);
  s = e2.Setup();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("task.type causal_lm trains a decoder"), std::string::npos) << s;
}

}  // namespace
}  // namespace attune::worker::train

namespace attune::worker::train {
namespace {

// evaluation.generate and evaluation.multiple_choice, checked through paths
// that share nothing with the engine's: the export's greedy answers from
// `attune predict` scored by text_metrics_reference.py (SQuAD's exact match,
// rouge_score's ROUGE-L) give the report's exact_match and rouge_l; the
// choices tokenised by `attune tokenize` and scored by
// multiple_choice_reference.py's float64 forward pass give mc_accuracy and
// mc_accuracy_norm. The export evaluated on one and on two ranks gives the
// same figures, bit for bit.
TEST_F(CausalLmTest, AnswersAndChoicesAreScoredAsPredictAndAReferenceScoreThemOnOneAndTwoRanks) {
  // Questions in both forms: a question, and a conversation whose earlier
  // answer is context (not scored).
  std::string mc, choice_records;
  for (int q = 0; q < 5; ++q) {
    Json choices = Json::array();
    for (int k = 0; k < 4; ++k) choices.push_back(kAnswers[(q + k * 2) % 5]);
    const int answer = q % 4;
    std::swap(choices[0], choices[static_cast<size_t>(answer)]);
    Json line = {{"choices", choices}, {"answer", answer}};
    Json context = Json::array();
    if (q == 4) {
      context = {{{"role", "user"}, {"content", kQuestions[0]}},
                 {{"role", "assistant"}, {"content", kAnswers[0]}, {"weight", 0}},
                 {{"role", "user"}, {"content", kQuestions[q]}}};
      line["messages"] = context;
      line["messages"][1].erase("weight");
    } else {
      line["question"] = kQuestions[q];
      context = {{{"role", "user"}, {"content", kQuestions[q]}}};
    }
    mc += line.dump() + "\n";
    for (const auto& choice : choices) {
      Json messages = context;
      messages.push_back({{"role", "assistant"}, {"content", choice}});
      choice_records += Json{{"messages", messages}}.dump() + "\n";
    }
  }
  WriteText(dir_ / "mc.jsonl", mc);
  WriteText(dir_ / "choices.jsonl", choice_records);
  auto config = [&](const std::string& out) {
    common::JobConfig c = Config(out);
    c.epochs = 12;
    c.batch_size = 4;
    c.learning_rate = 1e-2;
    c.eval_batch_size = 2;  // two batches of prompts and of choices: one per rank
    c.eval_generate_max_new_tokens = 12;
    c.eval_multiple_choice_path = dir_ / "mc.jsonl";
    return c;
  };
  Train(config("one"), 1);
  common::JobConfig again = config("again");
  again.model_path = dir_ / "one/model";
  Train(again, 2, /*eval_only=*/true);
  const Json one = Json::parse(ReadText(dir_ / "one/eval_report.json"));
  const Json two = Json::parse(ReadText(dir_ / "again/eval_report.json"));
  for (const char* k : {"exact_match", "rouge_l", "mc_accuracy", "mc_accuracy_norm"}) {
    ASSERT_TRUE(one["final"].contains(k)) << k << " " << one["final"];
    EXPECT_EQ(one["final"][k].get<double>(), two["final"][k].get<double>()) << k;
  }
  EXPECT_EQ(one["answers"]["answered"], 4) << one["answers"];
  EXPECT_EQ(one["answers"]["questions"], 5) << one["answers"];
  ASSERT_EQ(one["answers"]["samples"].size(), 4u) << one["answers"];
  EXPECT_EQ(one["answers"], two["answers"]);
  for (const char* k : {"exact_match", "rouge_l", "mc_accuracy"}) {
    EXPECT_TRUE(one["trivial_baseline"].contains(k)) << k << " " << one["trivial_baseline"];
  }

  // The prompts as predict takes them: each validation conversation up to its last answer.
  std::string prompts;
  std::vector<std::string> references;
  for (const auto& v : attune::testing::JsonLines(ReadText(dir_ / "valid.jsonl"))) {
    Json messages = Json::parse(v["messages"].dump());
    references.push_back(messages.back()["content"]);
    messages.erase(messages.size() - 1);
    prompts += Json{{"messages", messages}}.dump() + "\n";
  }
  WriteText(dir_ / "prompts.jsonl", prompts);
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir_ / "one/model") + " --input " +
                      (dir_ / "prompts.jsonl") + " --max_new_tokens 12 --output " + (dir_ / "answers.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  const auto answers = attune::testing::JsonLines(ReadText(dir_ / "answers.jsonl"));
  ASSERT_EQ(answers.size(), references.size());
  std::string pairs;
  for (size_t i = 0; i < answers.size(); ++i) {
    pairs += Json{{"prediction", answers[i]["generated_text"].get<std::string>()}, {"reference", references[i]}}.dump() +
             "\n";
    EXPECT_EQ(one["answers"]["samples"][i]["generated"].get<std::string>(),
              answers[i]["generated_text"].get<std::string>())
        << i;
  }
  WriteText(dir_ / "pairs.jsonl", pairs);
  auto scored = RunCommand("/usr/bin/python3 " + Fixture("text_metrics_reference.py") + " " + (dir_ / "scored.json") +
                           " " + (dir_ / "pairs.jsonl"));
  ASSERT_EQ(scored.exit_code, 0) << scored.output;
  double em = 0, rouge = 0;
  for (const Json& x : Json::parse(ReadText(dir_ / "scored.json"))) {
    em += x["exact_match"].get<double>();
    rouge += x["rouge_l"].get<double>();
  }
  EXPECT_NEAR(one["final"]["exact_match"].get<double>(), em / 4, 1e-12) << pairs;
  EXPECT_NEAR(one["final"]["rouge_l"].get<double>(), rouge / 4, 1e-12) << pairs;
  // The model learnt something to answer with.
  EXPECT_GT(rouge, 0) << pairs;

  auto t = RunCommand(Bin("attune") + " tokenize --model " + (dir_ / "one/model") + " --input " +
                      (dir_ / "choices.jsonl") + " --output " + (dir_ / "choices_tokenized.jsonl"));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  auto ref = RunCommand("/usr/bin/python3 " + Fixture("multiple_choice_reference.py") + " " + (dir_ / "one/model") +
                        " " + (dir_ / "choices_tokenized.jsonl") + " " + (dir_ / "mc.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const Json expected = Json::parse(ref.output);
  EXPECT_EQ(one["final"]["mc_accuracy"].get<double>(), expected["mc_accuracy"].get<double>()) << expected;
  EXPECT_EQ(one["final"]["mc_accuracy_norm"].get<double>(), expected["mc_accuracy_norm"].get<double>()) << expected;
}

// A bad multiple-choice file fails the job at setup, naming its line and what
// is wrong; nothing is trained.
TEST_F(CausalLmTest, ABadMultipleChoiceLineFailsTheJobAtSetupNamingTheLine) {
  const std::string ok = R"({"question": "Is a verbal agreement binding?", "choices": ["Often, yes.", "No."], "answer": 0})";
  const std::string long_choice(4000, 'x');
  struct Case {
    std::string line, expected;
  };
  for (const Case& bad : {Case{"not json", ":2: not a JSON object"},
                          Case{R"({"question": "q", "choices": ["a"], "answer": 0})", ":2: needs \"choices\": a list of 2"},
                          Case{R"({"question": "q", "choices": ["a", "b"], "answer": 2})", ":2: needs \"answer\""},
                          Case{R"({"question": "q", "choices": ["a", "b"]})", ":2: needs \"answer\""},
                          Case{R"({"question": "q", "messages": [], "choices": ["a", "b"], "answer": 0})",
                               ":2: needs one of \"messages\""},
                          Case{R"({"question": "q", "choices": ["a", ""], "answer": 0})",
                               ":2: choices[1] must be a non-empty string"},
                          Case{R"({"messages": [{"role": "robot", "content": "q"}], "choices": ["a", "b"], "answer": 0})",
                               ":2: choices[0]: unknown_role"},
                          Case{R"({"question": "q", "choices": ["a", ")" + long_choice + R"("], "answer": 0})",
                               ":2: choices[1] does not fit data.max_length 128"}}) {
    SCOPED_TRACE(bad.line.substr(0, 80));
    WriteText(dir_ / "mc.jsonl", ok + "\n" + bad.line + "\n");
    common::JobConfig c = Config("bad_mc");
    c.eval_multiple_choice_path = dir_ / "mc.jsonl";
    TrainerOptions o;
    o.resume = false;
    Engine e(c, o, nullptr);
    const absl::Status s = e.Setup();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find("evaluation.multiple_choice " + (dir_ / "mc.jsonl") + bad.expected),
              std::string::npos)
        << s;
  }
}

// Operators restart jobs: a packed SFT run killed after a checkpoint and
// resumed (across an epoch boundary, with its answers evaluated) ends bitwise
// equal to an uninterrupted one. And bf16 (autocast, fp32 master weights)
// trains a decoder: its first step's loss is fp32's to bf16's precision.
TEST_F(CausalLmTest, APackedRunKilledAfterACheckpointResumesExactlyAndBf16Trains) {
  auto spec = [&](const std::string& out, const std::string& precision) {
    const std::string text =
        "name: clm-" + out + "\ntask: {type: causal_lm}\nmodel: {path: " + model_ + "}\n"
        "data: {train: " + (dir_ / "train.jsonl") + ", validation: " + (dir_ / "valid.jsonl") +
        ", max_length: 128, packing: true}\n"
        "hyperparameters: {epochs: 4, batch_size: 2, learning_rate: 1.0e-3, seed: 3, precision: " + precision + "}\n"
        "evaluation: {every_steps: 3, baseline: false, generate: {max_new_tokens: 4}}\n"
        "checkpoint: {every_steps: 2}\noutput_dir: " + (dir_ / out) + "\n";
    WriteText(dir_ / (out + ".yaml"), text);
    return Bin("attune-worker") + " train --spec " + (dir_ / (out + ".yaml"));
  };
  auto whole = RunCommand(spec("whole", "fp32"), 300);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto crashed = RunCommand(spec("resumed", "fp32") + " --abort_after_step=5", 300);
  ASSERT_NE(crashed.exit_code, 0);
  auto resumed = RunCommand(spec("resumed", "fp32"), 300);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_EQ(attune::testing::MaxAbsDiff(dir_ / "whole/model/model.safetensors", dir_ / "resumed/model/model.safetensors"),
            0.0);
  const Json a = Json::parse(ReadText(dir_ / "whole/eval_report.json"));
  const Json b = Json::parse(ReadText(dir_ / "resumed/eval_report.json"));
  EXPECT_EQ(a["final"], b["final"]);
  EXPECT_TRUE(a["final"].contains("exact_match")) << a["final"];
  const Json packing = Json::parse(ReadText(dir_ / "whole/data_report.json"))["train_encoding"];
  ASSERT_LT(packing["sequences"].get<int>(), 8) << packing;
  // Eight conversations in fewer sequences, batch 2, 4 epochs: more than one epoch before the kill.
  EXPECT_GT(a["train_loss"].size(), 2 * static_cast<size_t>((packing["sequences"].get<int>() + 1) / 2)) << a;

  auto bf16 = RunCommand(spec("bf16", "bf16"), 300);
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  const Json c = Json::parse(ReadText(dir_ / "bf16/eval_report.json"));
  EXPECT_EQ(c["precision"], "bf16");
  const double fp32_first = a["train_loss"][0]["loss"], bf16_first = c["train_loss"][0]["loss"];
  // bf16 keeps 8 bits of mantissa: a relative error of a few 1e-3 per product.
  EXPECT_NEAR(bf16_first, fp32_first, 2e-2 * fp32_first);
  EXPECT_NE(bf16_first, fp32_first);  // the products really ran in bf16
  for (const auto& step : c["train_loss"]) EXPECT_TRUE(std::isfinite(step["loss"].get<double>())) << step;
  EXPECT_LT(c["final"]["loss"].get<double>(), fp32_first);
}

// Answers stop where the chat template ends an assistant turn, even when the
// tokenizer's eos_token is another token (a base model's).
TEST(CausalLmAnswerStopTest, TheTemplatesEndOfTurnTokenEndsAnAnswer) {
  for (const auto& [package, token] : {std::pair<std::string, std::string>{"tokenizer-llama3_1", "<|eot_id|>"},
                                       {"tokenizer-qwen3", "<|im_end|>"}}) {
    SCOPED_TRACE(package);
    auto tok = text::Tokenizer::FromDirectory(NpmTokenizer(package));
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto task = task::MakeTask("causal_lm");
    common::JobConfig c;
    c.task = "causal_lm";
    ASSERT_THAT(task->Configure(**tok, c), IsOk());
    const auto* bpe = dynamic_cast<const text::BpeTokenizer*>(tok->get());
    ASSERT_NE(bpe, nullptr);
    EXPECT_EQ(task->AnswerStopIds(), std::set<int64_t>{bpe->TokenId(token)});
    c.data_format = "prompt_completion";
    auto plain = task::MakeTask("causal_lm");
    ASSERT_THAT(plain->Configure(**tok, c), IsOk());
    EXPECT_TRUE(plain->AnswerStopIds().empty());  // no template renders its prompts
  }
}

}  // namespace
}  // namespace attune::worker::train
