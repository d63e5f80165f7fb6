// Real attune-worker processes over real Gloo on loopback: N ranks end where
// one rank with the N-times batch ends, evaluation is exact for any world
// size, and failures end every rank promptly with a clear error.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <cstdio>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "common/task_catalog.h"
#include "tests/testing/process.h"
#include "tests/testing/task_data.h"
#include "tests/testing/weights.h"

namespace attune {
namespace {

using testing::Bin;
using testing::Fixture;
using testing::RunCommand;
using testing::TempDir;

void WriteData(const std::string& path, int n, int seed) {
  const std::vector<std::vector<std::string>> words = {
      {"patient", "aspirin", "fever", "chest", "pain"}, {"bank", "loan", "interest", "rates", "pay"},
      {"court", "license", "rights", "contract", "party"}};
  const std::vector<std::string> names = {"medical", "finance", "legal"};
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::ostringstream out;
  out << "text,label\n";
  for (int i = 0; i < n; ++i) {
    int y = i % 3;
    std::string text = "the";
    for (int w = 0; w < 5; ++w) text += " " + words[static_cast<size_t>(y)][rng() % 5];
    text += " " + words[static_cast<size_t>((y + 1) % 3)][rng() % 5];
    out << text << " " << i << "," << names[static_cast<size_t>(y)] << "\n";
  }
  testing::WriteText(path, out.str());
}

class DistributedTest : public ::testing::Test {
 protected:
  DistributedTest() : dir_("dist_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + (dir_ / "base") + " --dropout 0");
    EXPECT_EQ(gen.exit_code, 0) << gen.output;
    WriteData(dir_ / "train.csv", 72, 1);
    WriteData(dir_ / "valid.csv", 37, 2);  // 37: no world size of 2 or 3 divides it
  }

  // Dropout 0, so that ranks draw no random numbers that one rank would not.
  std::string Spec(const std::string& name, const std::string& model, const std::string& method, int batch,
                   int accum) {
    std::string s = "name: " + name + "\n" + model + "data: {train: " + (dir_ / "train.csv") + ", validation: " +
                    (dir_ / "valid.csv") + ", max_length: 32}\nmethod: " + method +
                    "\nhyperparameters: {epochs: 1, batch_size: " + std::to_string(batch) +
                    ", gradient_accumulation_steps: " + std::to_string(accum) +
                    ", learning_rate: 1.0e-2, warmup_steps: 2, weight_decay: 0.01, seed: 11}\n"
                    "evaluation: {batch_size: 5}\ncheckpoint: {every_steps: 5}\noutput_dir: " + (dir_ / name) + "\n";
    std::string path = dir_ / (name + ".yaml");
    testing::WriteText(path, s);
    return path;
  }
  std::string Pretrained() const {
    return "model:\n  path: " + (dir_ / "base") + "\n";
  }
  static std::string Scratch() {
    return "model:\n  config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,"
           " max_position_embeddings: 64, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}\n"
           "  vocab_size: 120\n";
  }
  testing::CommandResult Train(const std::string& spec, int nproc, const std::string& extra = "") {
    std::string cmd = Bin("attune-worker") + " train --noresume --collective_timeout_s=20 --spec " + spec + " " + extra;
    if (nproc > 1) cmd += " --nproc " + std::to_string(nproc);
    return RunCommand(cmd, 240);
  }
  void ExpectEquivalent(const std::string& model, const std::string& method, int accum) {
    // Global batch 6: 1 rank x 6, 2 ranks x 3, 3 ranks x 2.
    std::string out[4];
    for (int n : {1, 2, 3}) {
      std::string name = "w" + std::to_string(n);
      auto r = Train(Spec(name, model, method, 6 / n, accum), n);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      out[n] = dir_ / (name + "/model/model.safetensors");
    }
    EXPECT_LT(testing::MaxAbsDiff(out[1], out[2]), 1e-5);
    EXPECT_LT(testing::MaxAbsDiff(out[1], out[3]), 1e-5);
  }
  // Ranks 0 and 1 of `spec` as separate processes, logging to r0.log and r1.log.
  std::pair<pid_t, pid_t> StartTwoRanks(const std::string& spec, int collective_timeout_s) {
    const std::string base = Bin("attune-worker") + " train --noresume --spec " + spec +
                             " --world_size 2 --collective_timeout_s " + std::to_string(collective_timeout_s) +
                             " --rendezvous 127.0.0.1:" + std::to_string(testing::FreePort());
    return {testing::Spawn(base + " --rank 0", dir_ / "r0.log"), testing::Spawn(base + " --rank 1", dir_ / "r1.log")};
  }
  // Waits (up to 60 s) until rank 1 has logged step 20.
  void WaitForStep20() {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (testing::ReadText(dir_ / "r1.log").find("step=20/") == std::string::npos &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  TempDir dir_;
};

TEST_F(DistributedTest, FullFineTuneMatchesOneRank) { ExpectEquivalent(Scratch(), "{type: full}", 1); }
TEST_F(DistributedTest, HeadMatchesOneRank) { ExpectEquivalent(Pretrained(), "{type: head}", 1); }
TEST_F(DistributedTest, LoraMatchesOneRank) {
  ExpectEquivalent(Pretrained(), "{type: lora, lora: {rank: 4, alpha: 8}}", 1);
}
TEST_F(DistributedTest, AccumulationMatchesOneRank) { ExpectEquivalent(Scratch(), "{type: full}", 2); }

// NOTE [mixed precision]: in bf16 the ranks agree with one rank to a
// tolerance rather than to fp32 rounding. The gradients (fp32) are summed in
// another order, as in fp32; but a weight that differs in its last fp32 bits
// can round to another bf16 value in the next forward pass (a relative step of
// 2^-8), so differences grow with the steps instead of staying at 1e-7. AdamW
// normalises each update to about the learning rate (1e-2) whatever the
// gradient's size, so a near-zero gradient component whose sign flips moves
// by up to that much: one update is the bound. The 16 steps of this run differ
// by at most 4.0e-3 per weight (measured 2026-11-30; fp32: below 1e-5).
TEST_F(DistributedTest, Bf16TwoRanksMatchOneRankWithinBf16Rounding) {
  std::string out[3];
  for (int n : {1, 2}) {
    std::string name = "bf" + std::to_string(n);
    std::string spec = Spec(name, Scratch(), "{type: full}", 6 / n, 1);
    std::string text = testing::ReadText(spec);
    text.replace(text.find("seed: 11}"), 9, "seed: 11, precision: bf16}");
    testing::WriteText(spec, text);
    auto r = Train(spec, n);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    out[n] = dir_ / (name + "/model/model.safetensors");
  }
  const double diff = testing::MaxAbsDiff(out[1], out[2]);
  std::printf("bf16: max weight difference, 2 ranks against 1: %.3g\n", diff);
  EXPECT_LT(diff, 1e-2);
}

TEST_F(DistributedTest, EvaluationIsExactForAnyWorldSize) {
  nlohmann::json finals[4];
  for (int n : {1, 2, 3}) {
    std::string name = "e" + std::to_string(n);
    auto r = Train(Spec(name, Pretrained(), "{type: full}", 4, 1), n, "--eval_only");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    finals[n] = nlohmann::json::parse(testing::ReadText(dir_ / (name + "/eval_report.json")))["final"];
  }
  EXPECT_EQ(finals[1]["count"], 37);
  for (int n : {2, 3}) {
    for (const char* k : {"loss", "accuracy", "f1", "macro_f1", "micro_f1", "precision", "recall", "roc_auc"}) {
      EXPECT_NEAR(finals[n][k].get<double>(), finals[1][k].get<double>(), 1e-9) << k << " at world size " << n;
    }
    EXPECT_EQ(finals[n]["confusion_matrix"], finals[1]["confusion_matrix"]);
  }
}

TEST_F(DistributedTest, ResumesOnAnotherWorldSize) {
  // Global batch 6 throughout: 2 ranks x 3, then 3 ranks x 2.
  std::string two = Spec("resize", Scratch(), "{type: full}", 3, 1);
  auto crashed = Train(two, 2, "--abort_after_step=7");  // the last checkpoint is step 5
  ASSERT_NE(crashed.exit_code, 0);
  ASSERT_NE(crashed.output.find("aborted after step 7"), std::string::npos) << crashed.output;
  std::string three = Spec("resize", Scratch(), "{type: full}", 2, 1);
  auto resumed = RunCommand(Bin("attune-worker") + " train --collective_timeout_s=20 --spec " + three + " --nproc 3", 240);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("rank=2 resumed from"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("at step 5"), std::string::npos) << resumed.output;
  auto report = nlohmann::json::parse(testing::ReadText(dir_ / "resize/eval_report.json"));
  EXPECT_EQ(report["final"]["count"], 37);
  // 72 rows / 6 per step = 12 steps in the epoch, whatever the world size.
  EXPECT_EQ(report["train_loss"].size(), 12u);
}

// workers.sharding: optimizer and gradients over real Gloo processes (the ring
// reduce-scatter, NOTE [ring reduce-scatter]): 2 and 3 ranks end with the
// weights of one unsharded rank, with accumulation and a clipping that binds;
// a sharded run killed after its checkpoint resumes sharded on another world
// size and ends there too.
TEST_F(DistributedTest, TheShardedOptimizerOverGlooMatchesOneRankAndResumesOnAnotherWorldSize) {
  const std::string sharded = " --set workers.sharding=optimizer --set hyperparameters.max_grad_norm=0.05";
  std::string out[4];
  for (int n : {1, 2, 3}) {
    std::string name = "zero" + std::to_string(n);
    auto r = Train(Spec(name, Scratch(), "{type: full}", 6 / n, 2), n,
                   n == 1 ? " --set hyperparameters.max_grad_norm=0.05" : sharded);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    if (n > 1) {
      EXPECT_NE(r.output.find("sharded (reduce-scatter)"), std::string::npos) << r.output;
    }
    out[n] = dir_ / (name + "/model/model.safetensors");
  }
  EXPECT_LT(testing::MaxAbsDiff(out[1], out[2]), 1e-5);
  EXPECT_LT(testing::MaxAbsDiff(out[1], out[3]), 1e-5);
  // workers.sharding: gradients (NOTE [sharded gradients]): each micro-batch
  // reduce-scattered into the ranks' parts; the same weights.
  auto zero2 = Train(Spec("zero2", Scratch(), "{type: full}", 3, 2), 2,
                     " --set workers.sharding=gradients --set hyperparameters.max_grad_norm=0.05");
  ASSERT_EQ(zero2.exit_code, 0) << zero2.output;
  EXPECT_NE(zero2.output.find("sharded gradients"), std::string::npos) << zero2.output;
  EXPECT_LT(testing::MaxAbsDiff(out[1], dir_ / "zero2/model/model.safetensors"), 1e-5);

  // 72 rows, global batch 6, 2 micro-batches: 6 steps; checkpoints every 5.
  auto crashed = Train(Spec("zero_resize", Scratch(), "{type: full}", 3, 2), 2, sharded + " --abort_after_step=6");
  ASSERT_NE(crashed.exit_code, 0);
  ASSERT_NE(crashed.output.find("aborted after step 6"), std::string::npos) << crashed.output;
  auto resumed = RunCommand(Bin("attune-worker") + " train --collective_timeout_s=20 --spec " +
                                Spec("zero_resize", Scratch(), "{type: full}", 2, 2) + " --nproc 3" + sharded,
                            240);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step 5"), std::string::npos) << resumed.output;
  EXPECT_LT(testing::MaxAbsDiff(out[1], dir_ / "zero_resize/model/model.safetensors"), 1e-5);
}

// Multi-label, regression, masked-LM and token classification: N ranks train to the weights of one rank with
// the N-times batch, and evaluation gives the same figures for any world size.
class TaskEquivalenceTest : public DistributedTest {
 protected:
  TaskEquivalenceTest() {
    testing::WriteMultiLabelData(dir_ / "ml_train.jsonl", 72, 1);
    testing::WriteMultiLabelData(dir_ / "ml_valid.jsonl", 37, 2);
    testing::WriteRegressionData(dir_ / "rg_train.csv", 72, 1);
    testing::WriteRegressionData(dir_ / "rg_valid.csv", 37, 2);
    testing::WriteNerData(dir_ / "ner_train.conll", 72, 1);
    testing::WriteNerData(dir_ / "ner_valid.jsonl", 37, 2);
  }
  std::string TaskSpec(const std::string& task, const std::string& name, const std::string& model, int batch) {
    const bool multi = task == "multi_label_classification", mlm = task == "masked_lm",
               ner = task == "token_classification";
    const std::string train = dir_ / (ner ? "ner_train.conll" : multi || mlm ? "ml_train.jsonl" : "rg_train.csv");
    const std::string valid = dir_ / (ner ? "ner_valid.jsonl" : multi || mlm ? "ml_valid.jsonl" : "rg_valid.csv");
    std::string s = "name: " + name + "\ntask: {type: " + task + "}\n" + model + "data: {train: " + train +
                    ", validation: " + valid +
                    (ner    ? ", text_column: words, label_column: tags"
                     : mlm  ? ""
                     : multi ? ", label_column: topics"
                             : ", label_column: score") +
                    ", max_length: " + (mlm ? "16" : "32") + "}\nmethod: {type: full}\nhyperparameters: {epochs: 1, batch_size: " +
                    std::to_string(batch) +
                    ", learning_rate: 1.0e-2, warmup_steps: 2, weight_decay: 0.01, seed: 11}\n"
                    "evaluation: {batch_size: 5}\noutput_dir: " + (dir_ / name) + "\n";
    std::string path = dir_ / (name + ".yaml");
    testing::WriteText(path, s);
    return path;
  }
  void ExpectEquivalent(const std::string& task) {
    std::string weights[4];
    nlohmann::json finals[4];
    for (int n : {1, 2, 3}) {
      const std::string name = task + std::to_string(n);
      auto r = Train(TaskSpec(task, name, Scratch(), 6 / n), n);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      weights[n] = dir_ / (name + "/model/model.safetensors");
      auto e = Train(TaskSpec(task, "eval_" + name, Pretrained(), 4), n, "--eval_only");
      ASSERT_EQ(e.exit_code, 0) << e.output;
      finals[n] = nlohmann::json::parse(testing::ReadText(dir_ / ("eval_" + name + "/eval_report.json")))["final"];
    }
    EXPECT_LT(testing::MaxAbsDiff(weights[1], weights[2]), 1e-5);
    EXPECT_LT(testing::MaxAbsDiff(weights[1], weights[3]), 1e-5);
    if (task == "masked_lm" || task == "token_classification") {
      EXPECT_GT(finals[1]["count"].get<int>(), 20);  // masked tokens, or words
      EXPECT_EQ(finals[2]["count"], finals[1]["count"]);
      EXPECT_EQ(finals[3]["count"], finals[1]["count"]);
    } else {
      EXPECT_EQ(finals[1]["count"], 37);
    }
    const auto* info = common::FindTask(task);
    ASSERT_NE(info, nullptr);
    ASSERT_TRUE(finals[1].contains(info->default_objective)) << finals[1];
    for (int n : {2, 3}) {
      for (const auto& metric : info->metrics) {
        if (!finals[1].contains(metric.name) || finals[1][metric.name].is_null()) continue;
        EXPECT_NEAR(finals[n][metric.name].get<double>(), finals[1][metric.name].get<double>(), 1e-9)
            << metric.name << " at world size " << n;
      }
    }
  }
};

TEST_F(TaskEquivalenceTest, MultiLabel) { ExpectEquivalent("multi_label_classification"); }
TEST_F(TaskEquivalenceTest, Regression) { ExpectEquivalent("sequence_regression"); }
// The loss is divided by the masked tokens of the whole step, over every rank.
TEST_F(TaskEquivalenceTest, MaskedLm) { ExpectEquivalent("masked_lm"); }
// Token classification: the loss is divided by the labelled tokens of the step, over every rank.
TEST_F(TaskEquivalenceTest, TokenClassification) { ExpectEquivalent("token_classification"); }

// The exported model's loss and accuracy on valid.csv, computed from the
// probabilities of an independent `attune predict` run.
std::pair<double, double> PredictLossAndAccuracy(const std::string& model, const std::string& csv,
                                                 const std::string& out) {
  auto pred = RunCommand(Bin("attune") + " predict --model " + model + " --input " + csv +
                         " --max_length 32 --output " + out, 120);
  EXPECT_EQ(pred.exit_code, 0) << pred.output;
  auto config = nlohmann::json::parse(testing::ReadText(model + "/config.json"));
  std::map<std::string, int> label_id;
  for (auto& [id, name] : config["id2label"].items()) label_id[name.get<std::string>()] = std::stoi(id);
  std::istringstream rows(testing::ReadText(csv)), preds(testing::ReadText(out));
  std::string row, line;
  std::getline(rows, row);  // header
  double nll = 0;
  int n = 0, correct = 0;
  while (std::getline(rows, row) && std::getline(preds, line)) {
    const int y = label_id.at(row.substr(row.rfind(',') + 1));
    auto j = nlohmann::json::parse(line);
    auto probs = j["probs"].get<std::vector<double>>();
    nll -= std::log(probs.at(static_cast<size_t>(y)));
    correct += label_id.at(j["label"].get<std::string>()) == y;
    ++n;
  }
  EXPECT_EQ(n, 37);
  return {nll / n, static_cast<double>(correct) / n};
}

// NOTE [best weights in memory]: the final evaluation is of the exported best
// model on every rank, whether or not the ranks share output_dir.
class BestModelTest : public DistributedTest {
 protected:
  // Loss falls at every evaluation here, so its best is the last one;
  // accuracy reaches 1.0 early and then stops improving, so its best is not.
  std::string EarlyStoppingSpec(const std::string& name, const std::string& metric = "loss", int patience = 100,
                                int checkpoint_every = 0) {
    std::string s = "name: " + name + "\n" + Pretrained() + "data: {train: " + (dir_ / "train.csv") +
                    ", validation: " + (dir_ / "valid.csv") +
                    ", max_length: 32}\nmethod: {type: full}\n"
                    "hyperparameters: {epochs: 3, batch_size: 3, learning_rate: 2.0e-2, warmup_steps: 2, seed: 11}\n"
                    "evaluation: {batch_size: 5, every_steps: 3, early_stopping: {metric: " + metric +
                    ", patience: " + std::to_string(patience) + "}}\ncheckpoint: {every_steps: " +
                    std::to_string(checkpoint_every) + "}\noutput_dir: " + (dir_ / name) + "\n";
    std::string path = dir_ / (name + ".yaml");
    testing::WriteText(path, s);
    return path;
  }
  void ExpectFinalMatchesPredict(const std::string& name) {
    auto report = nlohmann::json::parse(testing::ReadText(dir_ / (name + "/eval_report.json")));
    auto [loss, accuracy] = PredictLossAndAccuracy(dir_ / (name + "/model"), dir_ / "valid.csv", dir_ / (name + ".pred"));
    EXPECT_NEAR(report["final"]["loss"].get<double>(), loss, 1e-5) << report["final"];
    EXPECT_NEAR(report["final"]["accuracy"].get<double>(), accuracy, 1e-12) << report["final"];
    RecordProperty(name + "_best_step", report["best_step"].dump());
  }
};

TEST_F(BestModelTest, FinalMetricsAreThoseOfTheExportedBestModel) {
  // The best evaluation is the last: rank 1 used to reload best/ while rank 0 was writing it.
  auto r = Train(EarlyStoppingSpec("shared"), 2);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(testing::ReadText(dir_ / "shared/eval_report.json"));
  ASSERT_EQ(report["best_step"], report["train_loss"].back()["step"]) << report.dump();
  ExpectFinalMatchesPredict("shared");
}

TEST_F(BestModelTest, AResumedRunRestoresTheBestWeightsFromItsCheckpoint) {
  auto whole = Train(EarlyStoppingSpec("whole", "accuracy", 3, 3), 2);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto report = nlohmann::json::parse(testing::ReadText(dir_ / "whole/eval_report.json"));
  const int64_t last = report["train_loss"].back()["step"], best = report["best_step"];
  ASSERT_EQ(report["stop_reason"], "early_stopping") << report.dump();
  ASSERT_LT(best, last - 3);  // the checkpoint before the last step holds best weights of an earlier step
  // Crash one step before the end; the checkpoint at last - 3 carries the best weights.
  const std::string spec = EarlyStoppingSpec("resumed", "accuracy", 3, 3);
  auto crashed = Train(spec, 2, "--abort_after_step=" + std::to_string(last - 1));
  ASSERT_NE(crashed.exit_code, 0) << crashed.output;
  char step_dir[32];
  std::snprintf(step_dir, sizeof step_dir, "step-%09lld", static_cast<long long>(last - 3));
  ASSERT_TRUE(std::filesystem::exists(dir_ / ("resumed/checkpoints/" + std::string(step_dir) + "/best.safetensors")));
  std::filesystem::remove_all(dir_ / "resumed/best");  // the resumed run must not need it
  auto resumed = RunCommand(Bin("attune-worker") + " train --collective_timeout_s=20 --spec " + spec + " --nproc 2", 240);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  auto again = nlohmann::json::parse(testing::ReadText(dir_ / "resumed/eval_report.json"));
  EXPECT_EQ(again["best_step"], best);
  EXPECT_EQ(again["final"]["loss"].get<double>(), report["final"]["loss"].get<double>());
  EXPECT_EQ(testing::MaxAbsDiff(dir_ / "whole/model/model.safetensors", dir_ / "resumed/model/model.safetensors"), 0.0);
  ExpectFinalMatchesPredict("resumed");
}

TEST_F(BestModelTest, RanksWithoutASharedOutputDirExportTheBestModel) {
  // Rank 1 writes to its own directory, as on a node that does not mount rank 0's.
  const std::string spec = EarlyStoppingSpec("split", "accuracy", 3);
  const std::string base = Bin("attune-worker") + " train --noresume --spec " + spec +
                           " --world_size 2 --collective_timeout_s 30 --rendezvous 127.0.0.1:" +
                           std::to_string(testing::FreePort());
  pid_t r0 = testing::Spawn(base + " --rank 0", dir_ / "r0.log");
  pid_t r1 = testing::Spawn(base + " --rank 1 --output_dir " + (dir_ / "rank1_out"), dir_ / "r1.log");
  int s0 = 0, s1 = 0;
  ::waitpid(r0, &s0, 0);
  ::waitpid(r1, &s1, 0);
  ASSERT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) == 0) << testing::ReadText(dir_ / "r0.log");
  ASSERT_TRUE(WIFEXITED(s1) && WEXITSTATUS(s1) == 0) << testing::ReadText(dir_ / "r1.log");
  auto report = nlohmann::json::parse(testing::ReadText(dir_ / "split/eval_report.json"));
  // The best evaluation is not the last, so the best weights must be restored.
  ASSERT_LT(report["best_step"].get<int64_t>(), report["train_loss"].back()["step"].get<int64_t>()) << report.dump();
  ExpectFinalMatchesPredict("split");
}

// Waits up to `limit` for `pid`; returns its exit code or -1 if still running.
int WaitFor(pid_t pid, std::chrono::seconds limit, std::chrono::steady_clock::time_point* when) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      *when = std::chrono::steady_clock::now();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST_F(DistributedTest, KilledRankFailsTheOthersWithinTheTimeout) {
  WriteData(dir_ / "train.csv", 3000, 3);
  std::string spec = Spec("kill", Scratch(), "{type: full}", 4, 1);
  const int timeout_s = 5;
  auto [r0, r1] = StartTwoRanks(spec, timeout_s);
  // Wait until training is under way, then SIGKILL rank 1 mid-step.
  WaitForStep20();
  ASSERT_NE(testing::ReadText(dir_ / "r1.log").find("step=20/"), std::string::npos) << testing::ReadText(dir_ / "r1.log");
  auto killed_at = std::chrono::steady_clock::now();
  ::kill(r1, SIGKILL);
  std::chrono::steady_clock::time_point done;
  int code = WaitFor(r0, std::chrono::seconds(timeout_s + 5), &done);
  if (code == -1) ::kill(r0, SIGKILL);
  int st;
  ::waitpid(r1, &st, 0);
  ASSERT_NE(code, -1) << "rank 0 still running " << timeout_s + 5 << " s after its peer died";
  EXPECT_NE(code, 0);
  std::string log = testing::ReadText(dir_ / "r0.log");
  const std::string r1_log = testing::ReadText(dir_ / "r1.log");
  EXPECT_TRUE(log.find("rank=0") != std::string::npos && log.find("failed") != std::string::npos)
      << "rank 0 exited with " << code << "; its log (" << log.size() << " bytes):\n" << log
      << "\nrank 1's log ends:\n" << r1_log.substr(r1_log.size() > 2000 ? r1_log.size() - 2000 : 0);
  double secs = std::chrono::duration<double>(done - killed_at).count();
  RecordProperty("survivor_exit_seconds", std::to_string(secs));
  EXPECT_LT(secs, timeout_s + 5.0);
}

TEST_F(DistributedTest, SigtermOnOneRankCheckpointsAndStopsEveryRankAtTheSameStep) {
  WriteData(dir_ / "train.csv", 3000, 3);
  std::string spec = Spec("term", Scratch(), "{type: full}", 4, 1);
  auto [r0, r1] = StartTwoRanks(spec, 20);
  WaitForStep20();
  ASSERT_NE(testing::ReadText(dir_ / "r1.log").find("step=20/"), std::string::npos);
  ::kill(r1, SIGTERM);  // as Kubernetes does to one pod
  std::chrono::steady_clock::time_point done;
  int c1 = WaitFor(r1, std::chrono::seconds(30), &done);
  int c0 = WaitFor(r0, std::chrono::seconds(30), &done);
  if (c0 == -1) ::kill(r0, SIGKILL);
  if (c1 == -1) ::kill(r1, SIGKILL);
  EXPECT_EQ(c1, 128 + SIGTERM) << testing::ReadText(dir_ / "r1.log");
  EXPECT_EQ(c0, 128 + SIGTERM) << testing::ReadText(dir_ / "r0.log");
  // Both ranks stopped after the same step, and rank 0 committed it.
  const std::string l0 = testing::ReadText(dir_ / "r0.log"), l1 = testing::ReadText(dir_ / "r1.log");
  auto stopped_step = [](const std::string& log) {
    size_t at = log.find("stopping on request after step ");
    return at == std::string::npos ? -1 : std::stoi(log.substr(at + 31));
  };
  const int step = stopped_step(l0);
  ASSERT_GT(step, 20) << l0;
  EXPECT_EQ(stopped_step(l1), step) << l1;
  EXPECT_NE(l0.find("step=" + std::to_string(step) + " checkpoint committed"), std::string::npos) << l0;
}

TEST_F(DistributedTest, SigtermToTheLauncherStopsEveryRankWithACheckpoint) {
  WriteData(dir_ / "train.csv", 3000, 3);
  std::string spec = Spec("launcher", Scratch(), "{type: full}", 4, 1);
  pid_t launcher = testing::Spawn(Bin("attune-worker") + " train --noresume --collective_timeout_s 20 --spec " + spec +
                                      " --nproc 2",
                                  dir_ / "launcher.log");
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::ReadText(dir_ / "launcher.log").find("rank=1 step=20/") == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(launcher, SIGTERM);
  std::chrono::steady_clock::time_point done;
  const int code = WaitFor(launcher, std::chrono::seconds(30), &done);
  if (code == -1) ::kill(launcher, SIGKILL);
  const std::string log = testing::ReadText(dir_ / "launcher.log");
  EXPECT_EQ(code, 128 + SIGTERM) << log;
  EXPECT_NE(log.find("rank=0 stopping on request after step"), std::string::npos) << log;
  EXPECT_NE(log.find("rank=1 stopping on request after step"), std::string::npos) << log;
  EXPECT_NE(log.find("checkpoint committed"), std::string::npos) << log;
}

TEST_F(DistributedTest, MissingRankGivesARendezvousTimeout) {
  std::string spec = Spec("alone", Scratch(), "{type: full}", 4, 1);
  auto t0 = std::chrono::steady_clock::now();
  auto r = RunCommand(Bin("attune-worker") + " train --noresume --spec " + spec +
                          " --world_size 2 --rank 0 --rendezvous 127.0.0.1:" + std::to_string(testing::FreePort()) +
                          " --collective_timeout_s 3",
                      60);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("rendezvous timed out"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 of 2 ranks arrived"), std::string::npos) << r.output;
  EXPECT_LT(secs, 20);
}

TEST_F(DistributedTest, NcclWithoutGpuFailsClearly) {
  std::string spec = Spec("nccl", Scratch(), "{type: full}", 4, 1);
  auto r = RunCommand(Bin("attune-worker") + " train --noresume --backend nccl --spec " + spec, 60);
  EXPECT_EQ(r.exit_code, 65) << r.output;
  EXPECT_TRUE(r.output.find("needs a CUDA GPU") != std::string::npos ||
              r.output.find("no NCCL") != std::string::npos ||
              r.output.find("CPU-only libtorch") != std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace attune
