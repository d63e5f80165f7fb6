// `attune predict` on checkpoints written by an independent Python script
// gives the logits that script computed.

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/testing/process.h"

namespace attune {
namespace {

using testing::Bin;
using testing::Fixture;
using testing::RunCommand;
using testing::TempDir;

struct Variant {
  std::string name, flags;
};
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

// Writes a checkpoint with `make_tiny_bert.py FLAGS` into `dir`, runs `attune
// predict` on its input.jsonl, and returns each (predicted, expected) line
// pair; a failed step or a missing predicted line is a test failure.
std::vector<std::pair<nlohmann::json, nlohmann::json>> PredictAgainstReference(const TempDir& dir,
                                                                               const std::string& flags) {
  std::vector<std::pair<nlohmann::json, nlohmann::json>> out;
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path() + " " + flags);
  if (gen.exit_code != 0) {
    ADD_FAILURE() << gen.output;
    return out;
  }
  // Beside the model directory: predict refuses to write inside it.
  const std::string output = dir.path() + "-pred.jsonl";
  auto pred = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl") +
                         " --output " + output);
  if (pred.exit_code != 0) {
    ADD_FAILURE() << pred.output;
    return out;
  }
  std::istringstream got(testing::ReadText(output)), want(testing::ReadText(dir / "expected.jsonl"));
  std::remove(output.c_str());
  std::string g, w;
  while (std::getline(want, w)) {
    if (!std::getline(got, g)) {
      ADD_FAILURE() << "missing line " << out.size();
      break;
    }
    out.emplace_back(nlohmann::json::parse(g), nlohmann::json::parse(w));
  }
  return out;
}

class PredictParityTest : public ::testing::TestWithParam<Variant> {};

TEST_P(PredictParityTest, LogitsMatchPythonReference) {
  TempDir dir("parity_" + GetParam().name);
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path() + " " + GetParam().flags);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const std::string output = dir.path() + "-pred.jsonl";  // predict refuses to write inside the model
  auto pred = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl") +
                  " --output " + output);
  ASSERT_EQ(pred.exit_code, 0) << pred.output;
  const std::string predicted = testing::ReadText(output);
  std::remove(output.c_str());
  auto got = testing::LogitLines(predicted);
  auto want = testing::LogitLines(testing::ReadText(dir / "expected.jsonl"));
  ASSERT_EQ(got.size(), want.size());
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), 3u);
    for (size_t k = 0; k < 3; ++k) EXPECT_NEAR(got[i][k], want[i][k], 1e-4) << "record " << i << " class " << k;
  }
  // Labels come from id2label and records keep input order.
  auto first = nlohmann::json::parse(predicted.substr(0, predicted.find('\n')));
  EXPECT_TRUE(first["label"] == "medical" || first["label"] == "finance" || first["label"] == "legal");
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, PredictParityTest,
                         ::testing::Values(Variant{"f32", "--dtype F32"}, Variant{"f16", "--dtype F16"},
                                           Variant{"bf16", "--dtype BF16"},
                                           Variant{"legacy", "--legacy-names --extra-keys"},
                                           Variant{"bare", "--bare"},
                                           // pytorch_model.bin as torch.save writes it, and sharded checkpoints
                                           Variant{"bin_zip_f32", "--format bin-zip"},
                                           Variant{"bin_zip_f16", "--format bin-zip --dtype F16"},
                                           Variant{"bin_legacy_f32", "--format bin-legacy"},
                                           Variant{"bin_legacy_f16", "--format bin-legacy --dtype F16"},
                                           Variant{"sharded_safetensors", "--format safetensors-sharded"},
                                           Variant{"sharded_bin_bf16", "--format bin-sharded --dtype BF16"},
                                           // tokenizer.json alone, and cased models (do_lower_case false)
                                           Variant{"tokenizer_json", "--tokenizer-json"},
                                           Variant{"cased", "--cased"},
                                           Variant{"cased_tokenizer_json", "--tokenizer-json --cased"}),
                         [](const auto& info) { return info.param.name; });

// The sequence head with HF's other problem types: the same logits, read as
// sigmoids (every label above 0.5) or as one score.
class ProblemTypeParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ProblemTypeParityTest, LogitsAndTheirReadingMatchPythonReference) {
  const std::string type = GetParam();
  TempDir dir("problem_" + type);
  const auto lines = PredictAgainstReference(dir, "--problem-type " + type);
  auto config = nlohmann::json::parse(testing::ReadText(dir / "config.json"));
  for (const auto& [got, expected] : lines) {
    auto want = expected["logits"].get<std::vector<double>>();
    ASSERT_EQ(got["logits"].size(), want.size()) << got;
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got["logits"][k].get<double>(), want[k], 1e-4);
    if (type == "regression") {
      ASSERT_EQ(want.size(), 1u);
      EXPECT_NEAR(got["score"].get<double>(), want[0], 1e-4);
    } else {
      std::vector<std::string> above;
      for (size_t k = 0; k < want.size(); ++k) {
        if (1 / (1 + std::exp(-want[k])) > 0.5) above.push_back(config["id2label"][std::to_string(k)]);
      }
      EXPECT_EQ(got["labels"].get<std::vector<std::string>>(), above) << got;
    }
  }
  EXPECT_EQ(lines.size(), 5u);
}

INSTANTIATE_TEST_SUITE_P(ProblemTypes, ProblemTypeParityTest,
                         ::testing::Values("multi_label_classification", "regression"),
                         [](const auto& info) { return info.param; });

// Fill-mask with a BertForMaskedLM written by the independent script: the
// same top-5 tokens with the same probabilities at every [MASK], whether the
// file leaves the tied decoder out (HF's layout) or carries the older
// cls.predictions.decoder.* keys.
class FillMaskParityTest : public ::testing::TestWithParam<Variant> {};

TEST_P(FillMaskParityTest, TopKMatchesPythonReference) {
  TempDir dir("fillmask_" + GetParam().name);
  const auto lines = PredictAgainstReference(dir, "--mlm " + GetParam().flags);
  int masks = 0;
  for (size_t line = 0; line < lines.size(); ++line) {
    const auto& got = lines[line].first["masks"];
    const auto& want = lines[line].second["masks"];
    ASSERT_EQ(got.size(), want.size()) << got << "\n" << want;
    for (size_t m = 0; m < want.size(); ++m, ++masks) {
      EXPECT_EQ(got[m]["index"], want[m]["index"]) << got;
      ASSERT_EQ(got[m]["top_k"].size(), 5u);
      for (size_t k = 0; k < 5; ++k) {
        EXPECT_EQ(got[m]["top_k"][k]["id"], want[m]["top_k"][k]["id"]) << "line " << line << " mask " << m;
        EXPECT_EQ(got[m]["top_k"][k]["token"], want[m]["top_k"][k]["token"]);
        EXPECT_NEAR(got[m]["top_k"][k]["score"].get<double>(), want[m]["top_k"][k]["score"].get<double>(), 1e-4);
      }
    }
  }
  EXPECT_EQ(lines.size(), 5u);
  EXPECT_EQ(masks, 5);  // one line holds none, one two, one [MASK] glued to its neighbours
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, FillMaskParityTest,
                         ::testing::Values(Variant{"tied", ""}, Variant{"decoder_keys", "--decoder-keys"},
                                           Variant{"bf16", "--dtype BF16"}),
                         [](const auto& info) { return info.param.name; });

// Token classification with a BertForTokenClassification written by the
// independent script: per word, the logits at its first piece and the tag.
TEST(PredictTest, TokenLogitsMatchPythonReference) {
  TempDir dir("token_parity");
  int words = 0;
  for (const auto& [got, want] : PredictAgainstReference(dir, "--ner")) {
    ASSERT_EQ(got["logits"].size(), want["logits"].size()) << got;
    EXPECT_EQ(got["tags"], want["tags"]);
    for (size_t i = 0; i < want["logits"].size(); ++i, ++words) {
      ASSERT_EQ(got["logits"][i].size(), 3u);
      for (size_t k = 0; k < 3; ++k) {
        EXPECT_NEAR(got["logits"][i][k].get<double>(), want["logits"][i][k].get<double>(), 1e-4) << got;
      }
    }
  }
  EXPECT_EQ(words, 16);
}

TEST(PredictTest, MissingClassifierIsReportedForInference) {
  TempDir dir("nocls");
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path() + " --no-classifier").exit_code, 0);
  auto pred = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl"));
  EXPECT_NE(pred.exit_code, 0);
  EXPECT_NE(pred.output.find("classifier.weight"), std::string::npos) << pred.output;
}

TEST(PredictTest, CorruptModelIsRefused) {
  TempDir dir("corrupt");
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path()).exit_code, 0);
  ASSERT_EQ(RunCommand("truncate -s -100 " + (dir / "model.safetensors")).exit_code, 0);
  auto pred = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl"));
  EXPECT_NE(pred.exit_code, 0);
  EXPECT_NE(pred.output.find("corrupt safetensors"), std::string::npos) << pred.output;
}

// Files of a model directory that cannot work together, or a config that
// asks for the impossible, are refused at load with exit 65 naming the file
// and the key; a damaged weight (NaN) is refused naming the tensor, never
// turned into confident "null" logits.
TEST(PredictTest, InconsistentOrDamagedModelFilesAreRefusedNamingThem) {
  TempDir dir("inconsistent");
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path()).exit_code, 0);
  const std::string config = dir / "config.json";
  const std::string original = testing::ReadText(config);
  const auto predict = [&] {
    return RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl"));
  };
  const int64_t vocab = nlohmann::json::parse(original)["vocab_size"].get<int64_t>();
  for (const auto& [key, value, says] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"vocab_size", int64_t{1000000000000}, "vocab_size must be in [1, 4194304], not 1000000000000"},
           {"classifier_dropout", -5, "classifier_dropout must be in [0, 1) or null"},
           {"num_hidden_layers", 5000, "num_hidden_layers must be in [1, 1024], not 5000"}}) {
    SCOPED_TRACE(key);
    auto j = nlohmann::json::parse(original);
    j[key] = value;
    testing::WriteText(config, j.dump());
    auto pred = predict();
    EXPECT_EQ(pred.exit_code, 65) << pred.output;
    EXPECT_NE(pred.output.find(says), std::string::npos) << pred.output;
  }
  testing::WriteText(config, original);
  ASSERT_EQ(predict().exit_code, 0);
  // A vocabulary larger than the embedding table the weights have.
  const std::string vocab_txt = testing::ReadText(dir / "vocab.txt");
  testing::WriteText(dir / "vocab.txt", vocab_txt + "extra1\nextra2\n");
  auto bigger = predict();
  EXPECT_EQ(bigger.exit_code, 65) << bigger.output;
  EXPECT_NE(bigger.output.find("the tokenizer has " + std::to_string(vocab + 2) +
                               " tokens but config.json's vocab_size (the embedding table) is " + std::to_string(vocab)),
            std::string::npos)
      << bigger.output;
  testing::WriteText(dir / "vocab.txt", vocab_txt);
  // One NaN in a weight.
  auto weights = common::ReadSafeTensors(dir / "model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  common::SafeTensorsFile damaged;
  for (const auto& [name, t] : weights->tensors) {
    common::SafeTensor copy;
    copy.dtype = t.dtype;
    copy.shape = t.shape;
    copy.data = std::string(t.bytes());
    damaged.tensors[name] = std::move(copy);
  }
  common::SafeTensor& norm = damaged.tensors.at("bert.encoder.layer.0.output.LayerNorm.weight");
  ASSERT_EQ(norm.dtype, "F32");
  const float nan = std::nanf("");
  std::memcpy(norm.data.data() + 4, &nan, 4);
  weights = absl::InternalError("released");  // the file's mapping, before it is replaced
  ASSERT_TRUE(common::WriteSafeTensors(dir / "model.safetensors", damaged).ok());
  auto pred = predict();
  EXPECT_EQ(pred.exit_code, 65) << pred.output;
  EXPECT_NE(pred.output.find("tensor bert.encoder.layer.0.output.LayerNorm.weight holds NaN or infinite values"),
            std::string::npos)
      << pred.output;
}

// A record without text costs that record, not the file: line k of the output
// is record k, in CSV (a quoted empty field) and JSONL (empty, null or absent).
TEST(PredictTest, ARecordWithoutTextGetsAnErrorLineInItsPlace) {
  TempDir dir("missing_text");
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path()).exit_code, 0);
  testing::WriteText(dir / "in.csv", "text\nthe patient was given aspirin\n\"\"\nbank rates rose\n");
  testing::WriteText(dir / "in.jsonl", "{\"text\": \"a\"}\n{\"text\": \"\"}\n{\"other\": 1}\n{\"text\": null}\n{\"text\": \"b\"}\n");
  for (const auto& [file, errors] : std::vector<std::pair<std::string, std::vector<int>>>{{"in.csv", {3}},
                                                                                       {"in.jsonl", {2, 3, 4}}}) {
    SCOPED_TRACE(file);
    const std::string output = dir.path() + "-out.jsonl";  // predict refuses to write inside the model
    auto pred = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / file) +
                           " --output " + output + " --batch_size 2");
    ASSERT_EQ(pred.exit_code, 0) << pred.output;
    std::istringstream lines(testing::ReadText(output));
    std::remove(output.c_str());
    std::string line;
    std::vector<nlohmann::json> got;
    while (std::getline(lines, line)) got.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(got.size(), file == "in.csv" ? 3u : 5u);
    std::vector<int> error_lines;
    for (const auto& g : got) {
      if (g.contains("error")) {
        EXPECT_EQ(g["error"], "missing text");
        error_lines.push_back(g["line"].get<int>());
      } else {
        EXPECT_TRUE(g.contains("logits")) << g;
      }
    }
    EXPECT_EQ(error_lines, errors);
  }
}

}  // namespace
// attune convert: a pytorch_model.bin (legacy layout, F16, strided views)
// becomes model.safetensors with the same dtype, and the converted model
// predicts the same logits as the original.
TEST(ConvertTest, BinBecomesSafetensorsWithTheSameLogits) {
  TempDir dir("convert_bin");
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + (dir / "in") +
                        " --format bin-legacy --dtype F16");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto conv = RunCommand(Bin("attune") + " convert --model " + (dir / "in") + " --output " + (dir / "out"));
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  auto weights = common::ReadSafeTensors(dir / "out/model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->tensors.at("bert.embeddings.word_embeddings.weight").dtype, "F16");
  for (const char* f : {"config.json", "vocab.txt", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / ("out/" + std::string(f)))) << f;
  }
  std::vector<std::vector<std::vector<double>>> logits;
  for (const char* m : {"in", "out"}) {
    auto p = RunCommand(Bin("attune") + " predict --model " + (dir / m) + " --input " + (dir / "in/input.jsonl") +
                        " --output " + (dir / (std::string(m) + ".jsonl")));
    ASSERT_EQ(p.exit_code, 0) << p.output;
    logits.push_back(testing::LogitLines(testing::ReadText(dir / (std::string(m) + ".jsonl"))));
  }
  ASSERT_EQ(logits[0].size(), 5u);
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i) {
    for (size_t k = 0; k < logits[0][i].size(); ++k) EXPECT_NEAR(logits[0][i][k], logits[1][i][k], 1e-5);
  }
  EXPECT_NE(RunCommand(Bin("attune") + " convert --model " + (dir / "in") + " --output " + (dir / "in")).exit_code, 0);
}

// Another architecture's config.json is refused by name, not loaded as BERT.
TEST(ConvertTest, AnotherModelTypeIsRefusedByName) {
  TempDir dir("convert_gpt2");
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path());
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto config = nlohmann::json::parse(testing::ReadText(dir / "config.json"));
  config["model_type"] = "gpt2";
  testing::WriteText(dir / "config.json", config.dump());
  auto p = RunCommand(Bin("attune") + " predict --model " + dir.path() + " --input " + (dir / "input.jsonl"));
  EXPECT_NE(p.exit_code, 0);
  EXPECT_NE(p.output.find("model_type gpt2 is not supported"), std::string::npos) << p.output;
}

// A shard index may only name files in the model's own directory.
TEST(ConvertTest, AShardOutsideTheModelDirectoryIsRefused) {
  TempDir dir("shard_escape");
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_bert.py") + " " + dir.path() +
                        " --format safetensors-sharded");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto index = nlohmann::json::parse(testing::ReadText(dir / "model.safetensors.index.json"));
  const std::string first = index["weight_map"].begin().key();
  index["weight_map"][first] = "../model-00001-of-00002.safetensors";
  testing::WriteText(dir / "model.safetensors.index.json", index.dump());
  auto c = RunCommand(Bin("attune") + " convert --model " + dir.path() + " --output " + (dir / "out"));
  EXPECT_EQ(c.exit_code, 1) << c.output;
  EXPECT_NE(c.output.find("is not a plain file name in the model directory"), std::string::npos) << c.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out/model.safetensors"));
}

// NOTE: a checkpoint is data, never code. Pickles naming os.system, exec or
// eval are refused, naming the global, and nothing they ask for happens.
TEST(ConvertTest, HostilePicklesAreRefusedAndNothingRuns) {
  TempDir dir("hostile_bin");
  const std::string marker = dir / "PWNED";
  auto gen = RunCommand("/usr/bin/python3 " + Fixture("hostile_torch_files.py") + " " + dir.path() + " " + marker);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  for (const auto& [name, global] : std::vector<std::pair<std::string, std::string>>{
           {"zip_system", "posix.system"}, {"legacy_system", "posix.system"}, {"zip_exec", "__builtin__.exec"},
           {"nested_eval", "__builtin__.eval"}}) {
    SCOPED_TRACE(name);
    auto c = RunCommand(Bin("attune") + " convert --model " + (dir / name) + " --output " + (dir / (name + "_out")));
    EXPECT_EQ(c.exit_code, 1) << c.output;
    EXPECT_NE(c.output.find("refuses global " + global), std::string::npos) << c.output;
    EXPECT_FALSE(std::filesystem::exists(dir / (name + "_out/model.safetensors")));
  }
  EXPECT_FALSE(std::filesystem::exists(marker));
}

}  // namespace attune
