#include "worker/eval/metrics.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/eval/report.h"
#include "worker/eval/text_metrics.h"

namespace attune::worker::eval {
namespace {

EvalInput Binary(std::vector<int> labels, std::vector<double> p1) {
  EvalInput in;
  in.labels = std::move(labels);
  for (double p : p1) in.probs.push_back({1 - p, p});
  return in;
}

TEST(MetricsTest, HandComputedBinary) {
  // TP=2 (0.9, 0.6), FN=1 (0.4), FP=1 (0.7), TN=2.
  Metrics m = ComputeMetrics(Binary({1, 1, 1, 0, 0, 0}, {0.9, 0.6, 0.4, 0.7, 0.2, 0.1}));
  EXPECT_DOUBLE_EQ(m.accuracy, 4.0 / 6);
  EXPECT_DOUBLE_EQ(m.precision, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.recall, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.f1, 2.0 / 3);
  // Pairs (pos, neg) ranked right: 0.9>all 3, 0.6>0.2,0.1 (not 0.7), 0.4>0.2,0.1: 7 of 9.
  EXPECT_DOUBLE_EQ(m.roc_auc, 7.0 / 9);
  EXPECT_EQ(m.confusion, (std::vector<std::vector<int64_t>>{{2, 1}, {1, 2}}));
}

TEST(MetricsTest, TiesCountOneHalf) {
  Metrics m = ComputeMetrics(Binary({1, 0, 1, 0}, {0.5, 0.5, 0.8, 0.2}));
  // (0.5 vs 0.5) tie = 0.5; others ranked correctly: (0.5 > 0.2) (0.8 > 0.5) (0.8 > 0.2).
  EXPECT_DOUBLE_EQ(m.roc_auc, 3.5 / 4);
}

TEST(MetricsTest, MissingClassMarksAucUndefined) {
  Metrics m = ComputeMetrics(Binary({1, 1}, {0.9, 0.2}));
  EXPECT_FALSE(m.roc_auc_defined);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
}

TEST(MetricsTest, MatchesScikitLearn) {
  namespace fs = std::filesystem;
  fs::path out = fs::temp_directory_path() / ("attune_sk_" + std::to_string(::getpid()) + ".json");
  std::string cmd = std::string("/usr/bin/python3 ") + ATTUNE_SOURCE_DIR + "/tests/fixtures/sklearn_metrics.py " +
                    out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto cases = nlohmann::json::parse(std::ifstream(out));
  fs::remove(out);
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    EvalInput in;
    in.num_classes = c["num_classes"];
    in.labels = c["labels"].get<std::vector<int>>();
    in.probs = c["probs"].get<std::vector<std::vector<double>>>();
    Metrics m = ComputeMetrics(in);
    SCOPED_TRACE("classes " + std::to_string(in.num_classes) + ", n " + std::to_string(in.labels.size()));
    EXPECT_NEAR(m.accuracy, c["accuracy"].get<double>(), 1e-12);
    EXPECT_NEAR(m.precision, c["precision"].get<double>(), 1e-12);
    EXPECT_NEAR(m.recall, c["recall"].get<double>(), 1e-12);
    EXPECT_NEAR(m.f1, c["f1"].get<double>(), 1e-12);
    EXPECT_NEAR(m.micro_f1, c["micro_f1"].get<double>(), 1e-12);
    EXPECT_NEAR(m.macro_f1, c["macro_f1"].get<double>(), 1e-12);
    EXPECT_NEAR(m.roc_auc, c["roc_auc"].get<double>(), 1e-12);
    EXPECT_EQ(m.confusion, c["confusion"].get<std::vector<std::vector<int64_t>>>());
  }
}

TEST(TextMetricsTest, ExactMatchAndRougeLMatchTheSquadAndRougeScoreDefinitions) {
  namespace fs = std::filesystem;
  fs::path out = fs::temp_directory_path() / ("attune_text_metrics_" + std::to_string(::getpid()) + ".json");
  std::string cmd = std::string("/usr/bin/python3 ") + ATTUNE_SOURCE_DIR +
                    "/tests/fixtures/text_metrics_reference.py " + out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto cases = nlohmann::json::parse(std::ifstream(out));
  fs::remove(out);
  ASSERT_GT(cases.size(), 400u);
  int matches = 0, partial = 0;
  for (const auto& c : cases) {
    const std::string p = c["prediction"], r = c["reference"];
    SCOPED_TRACE("prediction '" + p + "', reference '" + r + "'");
    EXPECT_EQ(ExactMatch(p, r), c["exact_match"].get<double>());
    EXPECT_NEAR(RougeL(p, r), c["rouge_l"].get<double>(), 1e-12);
    matches += c["exact_match"].get<double>() == 1;
    partial += c["rouge_l"].get<double>() > 0 && c["rouge_l"].get<double>() < 1;
  }
  // The cases reach both outcomes of each score.
  EXPECT_GT(matches, 100);
  EXPECT_LT(matches, static_cast<int>(cases.size()) - 100);
  EXPECT_GT(partial, 50);
  EXPECT_EQ(NormalizeAnswer("  The  Answer, an ox! "), "answer ox");
  EXPECT_DOUBLE_EQ(RougeL("the cat sat", "cat the sat"), 2.0 / 3);
}

TEST(MetricsTest, MultiLabelAndRegressionMatchScikitLearnAndSciPy) {
  namespace fs = std::filesystem;
  fs::path out = fs::temp_directory_path() / ("attune_sk_tasks_" + std::to_string(::getpid()) + ".json");
  std::string cmd = std::string("/usr/bin/python3 ") + ATTUNE_SOURCE_DIR + "/tests/fixtures/sklearn_task_metrics.py " +
                    out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto cases = nlohmann::json::parse(std::ifstream(out));
  fs::remove(out);
  ASSERT_EQ(cases["multi_label"].size(), 3u);
  for (const auto& c : cases["multi_label"]) {
    MultiLabelInput in;
    in.num_labels = c["num_labels"];
    in.targets = c["targets"].get<std::vector<std::vector<int>>>();
    in.probs = c["probs"].get<std::vector<std::vector<double>>>();
    in.loss_sum = c["loss_sum"];
    Metrics m = ComputeMultiLabelMetrics(in);
    SCOPED_TRACE("labels " + std::to_string(in.num_labels) + ", n " + std::to_string(in.targets.size()));
    auto named = m.Named();
    for (const char* k : {"loss", "subset_accuracy", "hamming_loss", "micro_precision", "micro_recall", "micro_f1",
                          "macro_precision", "macro_recall", "macro_f1", "micro_roc_auc"}) {
      ASSERT_TRUE(named.count(k)) << k;
      EXPECT_NEAR(named[k], c[k].get<double>(), 1e-12) << k;
    }
    auto per_label = c["per_label_f1"].get<std::vector<double>>();
    ASSERT_EQ(m.per_label.size(), per_label.size());
    for (size_t i = 0; i < per_label.size(); ++i) EXPECT_NEAR(m.per_label[i].f1, per_label[i], 1e-12);
    // The loop state's round trip keeps every scalar.
    EXPECT_EQ(Metrics::FromNamed(m.task, m.count, named).Named(), named);
  }
  ASSERT_EQ(cases["regression"].size(), 2u);
  for (const auto& c : cases["regression"]) {
    RegressionInput in;
    in.targets = c["targets"].get<std::vector<double>>();
    in.predictions = c["predictions"].get<std::vector<double>>();
    Metrics m = ComputeRegressionMetrics(in);
    auto named = m.Named();
    for (const char* k : {"mse", "mae", "pearson", "spearman"}) EXPECT_NEAR(named[k], c[k].get<double>(), 1e-12) << k;
    EXPECT_EQ(named["loss"], named["mse"]);
    EXPECT_EQ(Metrics::FromNamed(m.task, m.count, named).Named(), named);
  }
}

TEST(MetricsTest, ConstantPredictionsHaveZeroCorrelation) {
  EXPECT_EQ(Pearson({1, 1, 1}, {1, 2, 3}), 0.0);
  EXPECT_EQ(Spearman({1, 2, 3}, {5, 5, 5}), 0.0);
  EXPECT_DOUBLE_EQ(Spearman({1, 2, 3}, {10, 20, 30}), 1.0);
}

TEST(ReportTest, JsonTableAndOfflineHtml) {
  ReportInput in;
  in.job_name = "j<1>";
  in.method = "lora";
  in.label_names = {"neg", "pos"};
  in.final_eval.metrics = ComputeMetrics(Binary({1, 0, 1, 0}, {0.9, 0.3, 0.6, 0.4}));
  in.evals = {{10, 0.5, in.final_eval.metrics}, {20, 1.0, in.final_eval.metrics}};
  in.train_loss = {{1, 0.7}, {2, 0.6}};
  auto j = nlohmann::json::parse(ReportJson(in));
  EXPECT_DOUBLE_EQ(j["final"]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(j["history"].size(), 2u);
  std::string table = ReportTable(in.final_eval.metrics, in.label_names);
  EXPECT_NE(table.find("accuracy           1.0000"), std::string::npos) << table;
  EXPECT_NE(table.find("macro_f1"), std::string::npos) << table;
  std::string html = ReportHtml(in);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("ROC curve"), std::string::npos);
  EXPECT_NE(html.find("j&lt;1&gt;"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no external resources
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

}  // namespace
}  // namespace attune::worker::eval
