// attune-worker train and attune predict for the multi-label and regression
// tasks, end to end on generated data: the reports hold the task's metrics
// and tables, the exported model says its problem_type, and the report's final
// figures equal those recomputed from an independent `attune predict` run.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/process.h"
#include "tests/testing/task_data.h"

namespace attune {
namespace {

using testing::Bin;
using testing::ReadText;
using testing::RunCommand;
using testing::TempDir;

constexpr char kTiny[] =
    "model:\n  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64,"
    " max_position_embeddings: 64}\n  vocab_size: 200\n";

std::string Spec(const TempDir& dir, const std::string& task, const std::string& data, const std::string& out,
                 const std::string& evaluation = "{every_steps: 10}") {
  return "name: " + task + "\ntask: {type: " + task + "}\n" + kTiny + "data: " + data +
         "\nmethod: {type: full}\nhyperparameters: {epochs: 4, batch_size: 8, learning_rate: 3.0e-3, warmup_steps: 3, "
         "seed: 3}\nevaluation: " + evaluation + "\ncheckpoint: {every_steps: 20}\noutput_dir: " + out + "\n";
}

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

TEST(TaskTest, MultiLabelTrainsReportsAndPredicts) {
  TempDir dir("task_multi");
  testing::WriteMultiLabelData(dir / "train.jsonl", 150, 1);
  testing::WriteMultiLabelData(dir / "valid.jsonl", 40, 2);
  testing::WriteText(dir / "spec.yaml", Spec(dir, "multi_label_classification",
                                             "{train: " + (dir / "train.jsonl") + ", validation: " +
                                                 (dir / "valid.jsonl") + ", label_column: topics, max_length: 32}",
                                             dir / "out"));
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "spec.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("micro_f1"), std::string::npos) << r.output;

  auto config = nlohmann::json::parse(ReadText(dir / "out/model/config.json"));
  EXPECT_EQ(config["problem_type"], "multi_label_classification");
  EXPECT_EQ(config["id2label"], (nlohmann::json{{"0", "finance"}, {"1", "legal"}, {"2", "medical"}}));
  auto data = nlohmann::json::parse(ReadText(dir / "out/data_report.json"));
  EXPECT_EQ(data["task"], "multi_label_classification");
  int medical = 0;
  for (const auto& row : JsonLines(ReadText(dir / "train.jsonl"))) {
    for (const auto& t : row["topics"]) medical += t == "medical";
  }
  EXPECT_EQ(data["train"]["label_counts"]["medical"], medical) << data;
  auto report = nlohmann::json::parse(ReadText(dir / "out/eval_report.json"));
  EXPECT_EQ(report["task"], "multi_label_classification");
  const auto& final = report["final"];
  for (const char* k : {"loss", "subset_accuracy", "hamming_loss", "micro_f1", "macro_f1", "micro_roc_auc"}) {
    EXPECT_TRUE(final.contains(k)) << k << " " << final;
  }
  EXPECT_EQ(final["count"], 40);
  ASSERT_EQ(final["per_label"].size(), 3u);
  EXPECT_EQ(final["per_label"][2]["label"], "medical");
  EXPECT_GT(final["micro_f1"].get<double>(), report["baseline"]["metrics"]["micro_f1"].get<double>()) << report;
  const std::string html = ReadText(dir / "out/eval_report.html");
  EXPECT_NE(html.find("Per label"), std::string::npos);
  EXPECT_NE(html.find("ROC curve (micro)"), std::string::npos);

  // An independent path: predict, then recompute the loss and Hamming loss.
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir / "out/model") + " --input " + (dir / "valid.jsonl") +
                      " --max_length 32 --output " + (dir / "pred.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  auto preds = JsonLines(ReadText(dir / "pred.jsonl"));
  auto truth = JsonLines(ReadText(dir / "valid.jsonl"));
  ASSERT_EQ(preds.size(), truth.size());
  double bce = 0;
  int wrong = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    auto probs = preds[i]["probs"].get<std::vector<double>>();
    ASSERT_EQ(probs.size(), 3u);
    std::vector<std::string> above = preds[i]["labels"];
    for (size_t c = 0; c < 3; ++c) {
      const std::string name = config["id2label"][std::to_string(c)];
      bool y = false;
      for (const auto& t : truth[i]["topics"]) y |= t == name;
      bce -= y ? std::log(probs[c]) : std::log(1 - probs[c]);
      const bool predicted = probs[c] > 0.5;
      wrong += predicted != y;
      EXPECT_EQ(std::find(above.begin(), above.end(), name) != above.end(), predicted);
    }
  }
  EXPECT_NEAR(final["loss"].get<double>(), bce / (3.0 * preds.size()), 1e-5);
  EXPECT_NEAR(final["hamming_loss"].get<double>(), wrong / (3.0 * preds.size()), 1e-12);
}

TEST(TaskTest, RegressionTrainsReportsAndPredicts) {
  TempDir dir("task_regression");
  testing::WriteRegressionData(dir / "train.csv", 160, 1);
  auto targets = testing::WriteRegressionData(dir / "valid.csv", 40, 2);
  // Rows whose score is not a finite number are dropped and counted.
  testing::WriteText(dir / "train.csv", ReadText(dir / "train.csv") + "the bank 1,abc\nthe bank 2,nan\nthe bank 3,1e999\n");
  testing::WriteText(dir / "spec.yaml", Spec(dir, "sequence_regression",
                                             "{train: " + (dir / "train.csv") + ", validation: " + (dir / "valid.csv") +
                                                 ", label_column: score, max_length: 32}",
                                             dir / "out"));
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "spec.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto config = nlohmann::json::parse(ReadText(dir / "out/model/config.json"));
  EXPECT_EQ(config["problem_type"], "regression");
  EXPECT_EQ(config["id2label"].size(), 1u);
  auto data = nlohmann::json::parse(ReadText(dir / "out/data_report.json"));
  EXPECT_EQ(data["train"]["dropped"]["invalid_number"], 3) << data;
  EXPECT_TRUE(data["train"].contains("targets")) << data;
  auto report = nlohmann::json::parse(ReadText(dir / "out/eval_report.json"));
  EXPECT_EQ(report["task"], "sequence_regression");
  const auto& final = report["final"];
  EXPECT_EQ(final["loss"], final["mse"]);
  EXPECT_GT(final["pearson"].get<double>(), 0.5) << final;
  EXPECT_LT(final["mse"].get<double>(), report["baseline"]["metrics"]["mse"].get<double>()) << report;

  auto p = RunCommand(Bin("attune") + " predict --model " + (dir / "out/model") + " --input " + (dir / "valid.csv") +
                      " --max_length 32 --output " + (dir / "pred.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  auto preds = JsonLines(ReadText(dir / "pred.jsonl"));
  ASSERT_EQ(preds.size(), targets.size());
  double se = 0, ae = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    const double d = preds[i]["score"].get<double>() - targets[i];
    EXPECT_EQ(preds[i]["logits"][0], preds[i]["score"]);
    se += d * d;
    ae += std::fabs(d);
  }
  EXPECT_NEAR(final["mse"].get<double>(), se / preds.size(), 1e-5);
  EXPECT_NEAR(final["mae"].get<double>(), ae / preds.size(), 1e-5);
}

TEST(TaskTest, UnknownTaskAndForeignMetricAreRefusedByName) {
  TempDir dir("task_bad");
  testing::WriteRegressionData(dir / "train.csv", 20, 1);
  const std::string data = "{train: " + (dir / "train.csv") + ", validation_split: 0.2, label_column: score}";
  testing::WriteText(dir / "a.yaml", Spec(dir, "sentiment_magic", data, dir / "a"));
  auto a = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "a.yaml"), 60);
  EXPECT_NE(a.exit_code, 0);
  EXPECT_NE(a.output.find("task.type: 'sentiment_magic' is not a task"), std::string::npos) << a.output;
  testing::WriteText(dir / "b.yaml",
                     Spec(dir, "sequence_regression", data, dir / "b", "{early_stopping: {metric: accuracy}}"));
  auto b = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "b.yaml"), 60);
  EXPECT_NE(b.exit_code, 0);
  EXPECT_NE(b.output.find("'accuracy' is not a metric of sequence_regression"), std::string::npos) << b.output;
}

}  // namespace
}  // namespace attune
