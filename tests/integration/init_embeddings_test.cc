// model.init_embeddings through the trainer binary: two ranks start from
// GloVe-initialised token embeddings, the report counts the coverage (checked
// here against the exported vocab.txt and the table's words, counted
// independently), a missing table is a permanent error that says how to
// install it, and the table installed by scripts/install-deps.sh works.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/process.h"

namespace attune {
namespace {

namespace fs = std::filesystem;
using testing::Bin;
using testing::ReadText;
using testing::RunCommand;

struct Coverage {
  int64_t special = 0, whole = 0, whole_covered = 0, pieces = 0, pieces_covered = 0;
};

std::string Lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Counted from the files alone: vocab.txt as exported, words.txt as installed.
Coverage Count(const std::string& vocab_txt, const std::string& words_txt) {
  std::set<std::string> words;
  std::ifstream w(words_txt);
  for (std::string line; std::getline(w, line);) words.insert(line);
  Coverage c;
  std::ifstream v(vocab_txt);
  for (std::string t; std::getline(v, t);) {
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
      ++c.special;
    } else if (t.rfind("##", 0) == 0) {
      ++c.pieces;
      c.pieces_covered += words.count(t.substr(2)) || words.count(Lower(t.substr(2)));
    } else {
      ++c.whole;
      c.whole_covered += words.count(t) || words.count(Lower(t));
    }
  }
  return c;
}

class InitEmbeddingsTest : public ::testing::Test {
 protected:
  InitEmbeddingsTest() {
    base_ = fs::temp_directory_path() / ("attune_init_embeddings_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
    std::ofstream train(base_ / "train.csv"), valid(base_ / "valid.csv");
    train << "text,label\n";
    valid << "text,label\n";
    const char* nouns[] = {"soup", "bread", "coffee", "tea", "cereal", "honey"};
    for (int i = 0; i < 60; ++i) {
      (i < 48 ? train : valid) << "the " << nouns[i % 6] << " tasted " << (i % 2 ? "wonderful" : "awful")
                               << " and smelled " << (i % 3 ? "fresh" : "stale") << " number" << i << ","
                               << (i % 2 ? "pos" : "neg") << "\n";
    }
  }
  ~InitEmbeddingsTest() override { fs::remove_all(base_); }

  // A tiny table in wink's JSON, converted by the project's converter.
  void MakeTable() {
    nlohmann::json j = {{"dimensions", 4}, {"words", nlohmann::json::array()}, {"vectors", nlohmann::json::object()}};
    int i = 0;
    for (const char* w : {"the", "soup", "bread", "coffee", "tea", "wonderful", "awful", "and", "fresh", "stale",
                          "smelled", "number", "ed"}) {
      j["words"].push_back(w);
      j["vectors"][w] = {0.1 * i, -0.2 * i + 1, 0.3, i % 3 - 1.0, 1.0, i};
      ++i;
    }
    std::ofstream(base_ / "wink.json") << j.dump();
    auto r = RunCommand("node " + std::string(ATTUNE_SOURCE_DIR) + "/tools/convert_word_vectors.cjs " +
                        (base_ / "wink.json").string() + " " + (base_ / "tables").string() + " glove-6b-100d");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  // `data`: the spec's data section (default: the small files above).
  testing::CommandResult Train(const std::string& extra_flags, int nproc, std::string data = "") {
    if (data.empty()) {
      data = "{train: " + (base_ / "train.csv").string() + ", validation: " + (base_ / "valid.csv").string() +
             ", max_length: 24}";
    }
    std::ofstream(base_ / "spec.yaml")
        << "name: glove\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
           "intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 400\n"
           "  init_embeddings: glove-6b-100d\ndata: "
        << data << "\nhyperparameters: {max_steps: 3, batch_size: 4}\nevaluation: {baseline: false}\noutput_dir: "
        << (base_ / "out").string() << "\n";
    return RunCommand(Bin("attune-worker") + " train --spec " + (base_ / "spec.yaml").string() + " --nproc " +
                          std::to_string(nproc) + " " + extra_flags,
                      240);
  }
  fs::path base_;
};

TEST_F(InitEmbeddingsTest, TwoRanksStartFromTheVectorsAndTheReportCountsTheCoverage) {
  MakeTable();
  auto r = Train("--embeddings_dir " + (base_ / "tables").string(), 2);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("token embeddings from glove-6b-100d:"), std::string::npos) << r.output;
  auto report = nlohmann::json::parse(ReadText((base_ / "out/eval_report.json").string()));
  ASSERT_TRUE(report.contains("init_embeddings")) << report.dump(2);
  const auto& ie = report["init_embeddings"];
  const Coverage want =
      Count((base_ / "out/model/vocab.txt").string(), (base_ / "tables/glove-6b-100d/words.txt").string());
  EXPECT_EQ(ie["name"], "glove-6b-100d");
  EXPECT_EQ(ie["special"], want.special);
  EXPECT_EQ(ie["whole_words"]["total"], want.whole);
  EXPECT_EQ(ie["whole_words"]["covered"], want.whole_covered);
  EXPECT_EQ(ie["pieces"]["total"], want.pieces);
  EXPECT_EQ(ie["pieces"]["covered"], want.pieces_covered);
  EXPECT_EQ(ie["covered"], want.whole_covered + want.pieces_covered);
  EXPECT_GE(want.whole_covered, 10);  // the vocabulary really has the table's words
  const std::string html = ReadText((base_ / "out/eval_report.html").string());
  EXPECT_NE(html.find("token embeddings from"), std::string::npos);
}

TEST_F(InitEmbeddingsTest, AMissingOrDamagedTableIsAPermanentErrorThatSaysWhatToDo) {
  auto missing = Train("--embeddings_dir " + (base_ / "nowhere").string(), 1);
  EXPECT_EQ(missing.exit_code, 65) << missing.output;
  EXPECT_NE(missing.output.find("glove-6b-100d is not installed in " + (base_ / "nowhere").string()),
            std::string::npos)
      << missing.output;
  EXPECT_NE(missing.output.find("scripts/fetch-embeddings.sh"), std::string::npos) << missing.output;
  MakeTable();
  std::ofstream(base_ / "tables/glove-6b-100d/words.txt", std::ios::app) << "extra\n";
  auto damaged = Train("--embeddings_dir " + (base_ / "tables").string(), 1);
  EXPECT_EQ(damaged.exit_code, 65) << damaged.output;
  EXPECT_NE(damaged.output.find("words.txt: SHA-256"), std::string::npos) << damaged.output;
}

// The real GloVe 6B-100d table, where install-deps.sh (scripts/fetch-embeddings.sh) puts it: the default the
// trainer looks in, on the bundled fine-food reviews' learned vocabulary.
TEST_F(InitEmbeddingsTest, TheInstalledGloveTableCoversTheFineFoodVocabulary) {
  const std::string dir = "/usr/local/share/attune/embeddings/glove-6b-100d";
  ASSERT_TRUE(fs::exists(dir + "/manifest.json")) << dir << " is missing: run scripts/install-deps.sh";
  const std::string data = std::string(ATTUNE_SOURCE_DIR) + "/examples/data/fine_foods/";
  auto r = Train("", 1,
                 "{train: " + data + "train.csv, validation: " + data +
                     "test.csv, text_column: review, label_column: score, max_length: 32}");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(ReadText((base_ / "out/eval_report.json").string()));
  const Coverage want = Count((base_ / "out/model/vocab.txt").string(), dir + "/words.txt");
  EXPECT_EQ(report["init_embeddings"]["whole_words"]["covered"], want.whole_covered);
  EXPECT_EQ(report["init_embeddings"]["pieces"]["covered"], want.pieces_covered);
  // A learned vocabulary of English reviews is mostly English words.
  EXPECT_GT(want.whole_covered, 0.8 * want.whole) << report["init_embeddings"].dump();
}

}  // namespace
}  // namespace attune
