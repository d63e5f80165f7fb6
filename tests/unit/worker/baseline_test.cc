#include "worker/baseline/text_baseline.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "tests/testing/process.h"
#include "worker/baseline/logreg.h"
#include "worker/baseline/tfidf.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"

namespace attune::worker::baseline {
namespace {

using ::testing::HasSubstr;

nlohmann::json Reference(const std::string& args, const std::string& input = "") {
  std::string cmd = "/usr/bin/python3 " + attune::testing::Fixture("tfidf_reference.py") + " " + args;
  if (!input.empty()) {
    attune::testing::TempDir dir("tfidf_in");
    attune::testing::WriteText(dir / "in.json", input);
    auto r = attune::testing::RunCommand(cmd + " < " + (dir / "in.json"), 120);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output);
  }
  auto r = attune::testing::RunCommand(cmd + " 2>/dev/null", 300);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output);
}

struct Texts {
  std::vector<std::string> texts;
  std::vector<std::string> labels;  // as read (';'-joined for lists)
};

Texts Read(const std::string& rel, const std::string& text, const std::string& label, bool list) {
  data::ReaderOptions ro;
  ro.text_column = text;
  ro.label_column = label;
  ro.label_list = list;
  auto records = data::ReadRecords(std::string(ATTUNE_SOURCE_DIR) + "/" + rel, ro);
  EXPECT_TRUE(records.ok()) << records.status();
  Texts out;
  for (const auto& r : *records) {
    out.texts.push_back(r.text.value_or(""));
    out.labels.push_back(r.label.value_or(""));
  }
  return out;
}

TEST(TfidfTest, TokensMatchScikitLearn) {
  const std::vector<std::string> cases = {
      "Don't stop believing!", "co-op e-mail x y zz", "ÉCOLE Café naïve—résumé", "snake_case 12 3 a1",
      "日本語 テキスト", "µg/ml 1½ cups", "tabs\tand\nnewlines", "", "  ...  ", "ÀÖØÞ àöøþ ×÷"};
  nlohmann::json ref = Reference("tokens", nlohmann::json(cases).dump());
  ASSERT_EQ(ref.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(WordTokens(cases[i]), ref[i].get<std::vector<std::string>>()) << cases[i];
}

TEST(TfidfTest, RowsAreUnitLengthAndMinDfDropsRareGrams) {
  TfidfVectorizer vec;
  vec.Fit({"good food here", "good food there", "bad food"});
  // Kept (in two or more documents): "food", "good", "good food".
  EXPECT_EQ(vec.features(), 3u);
  SparseRows x = vec.Transform({"good food good", "nothing known"});
  ASSERT_EQ(x.rows(), 2u);
  double norm = 0;
  for (int64_t k = x.offsets[0]; k < x.offsets[1]; ++k) norm += x.vals[static_cast<size_t>(k)] * x.vals[static_cast<size_t>(k)];
  EXPECT_NEAR(norm, 1.0, 1e-12);
  EXPECT_EQ(x.offsets[2], x.offsets[1]);  // an unknown text is an empty row, not a NaN
}

TEST(LogisticRegressionTest, RefusesBadInputNamingIt) {
  SparseRows x;
  x.cols = {0};
  x.vals = {1.0};
  x.offsets = {0, 1};
  LogisticRegression lr;
  EXPECT_THAT(lr.Fit(x, {0}, 1, 1, {}).message(), HasSubstr("2+ classes"));
  EXPECT_THAT(lr.Fit(x, {0, 1}, 2, 1, {}).message(), HasSubstr("1 rows but 2 labels"));
  EXPECT_THAT(lr.Fit(x, {3}, 2, 1, {}).message(), HasSubstr("label 3 out of range"));
  LogRegOptions bad;
  bad.c = 0;
  EXPECT_THAT(lr.Fit(x, {1}, 2, 1, bad).message(), HasSubstr("C must be positive"));
}

TEST(LogisticRegressionTest, SeparatesThreeClasses) {
  // Feature k marks class k; the softmax model puts most mass on it.
  SparseRows x;
  std::vector<int> y;
  for (int i = 0; i < 30; ++i) {
    x.cols.push_back(i % 3);
    x.vals.push_back(1.0);
    x.offsets.push_back(static_cast<int64_t>(x.cols.size()));
    y.push_back(i % 3);
  }
  LogisticRegression lr;
  LogRegOptions o;
  o.c = 10;
  ASSERT_TRUE(lr.Fit(x, y, 3, 3, o).ok());
  EXPECT_TRUE(lr.converged());
  auto p = lr.PredictProba(x);
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_NEAR(p[i][0] + p[i][1] + p[i][2], 1.0, 1e-12);
    EXPECT_GT(p[i][static_cast<size_t>(y[i])], 0.8);
  }
}

TEST(TextBaselineTest, TextsWithNoFeaturesGiveThePrior) {
  auto r = FitTfidfLogReg({"", "!", "?", "", "...", ""}, {0, 0, 0, 0, 1, 1}, 2, {"", "x"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->features, 0u);
  ASSERT_EQ(r->probs.size(), 2u);
  EXPECT_NEAR(r->probs[0][1], 2.0 / 6, 1e-4);
}

// The whole procedure (features, the choice of C on training data alone, the
// final fit) against scikit-learn on the bundled fine-food reviews.
TEST(TextBaselineTest, MatchesScikitLearnOnFineFoods) {
  Texts train = Read("examples/data/fine_foods/train.csv", "review", "score", false);
  Texts valid = Read("examples/data/fine_foods/test.csv", "review", "score", false);
  std::vector<std::string> names = train.labels;
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  ASSERT_EQ(names.size(), 2u);
  auto id = [&](const std::string& l) { return static_cast<int>(std::find(names.begin(), names.end(), l) - names.begin()); };
  std::vector<int> yt, yv;
  for (const auto& l : train.labels) yt.push_back(id(l));
  for (const auto& l : valid.labels) yv.push_back(id(l));

  auto r = FitTfidfLogReg(train.texts, yt, 2, valid.texts);
  ASSERT_TRUE(r.ok()) << r.status();
  eval::EvalInput in;
  in.num_classes = 2;
  in.labels = yv;
  in.probs = r->probs;
  eval::Metrics m = eval::ComputeMetrics(in);

  nlohmann::json ref = Reference("single " + std::string(ATTUNE_SOURCE_DIR) + "/examples/data/fine_foods/train.csv " +
                                 ATTUNE_SOURCE_DIR + "/examples/data/fine_foods/test.csv review score");
  std::printf("ours: C %g, %zu features, accuracy %.4f, roc_auc %.4f, f1 %.4f in %.2f s; scikit-learn: %s\n", r->c,
              r->features, m.accuracy, m.roc_auc, m.f1, r->seconds, ref.dump().c_str());
  EXPECT_EQ(r->c, ref["c"].get<double>());
  EXPECT_EQ(r->features, ref["features"].get<size_t>());
  EXPECT_TRUE(r->converged);
  EXPECT_NEAR(m.accuracy, ref["accuracy"].get<double>(), 0.01);
  EXPECT_NEAR(m.roc_auc, ref["roc_auc"].get<double>(), 0.01);
  EXPECT_NEAR(m.f1, ref["f1"].get<double>(), 0.01);
  EXPECT_NEAR(m.macro_f1, ref["macro_f1"].get<double>(), 0.01);
}

TEST(TextBaselineTest, MultiLabelMatchesScikitLearnOnSpdx) {
  Texts train = Read("examples/data/spdx/train.jsonl", "text", "labels", true);
  Texts valid = Read("examples/data/spdx/valid.jsonl", "text", "labels", true);
  std::set<std::string> all;
  auto split = [](const std::string& s) {
    std::vector<std::string> out;
    for (absl::string_view p : absl::StrSplit(s, ';', absl::SkipEmpty())) out.emplace_back(p);
    return out;
  };
  for (const auto& l : train.labels) {
    for (const auto& n : split(l)) all.insert(n);
  }
  std::vector<std::string> names(all.begin(), all.end());
  auto ids = [&](const std::string& l) {
    std::vector<int> out;
    for (const auto& n : split(l)) {
      auto it = std::find(names.begin(), names.end(), n);
      if (it != names.end()) out.push_back(static_cast<int>(it - names.begin()));
    }
    return out;
  };
  std::vector<std::vector<int>> yt, yv;
  for (const auto& l : train.labels) yt.push_back(ids(l));
  for (const auto& l : valid.labels) yv.push_back(ids(l));
  const int k = static_cast<int>(names.size());
  auto r = FitTfidfLogRegMultiLabel(train.texts, yt, k, valid.texts);
  ASSERT_TRUE(r.ok()) << r.status();
  eval::MultiLabelInput in;
  in.num_labels = k;
  for (const auto& l : yv) {
    std::vector<int> t(static_cast<size_t>(k), 0);
    for (int c : l) t[static_cast<size_t>(c)] = 1;
    in.targets.push_back(t);
  }
  in.probs = r->probs;
  eval::Metrics m = eval::ComputeMultiLabelMetrics(in);

  nlohmann::json ref = Reference("multi " + std::string(ATTUNE_SOURCE_DIR) + "/examples/data/spdx/train.jsonl " +
                                 ATTUNE_SOURCE_DIR + "/examples/data/spdx/valid.jsonl text labels");
  std::printf("ours: C %g, %zu features, micro_f1 %.4f, macro_f1 %.4f in %.2f s; scikit-learn: %s\n", r->c,
              r->features, m.micro_f1, m.macro_f1, r->seconds, ref.dump().c_str());
  EXPECT_EQ(r->c, ref["c"].get<double>());
  EXPECT_EQ(r->features, ref["features"].get<size_t>());
  EXPECT_NEAR(m.micro_f1, ref["micro_f1"].get<double>(), 0.01);
  EXPECT_NEAR(m.macro_f1, ref["macro_f1"].get<double>(), 0.01);
  EXPECT_NEAR(m.subset_accuracy, ref["subset_accuracy"].get<double>(), 0.01);
}

}  // namespace
}  // namespace attune::worker::baseline
