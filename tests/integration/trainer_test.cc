// attune-worker train end to end on small generated data: resume equals an
// uninterrupted run, accumulation equals a bigger batch, freezing freezes,
// merged LoRA equals unmerged, bad input fails clearly.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/testing/process.h"
#include "tests/testing/weights.h"

namespace attune {
namespace {

using testing::Bin;
using testing::Fixture;
using testing::RunCommand;
using testing::LogitLines;
using testing::MaxAbsDiff;
using testing::TempDir;
using testing::Weights;

// Short texts whose label depends on the words, from the tiny model's vocabulary.
void WriteData(const std::string& path, int n, int seed, bool three_classes) {
  const std::vector<std::vector<std::string>> words = {
      {"patient", "aspirin", "fever", "chest", "pain"},
      {"bank", "loan", "interest", "rates", "pay"},
      {"court", "license", "rights", "contract", "party"}};
  const std::vector<std::string> names = {"medical", "finance", "legal"};
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::ostringstream out;
  out << "text,label\n";
  const int k = three_classes ? 3 : 2;
  for (int i = 0; i < n; ++i) {
    int y = i % k;
    std::string text = "the";
    for (int w = 0; w < 4; ++w) text += " " + words[static_cast<size_t>(y)][rng() % 5];
    text += " " + words[static_cast<size_t>((y + 1) % k)][rng() % 5] + " " + std::to_string(i);
    out << text << "," << names[static_cast<size_t>(y)] << "\n";
  }
  testing::WriteText(path, out.str());
}

std::string Spec(const TempDir& dir, const std::string& extra_model, const std::string& method,
                 const std::string& hyper, const std::string& out) {
  return "name: t\n" + extra_model + "data: {train: " + (dir / "train.csv") + ", validation: " + (dir / "valid.csv") +
         ", max_length: 32}\nmethod: " + method + "\nhyperparameters: {" + hyper +
         "}\nevaluation: {every_steps: 4}\ncheckpoint: {every_steps: 3}\noutput_dir: " + out + "\n";
}

constexpr char kTinyConfig[] =
    "model:\n  config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,"
    " max_position_embeddings: 64, hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1}\n  vocab_size: 200\n";

testing::CommandResult Train(const TempDir& dir, const std::string& name, const std::string& spec,
                             const std::string& flags = "") {
  testing::WriteText(dir / (name + ".yaml"), spec);
  return RunCommand(Bin("attune-worker") + " train --spec " + (dir / (name + ".yaml")) + " " + flags, 300);
}

class TrainerTest : public ::testing::Test {
 protected:
  TrainerTest() : dir_("trainer_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    WriteData(dir_ / "train.csv", 96, 1, false);
    WriteData(dir_ / "valid.csv", 37, 2, false);
  }
  TempDir dir_;
};

TEST_F(TrainerTest, ResumedRunEndsWithTheSameWeights) {
  const std::string hyper =
      "epochs: 2, batch_size: 8, learning_rate: 3.0e-3, warmup_steps: 3, weight_decay: 0.01, seed: 5";
  std::string a = dir_ / "a", b = dir_ / "b";
  auto full = Train(dir_, "a", Spec(dir_, kTinyConfig, "{type: full}", hyper, a));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  // Run B dies after step 8 (last committed checkpoint: step 6), then resumes.
  auto crashed = Train(dir_, "b", Spec(dir_, kTinyConfig, "{type: full}", hyper, b), "--abort_after_step=8");
  ASSERT_NE(crashed.exit_code, 0);
  ASSERT_NE(crashed.output.find("aborted after step 8"), std::string::npos) << crashed.output;
  auto resumed = Train(dir_, "b", Spec(dir_, kTinyConfig, "{type: full}", hyper, b));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step 6"), std::string::npos) << resumed.output;
  auto wa = Weights(a + "/model/model.safetensors"), wb = Weights(b + "/model/model.safetensors");
  ASSERT_FALSE(wa.empty());
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, v] : wa) EXPECT_EQ(MaxAbsDiff(v, wb[name]), 0.0) << name;
  // The eval report and data report are written.
  auto report = nlohmann::json::parse(testing::ReadText(a + "/eval_report.json"));
  EXPECT_EQ(report["final"]["count"], 37);
  EXPECT_TRUE(std::filesystem::exists(a + "/eval_report.html"));
  EXPECT_TRUE(std::filesystem::exists(a + "/data_report.json"));
}

// NOTE [resume] in worker/train/trainer.cc.
TEST_F(TrainerTest, ResumeFallsBackPastUnloadableCheckpointsAndRefusesAnotherLabelMap) {
  const std::string hyper = "epochs: 2, batch_size: 8, learning_rate: 3.0e-3, seed: 5";
  const std::string out = dir_ / "r";
  auto crashed = Train(dir_, "r", Spec(dir_, kTinyConfig, "{type: full}", hyper, out), "--abort_after_step=8");
  ASSERT_NE(crashed.exit_code, 0);
  const std::string step3 = out + "/checkpoints/step-000000003", step6 = out + "/checkpoints/step-000000006";
  ASSERT_TRUE(std::filesystem::exists(step3) && std::filesystem::exists(step6));
  // Step 6: optimizer.pt truncated before commit, so its manifest (rewritten to match) verifies.
  ASSERT_EQ(RunCommand("truncate -s 100 " + step6 + "/optimizer.pt && /usr/bin/python3 -c \"import hashlib,json,os,sys;"
                       "d=sys.argv[1];m=json.load(open(d+'/manifest.json'));p=d+'/optimizer.pt';"
                       "m['files']['optimizer.pt']={'sha256':hashlib.sha256(open(p,'rb').read()).hexdigest(),"
                       "'bytes':os.path.getsize(p)};json.dump(m,open(d+'/manifest.json','w'))\" " + step6)
                .exit_code,
            0);
  // Another label order for the same data is refused, naming both.
  auto relabelled = Train(dir_, "r2", "name: t\n" + std::string(kTinyConfig) + "data: {train: " + (dir_ / "train.csv") +
                                          ", validation: " + (dir_ / "valid.csv") +
                                          ", max_length: 32, labels: [medical, finance]}\nmethod: {type: full}\n"
                                          "hyperparameters: {" + hyper + "}\ncheckpoint: {every_steps: 3}\n"
                                          "output_dir: " + out + "\n");
  EXPECT_EQ(relabelled.exit_code, 65) << relabelled.output;
  EXPECT_NE(relabelled.output.find("was trained with labels [finance, medical]; this run's are [medical, finance]"),
            std::string::npos)
      << relabelled.output;
  // The same run resumes from step 3, past the unloadable step 6.
  auto resumed = Train(dir_, "r", Spec(dir_, kTinyConfig, "{type: full}", hyper, out));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("cannot resume from " + step6), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from " + step3 + " at step 3"), std::string::npos) << resumed.output;
  // A manifest that lists nothing verifies nothing: it is skipped, not trusted.
  std::filesystem::create_directories(out + "/checkpoints/step-000000099");
  testing::WriteText(out + "/checkpoints/step-000000099/manifest.json", "{\"step\": 99, \"files\": {}}");
  auto again = Train(dir_, "r", Spec(dir_, kTinyConfig, "{type: full}", hyper, out));
  EXPECT_NE(again.output.find("step-000000099/manifest.json does not list model.safetensors"), std::string::npos)
      << again.output;
}

// NOTE [mixed precision]: bf16 autocast trains as fp32 does, within bf16's
// rounding (8-bit mantissa: about 0.4% per product), and every report says
// which numerics produced it.
TEST_F(TrainerTest, Bf16TrainsLikeFp32AndSaysSo) {
  const std::string hyper = "epochs: 3, batch_size: 8, learning_rate: 5.0e-3, seed: 3";
  auto f = Train(dir_, "fp32", Spec(dir_, kTinyConfig, "{type: full}", hyper, dir_ / "fp32"));
  ASSERT_EQ(f.exit_code, 0) << f.output;
  auto b = Train(dir_, "bf16", Spec(dir_, kTinyConfig, "{type: full}", hyper + ", precision: bf16", dir_ / "bf16"));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("precision=bf16"), std::string::npos) << b.output;
  auto rf = nlohmann::json::parse(testing::ReadText(dir_ / "fp32/eval_report.json"));
  auto rb = nlohmann::json::parse(testing::ReadText(dir_ / "bf16/eval_report.json"));
  EXPECT_EQ(rf["precision"], "fp32");
  EXPECT_EQ(rb["precision"], "bf16");
  const double lf = rf["final"]["loss"].get<double>(), lb = rb["final"]["loss"].get<double>();
  EXPECT_NEAR(lb, lf, 0.1 * lf + 0.01) << "fp32 " << rf["final"] << "\nbf16 " << rb["final"];
  EXPECT_GE(rb["final"]["accuracy"].get<double>(), rf["final"]["accuracy"].get<double>() - 0.06);
  // Not the same run: the matrix products really ran in bf16.
  EXPECT_NE(lb, lf);
  // The exported weights are fp32 (master weights), whatever the training precision.
  auto w = Weights(dir_ / "bf16/model/model.safetensors");
  EXPECT_FALSE(w.empty());
}

TEST_F(TrainerTest, AccumulationEqualsTheLargerBatch) {
  const std::string base = "epochs: 1, learning_rate: 3.0e-3, seed: 5, ";
  std::string nodrop =
      "model:\n  config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32,"
      " max_position_embeddings: 64, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}\n  vocab_size: 200\n";
  auto big = Train(dir_, "big", Spec(dir_, nodrop, "{type: full}", base + "batch_size: 8", dir_ / "big"));
  ASSERT_EQ(big.exit_code, 0) << big.output;
  auto acc = Train(dir_, "acc",
                   Spec(dir_, nodrop, "{type: full}", base + "batch_size: 4, gradient_accumulation_steps: 2", dir_ / "acc"));
  ASSERT_EQ(acc.exit_code, 0) << acc.output;
  auto w1 = Weights(dir_ / "big/model/model.safetensors"), w2 = Weights(dir_ / "acc/model/model.safetensors");
  ASSERT_FALSE(w1.empty());
  for (const auto& [name, v] : w1) EXPECT_LT(MaxAbsDiff(v, w2[name]), 1e-5) << name;
}

TEST_F(TrainerTest, NonFiniteLossStopsWithTheStepAndNoCheckpoint) {
  std::string exploding =
      "model:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32,"
      " max_position_embeddings: 64, initializer_range: 1.0e+30}\n  vocab_size: 200\n";
  auto r = Train(dir_, "nan", Spec(dir_, exploding, "{type: full}", "epochs: 1, batch_size: 8", dir_ / "nan"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("non-finite loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("at step 1"), std::string::npos) << r.output;
  int committed = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / "nan/checkpoints")) {
    committed += e.path().filename().string().rfind("step-", 0) == 0;
  }
  EXPECT_EQ(committed, 0);
}

TEST_F(TrainerTest, CorruptDataFailsWithFileAndLine) {
  testing::WriteText(dir_ / "train.csv", "text,label\nfine,a\n\"broken,b\n");
  auto r = Train(dir_, "bad", Spec(dir_, kTinyConfig, "{type: full}", "epochs: 1", dir_ / "bad"));
  EXPECT_EQ(r.exit_code, 65) << r.output;
  EXPECT_NE(r.output.find("train.csv:3: unterminated quoted field"), std::string::npos) << r.output;
}

TEST_F(TrainerTest, FullDiskStopsWithExit73AndLeavesNoPartialCheckpoint) {
  // A 96 KiB tmpfs holds the data report and the weights, not the optimizer state.
  const std::string disk = dir_ / "disk";
  std::filesystem::create_directories(disk);
  if (RunCommand("mount -t tmpfs -o size=96k tmpfs " + disk).exit_code != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root)";
  }
  auto r = Train(dir_, "full", Spec(dir_, kTinyConfig, "{type: full}", "epochs: 1, batch_size: 8", disk + "/out"));
  std::vector<std::string> left;
  if (std::filesystem::exists(disk + "/out/checkpoints")) {
    for (const auto& e : std::filesystem::directory_iterator(disk + "/out/checkpoints")) left.push_back(e.path());
  }
  RunCommand("umount " + disk);
  EXPECT_EQ(r.exit_code, 73) << r.output;
  EXPECT_NE(r.output.find("RESOURCE_EXHAUSTED"), std::string::npos) << r.output;
  EXPECT_TRUE(left.empty()) << left.front();  // the temporary checkpoint directory was removed
}

TEST_F(TrainerTest, AnOutputDirThatCannotBeCreatedIsAPermanentFailure) {
  testing::WriteText(dir_ / "a-file", "x");
  auto r = Train(dir_, "nodir", Spec(dir_, kTinyConfig, "{type: full}", "epochs: 1", dir_ / "a-file/out"));
  EXPECT_EQ(r.exit_code, 65) << r.output;  // retrying cannot help
  EXPECT_NE(r.output.find("cannot create directory"), std::string::npos) << r.output;
}

TEST_F(TrainerTest, InvalidSpecNamesTheField) {
  auto r = Train(dir_, "inv", Spec(dir_, kTinyConfig, "{type: full}", "batch_size: 0", dir_ / "inv"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("hyperparameters.batch_size: must be > 0"), std::string::npos) << r.output;
}

// An exported model directory read by an independent Hugging Face-layout
// reader gives the logits attune predict gives.
void ExpectHfLayout(const std::string& model_dir, const std::string& input) {
  auto ours = RunCommand(Bin("attune") + " predict --model " + model_dir + " --input " + input);
  auto ref = RunCommand("/usr/bin/python3 " + Fixture("hf_forward.py") + " " + model_dir + " " + input);
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto a = LogitLines(ours.output), b = LogitLines(ref.output);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t k = 0; k < a[i].size(); ++k) EXPECT_NEAR(a[i][k], b[i][k], 1e-4) << "record " << i;
  }
}

// Methods on a pretrained checkpoint written by the independent Python script.
class MethodTest : public ::testing::Test {
 protected:
  MethodTest() : dir_("method_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + (dir_ / "base"));
    EXPECT_EQ(gen.exit_code, 0) << gen.output;
    WriteData(dir_ / "train.csv", 60, 3, true);
    WriteData(dir_ / "valid.csv", 20, 4, true);
  }
  std::string Model() const { return "model: {path: " + (dir_ / "base") + "}\n"; }
  TempDir dir_;
};

TEST_F(MethodTest, HeadTrainsOnlyPoolerAndClassifier) {
  auto r = Train(dir_, "head", Spec(dir_, Model(), "{type: head}", "epochs: 2, batch_size: 8, learning_rate: 1.0e-2",
                                    dir_ / "head"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // pooler 32x32 + 32, classifier 3x32 + 3
  EXPECT_NE(r.output.find("parameters: 1155 trainable"), std::string::npos) << r.output;
  auto base = Weights(dir_ / "base/model.safetensors"), out = Weights(dir_ / "head/model/model.safetensors");
  int changed_head = 0;
  for (const auto& [name, v] : out) {
    ASSERT_TRUE(base.count(name)) << name;
    bool head = name.rfind("bert.pooler.", 0) == 0 || name.rfind("classifier.", 0) == 0;
    double d = MaxAbsDiff(v, base[name]);
    if (head) {
      changed_head += d > 0;
    } else {
      EXPECT_EQ(d, 0.0) << name << " is frozen but changed";
    }
  }
  EXPECT_EQ(changed_head, 4);
  ExpectHfLayout(dir_ / "head/model", dir_ / "base/input.jsonl");
}

TEST_F(MethodTest, MergedLoraGivesTheSameLogitsAsAdapterFiles) {
  const std::string hyper = "epochs: 2, batch_size: 8, learning_rate: 2.0e-2, seed: 3";
  auto kept = Train(dir_, "kept", Spec(dir_, Model(), "{type: lora, merge_lora: false, lora: {rank: 4, alpha: 8}}", hyper,
                                       dir_ / "kept"));
  ASSERT_EQ(kept.exit_code, 0) << kept.output;
  auto merged = Train(dir_, "merged", Spec(dir_, Model(), "{type: lora, lora: {rank: 4, alpha: 8}}", hyper, dir_ / "merged"));
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  ASSERT_TRUE(std::filesystem::exists(dir_ / "kept/model/adapter_model.safetensors"));
  ASSERT_FALSE(std::filesystem::exists(dir_ / "merged/model/adapter_model.safetensors"));
  // Unmerged base weights are the pretrained ones; merged query/value weights moved.
  auto base = Weights(dir_ / "base/model.safetensors");
  auto kw = Weights(dir_ / "kept/model/model.safetensors"), mw = Weights(dir_ / "merged/model/model.safetensors");
  const std::string q = "bert.encoder.layer.0.attention.self.query.weight";
  const std::string k = "bert.encoder.layer.0.attention.self.key.weight";
  EXPECT_EQ(MaxAbsDiff(kw[q], base[q]), 0.0);
  EXPECT_GT(MaxAbsDiff(mw[q], base[q]), 1e-6);
  EXPECT_EQ(MaxAbsDiff(mw[k], base[k]), 0.0);
  // Same logits through attune predict.
  std::string in = dir_ / "base/input.jsonl";
  auto p1 = RunCommand(Bin("attune") + " predict --model " + (dir_ / "kept/model") + " --input " + in);
  auto p2 = RunCommand(Bin("attune") + " predict --model " + (dir_ / "merged/model") + " --input " + in);
  ASSERT_EQ(p1.exit_code, 0) << p1.output;
  ASSERT_EQ(p2.exit_code, 0) << p2.output;
  std::istringstream s1(p1.output), s2(p2.output);
  std::string l1, l2;
  int lines = 0;
  while (std::getline(s1, l1) && std::getline(s2, l2)) {
    if (l1.empty() || l1[0] != '{') continue;
    auto a = nlohmann::json::parse(l1)["logits"].get<std::vector<double>>();
    auto b = nlohmann::json::parse(l2)["logits"].get<std::vector<double>>();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
    ++lines;
  }
  EXPECT_EQ(lines, 5);
  ExpectHfLayout(dir_ / "merged/model", dir_ / "base/input.jsonl");
  // The unmerged export as PEFT reads it (NOTE [PEFT layout]): the same logits.
  auto ac = nlohmann::json::parse(testing::ReadText(dir_ / "kept/model/adapter_config.json"));
  EXPECT_EQ(ac["target_modules"], (nlohmann::json{"attention.self.query", "attention.self.value"})) << ac;
  EXPECT_EQ(ac["modules_to_save"], (nlohmann::json{"classifier", "pooler"})) << ac;
  EXPECT_EQ(ac["base_model_name_or_path"], std::filesystem::absolute(dir_ / "kept/model").lexically_normal().string());
  auto adapter = Weights(dir_ / "kept/model/adapter_model.safetensors");
  EXPECT_TRUE(adapter.count("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"));
  EXPECT_TRUE(adapter.count("base_model.model.classifier.weight"));
  ExpectHfLayout(dir_ / "kept/model", dir_ / "base/input.jsonl");
}

TEST_F(MethodTest, AdapterTrainsAndExports) {
  auto r = Train(dir_, "ad", Spec(dir_, Model(), "{type: adapter, adapter: {size: 8}}",
                                  "epochs: 1, batch_size: 8, learning_rate: 1.0e-2", dir_ / "ad"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto out = Weights(dir_ / "ad/model/model.safetensors");
  EXPECT_TRUE(out.count("bert.encoder.layer.1.output.adapter.up.weight"));
  auto base = Weights(dir_ / "base/model.safetensors");
  const std::string q = "bert.encoder.layer.0.attention.self.query.weight";
  EXPECT_EQ(MaxAbsDiff(out[q], base[q]), 0.0);
  auto p = RunCommand(Bin("attune") + " predict --model " + (dir_ / "ad/model") + " --input " + (dir_ / "base/input.jsonl"));
  EXPECT_EQ(p.exit_code, 0) << p.output;
}

// Every classification report carries the TF-IDF + logistic regression
// baseline, fitted on the job's own split; its figures agree with
// scikit-learn's on the same files, and a model that loses to it is told so.
TEST(BaselineReportTest, ReportHoldsTheTfidfBaselineAsScikitLearnComputesIt) {
  TempDir dir("baseline_report");
  const std::string data = std::string(ATTUNE_SOURCE_DIR) + "/examples/data/fine_foods/";
  auto spec = [&](const std::string& out, const std::string& evaluation) {
    return "name: b\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
           "intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 300\ndata: {train: " + data +
           "train.csv, validation: " + data + "test.csv, text_column: review, label_column: score, max_length: 16}\n"
           "hyperparameters: {max_steps: 1, batch_size: 4}\n" + evaluation + "output_dir: " + out + "\n";
  };
  auto r = Train(dir, "on", spec(dir / "on", ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("baseline tfidf_logreg: accuracy"), std::string::npos) << r.output;
  auto report = nlohmann::json::parse(testing::ReadText(dir / "on/eval_report.json"));
  const auto& b = report["baseline"];
  ASSERT_EQ(b["method"], "tfidf_logreg") << report;

  auto ref = RunCommand("/usr/bin/python3 " + Fixture("tfidf_reference.py") + " single " + data + "train.csv " + data +
                            "test.csv review score 2>/dev/null",
                        300);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto sk = nlohmann::json::parse(ref.output);
  EXPECT_EQ(b["details"]["c"].get<double>(), sk["c"].get<double>()) << b;
  for (const char* k : {"accuracy", "f1", "roc_auc", "macro_f1"}) {
    EXPECT_NEAR(b[k].get<double>(), sk[k].get<double>(), 0.01) << k << " " << b << " " << sk;
  }
  // One optimizer step cannot beat it: the report says so, in JSON and HTML.
  const auto wins = b["beats_model_on"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(wins.begin(), wins.end(), "roc_auc"), wins.end()) << b;
  EXPECT_NE(testing::ReadText(dir / "on/eval_report.html").find("This baseline beats the model on"), std::string::npos);
  EXPECT_EQ(report["trivial_baseline"]["method"], "majority_class") << report;

  // The export records the training length; tokenizer_config.json states the
  // model's real limit (its 64 positions), and HF's special_tokens_map.json is there.
  auto config = nlohmann::json::parse(testing::ReadText(dir / "on/model/config.json"));
  EXPECT_EQ(config["attune_max_length"], 16) << config;
  auto tok = nlohmann::json::parse(testing::ReadText(dir / "on/model/tokenizer_config.json"));
  EXPECT_EQ(tok["model_max_length"], 64) << tok;
  auto special = nlohmann::json::parse(testing::ReadText(dir / "on/model/special_tokens_map.json"));
  EXPECT_EQ(special["mask_token"], "[MASK]");
  // attune predict truncates as training did unless told otherwise.
  std::map<std::string, std::string> out;
  for (const std::string flag : {"", "--max_length 16", "--max_length 64"}) {
    auto p = RunCommand(Bin("attune") + " predict --model " + (dir / "on/model") + " --input " + data +
                        "test.csv --text_column review " + flag);
    ASSERT_EQ(p.exit_code, 0) << p.output;
    out[flag] = p.output;
  }
  EXPECT_EQ(out[""], out["--max_length 16"]);
  EXPECT_NE(out[""], out["--max_length 64"]);

  // evaluation.baseline: false skips it; the trivial baseline remains.
  r = Train(dir, "off", spec(dir / "off", "evaluation: {baseline: false}\n"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("tfidf_logreg"), std::string::npos) << r.output;
  report = nlohmann::json::parse(testing::ReadText(dir / "off/eval_report.json"));
  EXPECT_EQ(report["baseline"]["method"], "majority_class") << report;
}

}  // namespace
}  // namespace attune
