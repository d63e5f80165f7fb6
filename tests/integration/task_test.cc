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
#include "tests/testing/weights.h"

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
  EXPECT_GT(final["micro_f1"].get<double>(), report["trivial_baseline"]["micro_f1"].get<double>()) << report;
  EXPECT_EQ(report["trivial_baseline"]["method"], "label_frequency") << report;
  // Multi-label data gets the one-vs-rest TF-IDF baseline too.
  EXPECT_EQ(report["baseline"]["method"], "tfidf_logreg") << report;
  EXPECT_TRUE(report["baseline"].contains("micro_f1")) << report;
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
  EXPECT_LT(final["mse"].get<double>(), report["baseline"]["mse"].get<double>()) << report;

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

  // --device cpu is the default and gives the same file; a GPU that this
  // build or machine cannot give is refused with the reason, and --output is
  // left as it was.
  auto same = RunCommand(Bin("attune") + " predict --device cpu --model " + (dir / "out/model") + " --input " +
                         (dir / "valid.csv") + " --max_length 32 --output " + (dir / "pred-cpu.jsonl"));
  ASSERT_EQ(same.exit_code, 0) << same.output;
  EXPECT_EQ(ReadText(dir / "pred-cpu.jsonl"), ReadText(dir / "pred.jsonl"));
  auto gpu = RunCommand(Bin("attune") + " predict --device cuda --model " + (dir / "out/model") + " --input " +
                        (dir / "valid.csv") + " --output " + (dir / "pred.jsonl"));
  if (gpu.exit_code != 0) {
    EXPECT_NE(gpu.output.find("no CUDA device is usable here"), std::string::npos) << gpu.output;
    EXPECT_EQ(ReadText(dir / "pred-cpu.jsonl"), ReadText(dir / "pred.jsonl")) << "a refused run left --output alone";
  }
  auto bad = RunCommand(Bin("attune") + " predict --device tpu --model " + (dir / "out/model") + " --input " +
                        (dir / "valid.csv"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("'tpu' is not cpu, cuda or cuda:N"), std::string::npos) << bad.output;
}

// masked_lm on plain-text files: the exported model is a BertForMaskedLM in
// HF's layout, the report's final figures equal those an independent Python
// script recomputes from the exported model (its own tokenizer, grouping,
// evaluation mask and forward pass), fill-mask works, and the model serves as
// model.path for another task: the encoder is loaded, the new head is fresh.
TEST(TaskTest, MaskedLmTrainsReportsPredictsAndSeedsAClassifier) {
  TempDir dir("task_mlm");
  testing::WriteMultiLabelData(dir / "all.jsonl", 160, 1);
  testing::WriteMultiLabelData(dir / "valid.jsonl", 120, 2);
  // Training text: two .txt files in a directory, one paragraph per row
  // (two lines each), blank lines between; labels play no part.
  std::filesystem::create_directories(dir / "text");
  std::string a, b;
  int i = 0;
  for (const auto& row : JsonLines(ReadText(dir / "all.jsonl"))) {
    std::string t = row["text"];
    const size_t cut = t.find(' ', t.size() / 2);
    (i++ % 2 ? b : a) += t.substr(0, cut) + "\n" + t.substr(cut + 1) + "\n\n";
  }
  testing::WriteText(dir / "text/a.txt", a);
  testing::WriteText(dir / "text/b.txt", "\n\n" + b);
  testing::WriteText(dir / "text/ignored.md", "not read");
  testing::WriteText(dir / "spec.yaml",
                     Spec(dir, "masked_lm", "{train: " + (dir / "text") + ", validation: " + (dir / "valid.jsonl") +
                                                ", max_length: 24}",
                          dir / "out"));
  std::string mlm = ReadText(dir / "spec.yaml");
  mlm.replace(mlm.find("epochs: 4"), 9, "epochs: 25");
  mlm.replace(mlm.find("learning_rate: 3.0e-3"), 21, "learning_rate: 1.0e-2");
  testing::WriteText(dir / "spec.yaml", mlm);
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "spec.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("perplexity"), std::string::npos) << r.output;

  auto data = nlohmann::json::parse(ReadText(dir / "out/data_report.json"));
  EXPECT_EQ(data["task"], "masked_lm");
  EXPECT_EQ(data["train"]["rows_read"], 160) << data;
  auto config = nlohmann::json::parse(ReadText(dir / "out/model/config.json"));
  EXPECT_EQ(config["architectures"], nlohmann::json::array({"BertForMaskedLM"}));
  EXPECT_EQ(config["tie_word_embeddings"], true);
  auto weights = testing::Weights(dir / "out/model/model.safetensors");
  for (const char* k : {"cls.predictions.bias", "cls.predictions.transform.dense.weight",
                        "cls.predictions.transform.LayerNorm.weight", "bert.embeddings.word_embeddings.weight"}) {
    EXPECT_TRUE(weights.count(k)) << k;
  }
  for (const char* k : {"cls.predictions.decoder.weight", "bert.pooler.dense.weight", "classifier.weight"}) {
    EXPECT_FALSE(weights.count(k)) << k;
  }

  auto report = nlohmann::json::parse(ReadText(dir / "out/eval_report.json"));
  EXPECT_EQ(report["task"], "masked_lm");
  const auto& final = report["final"];
  EXPECT_EQ(final["masked_tokens"], final["count"]);
  EXPECT_NEAR(final["perplexity"].get<double>(), std::exp(final["loss"].get<double>()), 1e-9);
  // The texts repeat a few topic words: context helps, so the model beats the unigram baseline.
  EXPECT_LT(final["loss"].get<double>(), report["baseline"]["loss"].get<double>()) << report;
  EXPECT_NE(ReadText(dir / "out/eval_report.html").find("masked tokens"), std::string::npos);

  auto ref = RunCommand("/usr/bin/python3 " + testing::Fixture("mlm_eval_reference.py") + " " + (dir / "out/model") +
                        " " + (dir / "valid.jsonl") + " --max_length 24 --seed 3");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto want = nlohmann::json::parse(ref.output.substr(ref.output.rfind('{')));
  EXPECT_EQ(final["count"], want["count"]);
  EXPECT_EQ(final["sequences"], want["sequences"]);
  EXPECT_NEAR(final["loss"].get<double>(), want["loss"].get<double>(), 1e-5);
  EXPECT_NEAR(final["accuracy"].get<double>(), want["accuracy"].get<double>(), 1e-12);

  testing::WriteText(dir / "fill.jsonl", "{\"text\": \"the bank [MASK] rates\"}\n");
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir / "out/model") + " --input " + (dir / "fill.jsonl") +
                      " --top_k 3");
  ASSERT_EQ(p.exit_code, 0) << p.output;
  auto fill = nlohmann::json::parse(p.output.substr(p.output.find('{')));
  ASSERT_EQ(fill["masks"].size(), 1u) << fill;
  EXPECT_EQ(fill["masks"][0]["index"], 3);
  ASSERT_EQ(fill["masks"][0]["top_k"].size(), 3u);
  EXPECT_GE(fill["masks"][0]["top_k"][0]["score"].get<double>(), fill["masks"][0]["top_k"][1]["score"].get<double>());

  // The MLM model as model.path of a classifier, head-only: the encoder is
  // the MLM's, bit for bit, and the new head is reported as fresh.
  std::string spec = Spec(dir, "multi_label_classification",
                          "{train: " + (dir / "all.jsonl") + ", validation: " + (dir / "valid.jsonl") +
                              ", label_column: topics, max_length: 24}",
                          dir / "cls");
  spec.replace(spec.find("model:"), spec.find("data:") - spec.find("model:"), "model: {path: " + (dir / "out/model") + "}\n");
  spec.replace(spec.find("{type: full}"), 12, "{type: head}");
  testing::WriteText(dir / "cls.yaml", spec);
  auto c = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "cls.yaml"), 300);
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(c.output.find("freshly initialised (not in checkpoint): classifier.weight"), std::string::npos) << c.output;
  auto tuned = testing::Weights(dir / "cls/model/model.safetensors");
  EXPECT_EQ(tuned.at("bert.encoder.layer.1.output.dense.weight"), weights.at("bert.encoder.layer.1.output.dense.weight"));
  EXPECT_EQ(tuned.at("bert.embeddings.word_embeddings.weight"), weights.at("bert.embeddings.word_embeddings.weight"));
  EXPECT_FALSE(tuned.count("cls.predictions.bias"));
}

// token_classification from CoNLL training data: the exported model is a
// BertForTokenClassification, and the report's entity-level figures equal
// those an independent seqeval-semantics script computes from `attune
// predict`'s tags.
TEST(TaskTest, TokenClassificationTrainsReportsAndPredicts) {
  TempDir dir("task_ner");
  testing::WriteNerData(dir / "train.conll", 240, 1);
  testing::WriteNerData(dir / "valid.jsonl", 60, 2);
  std::string spec = Spec(dir, "token_classification",
                          "{train: " + (dir / "train.conll") + ", validation: " + (dir / "valid.jsonl") +
                              ", text_column: words, label_column: tags, max_length: 32}",
                          dir / "out");
  spec.replace(spec.find("epochs: 4"), 9, "epochs: 8");
  testing::WriteText(dir / "spec.yaml", spec);
  auto r = RunCommand(Bin("attune-worker") + " train --spec " + (dir / "spec.yaml"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("entity type"), std::string::npos) << r.output;

  auto config = nlohmann::json::parse(ReadText(dir / "out/model/config.json"));
  EXPECT_EQ(config["architectures"], nlohmann::json::array({"BertForTokenClassification"}));
  EXPECT_EQ(config["id2label"].size(), 6u) << config;  // O, B-DRUG, and B-/I- of DISEASE and ORG
  auto weights = testing::Weights(dir / "out/model/model.safetensors");
  EXPECT_TRUE(weights.count("classifier.weight"));
  EXPECT_FALSE(weights.count("bert.pooler.dense.weight"));
  auto data = nlohmann::json::parse(ReadText(dir / "out/data_report.json"));
  EXPECT_EQ(data["train"]["rows_read"], 240) << data;
  EXPECT_GT(data["train"]["label_counts"]["B-DRUG"].get<int>(), 0) << data;

  auto report = nlohmann::json::parse(ReadText(dir / "out/eval_report.json"));
  const auto& final = report["final"];
  EXPECT_EQ(report["task"], "token_classification");
  EXPECT_EQ(final["sentences"], 60);
  ASSERT_EQ(final["per_type"].size(), 3u) << final;
  EXPECT_EQ(final["per_type"][0]["type"], "DISEASE");
  EXPECT_GT(final["f1"].get<double>(), 0.7) << final;
  EXPECT_TRUE(report["baseline"].contains("f1")) << report["baseline"];
  EXPECT_EQ(report["baseline"]["method"], "most_frequent_tag") << report["baseline"];
  EXPECT_NE(ReadText(dir / "out/eval_report.html").find("Per entity type"), std::string::npos);

  // The independent path: predict from {"tokens": [...]}, score with the Python seqeval semantics.
  std::string tokens;
  for (const auto& row : JsonLines(ReadText(dir / "valid.jsonl"))) {
    tokens += nlohmann::json({{"tokens", row["words"]}}).dump() + "\n";
  }
  testing::WriteText(dir / "tokens.jsonl", tokens);
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir / "out/model") + " --input " + (dir / "tokens.jsonl") +
                      " --output " + (dir / "pred.jsonl"));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  auto ref = RunCommand("/usr/bin/python3 " + testing::Fixture("seqeval_reference.py") + " " + (dir / "pred.jsonl") +
                        " " + (dir / "valid.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto want = nlohmann::json::parse(ref.output.substr(ref.output.find("{\"precision")));
  for (const char* k : {"precision", "recall", "f1", "accuracy"}) {
    EXPECT_NEAR(final[k].get<double>(), want[k].get<double>(), 1e-12) << k;
  }
  EXPECT_EQ(final["words"], want["words"]);
  for (const auto& t : final["per_type"]) {
    EXPECT_NEAR(t["f1"].get<double>(), want["per_type"][t["type"].get<std::string>()]["f1"].get<double>(), 1e-12);
  }
  // Entities name their words; a text input is split by the basic tokenizer.
  auto first = JsonLines(ReadText(dir / "pred.jsonl")).at(0);
  for (const auto& e : first["entities"]) {
    std::string span;
    for (int w = e["start"]; w < e["end"].get<int>(); ++w) span += (span.empty() ? "" : " ") + first["tokens"][w].get<std::string>();
    EXPECT_EQ(e["text"], span);
  }
  testing::WriteText(dir / "text.jsonl", "{\"text\": \"The patient was given aspirin for chest pain.\"}\n");
  auto t = RunCommand(Bin("attune") + " predict --model " + (dir / "out/model") + " --input " + (dir / "text.jsonl"));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  auto line = nlohmann::json::parse(t.output.substr(t.output.find("{\"entities")));
  EXPECT_EQ(line["tokens"].size(), 9u) << line;  // the period is a word of its own
  EXPECT_EQ(line["logits"][0].size(), 6u);
}

// NOTE [masking] in worker/task/masked_lm.cc: masks are drawn from (seed,
// epoch, example), so a run killed after a checkpoint and resumed (across an
// epoch boundary, where the masks change) ends bitwise equal to an
// uninterrupted one.
TEST(TaskTest, MaskedLmResumesExactly) {
  TempDir dir("task_mlm_resume");
  testing::WriteMultiLabelData(dir / "train.jsonl", 60, 1);
  testing::WriteMultiLabelData(dir / "valid.jsonl", 20, 2);
  auto spec = [&](const std::string& out) {
    std::string s = Spec(dir, "masked_lm",
                         "{train: " + (dir / "train.jsonl") + ", validation: " + (dir / "valid.jsonl") +
                             ", max_length: 16}",
                         dir / out);
    s.replace(s.find("every_steps: 20"), 15, "every_steps: 5");
    s.replace(s.find("task: {type: masked_lm}"), 23, "task: {type: masked_lm, whole_word_mask: true}");
    testing::WriteText(dir / (out + ".yaml"), s);
    return dir / (out + ".yaml");
  };
  auto whole = RunCommand(Bin("attune-worker") + " train --spec " + spec("whole"), 300);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto crashed = RunCommand(Bin("attune-worker") + " train --spec " + spec("resumed") + " --abort_after_step=12", 300);
  ASSERT_NE(crashed.exit_code, 0);
  auto resumed = RunCommand(Bin("attune-worker") + " train --spec " + spec("resumed"), 300);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_EQ(testing::MaxAbsDiff(dir / "whole/model/model.safetensors", dir / "resumed/model/model.safetensors"), 0.0);
  auto a = nlohmann::json::parse(ReadText(dir / "whole/eval_report.json"));
  auto b = nlohmann::json::parse(ReadText(dir / "resumed/eval_report.json"));
  EXPECT_EQ(a["final"], b["final"]);
  EXPECT_GT(a["train_loss"].size(), 15u);  // more than one epoch: the resume crossed an epoch boundary
  // Whole-word masking, recomputed independently.
  auto ref = RunCommand("/usr/bin/python3 " + testing::Fixture("mlm_eval_reference.py") + " " +
                        (dir / "whole/model") + " " + (dir / "valid.jsonl") + " --max_length 16 --seed 3 --whole_word_mask");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto want = nlohmann::json::parse(ref.output.substr(ref.output.rfind('{')));
  EXPECT_EQ(a["final"]["count"], want["count"]);
  EXPECT_NEAR(a["final"]["loss"].get<double>(), want["loss"].get<double>(), 1e-5);
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
