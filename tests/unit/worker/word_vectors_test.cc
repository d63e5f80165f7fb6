// model.init_embeddings: the converter (tools/convert_word_vectors.cjs, run
// with node), the table reader and its integrity checks, the vocabulary
// match, and the projection into a model's word embeddings. The expected
// cosines are computed here in plain double loops, not with torch.

#include "worker/model/word_vectors.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/model/bert.h"

namespace attune::worker::model {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kName[] = "glove-6b-100d";

// A wink-embeddings-format JSON of `words` with `dims` random values each
// (then the L2 norm and the index, as wink stores them).
std::vector<std::vector<double>> WriteWinkJson(const std::string& path, const std::vector<std::string>& words,
                                               int dims, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.3, 1.0);  // off-centre on purpose: the init centres
  nlohmann::json j = {{"precision", 8}, {"l2NormIndex", dims}, {"wordIndex", dims + 1}, {"size", words.size()},
                      {"dimensions", dims}, {"words", words}, {"vectors", nlohmann::json::object()}};
  std::vector<std::vector<double>> values;
  for (size_t i = 0; i < words.size(); ++i) {
    std::vector<double> v(dims);
    double norm = 0;
    for (auto& x : v) {
      x = static_cast<float>(normal(rng));  // what F32 will hold
      norm += x * x;
    }
    nlohmann::json row = v;
    row.push_back(std::sqrt(norm));
    row.push_back(i);
    j["vectors"][words[i]] = row;
    values.push_back(v);
  }
  j["unkVector"] = std::vector<double>(dims + 2, 0.0);
  std::ofstream(path) << j.dump();
  return values;
}

std::string Convert(const std::string& json, const std::string& dest) {
  auto r = attune::testing::RunCommand("node " + std::string(ATTUNE_SOURCE_DIR) +
                                       "/tools/convert_word_vectors.cjs " + json + " " + dest + " " + kName +
                                       " test-source 0123");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

class WordVectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    words_ = {"the", "paris", "ing", "doctor", "physician", "loan", "bank", "river"};
    values_ = WriteWinkJson(dir_ / "in.json", words_, 8, 7);
    Convert(dir_ / "in.json", dir_ / "tables");
  }
  attune::testing::TempDir dir_{"word_vectors"};
  std::vector<std::string> words_;
  std::vector<std::vector<double>> values_;
};

TEST_F(WordVectorsTest, TheConvertedTableReadsBackWordForWord) {
  auto wv = ReadWordVectors(dir_ / "tables", kName);
  ASSERT_THAT(wv.status(), IsOk());
  EXPECT_EQ(wv->dimensions, 8);
  ASSERT_EQ(wv->words, words_);
  for (size_t i = 0; i < words_.size(); ++i) {
    for (int k = 0; k < 8; ++k) EXPECT_EQ(wv->Row(static_cast<int64_t>(i))[k], static_cast<float>(values_[i][k]));
  }
  auto manifest = nlohmann::json::parse(attune::testing::ReadText(dir_ / "tables/glove-6b-100d/manifest.json"));
  EXPECT_EQ(manifest["words"], 8);
  EXPECT_EQ(manifest["source_sha256"], "0123");
}

TEST_F(WordVectorsTest, DamagedOrMissingTablesAreRefusedByName) {
  // Not installed: says where it looked and how to install it.
  EXPECT_THAT(ReadWordVectors(dir_ / "elsewhere", kName).status(),
              StatusIs(absl::StatusCode::kNotFound, "fetch-embeddings.sh"));
  // Not a known table (a name, never a path).
  EXPECT_THAT(ReadWordVectors(dir_ / "tables", "../tables/glove-6b-100d").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown word vectors"));
  // One flipped byte in the vectors: the SHA-256 no longer matches.
  const std::string vec = dir_ / "tables/glove-6b-100d/vectors.safetensors";
  std::string bytes = attune::testing::ReadText(vec);
  bytes[bytes.size() - 3] ^= 0x40;
  std::ofstream(vec, std::ios::binary) << bytes;
  EXPECT_THAT(ReadWordVectors(dir_ / "tables", kName).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "vectors.safetensors: SHA-256"));
  // A words.txt of another length, with its hash updated to match.
  Convert(dir_ / "in.json", dir_ / "tables");
  const std::string words = dir_ / "tables/glove-6b-100d/words.txt";
  std::ofstream(words) << "the\nparis\n";
  auto manifest = nlohmann::json::parse(attune::testing::ReadText(dir_ / "tables/glove-6b-100d/manifest.json"));
  manifest["files"]["words.txt"] = common::Sha256Hex("the\nparis\n");
  std::ofstream(dir_ / "tables/glove-6b-100d/manifest.json") << manifest.dump();
  EXPECT_THAT(ReadWordVectors(dir_ / "tables", kName).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "words.txt: 2 lines, the manifest says 8"));
}

TEST(WordVectorsConverterTest, RefusesInputItCannotTrust) {
  attune::testing::TempDir dir("word_vectors_bad");
  auto run = [&](const nlohmann::json& j) {
    std::ofstream(dir / "in.json") << j.dump();
    return attune::testing::RunCommand("node " + std::string(ATTUNE_SOURCE_DIR) +
                                       "/tools/convert_word_vectors.cjs " + (dir / "in.json") + " " +
                                       (dir / "out") + " " + kName);
  };
  nlohmann::json ok = {{"dimensions", 2}, {"words", {"a", "b"}}, {"vectors", {{"a", {1, 2, 3, 0}}, {"b", {1, 2, 3, 1}}}}};
  EXPECT_EQ(run(ok).exit_code, 0);
  auto twice = ok;
  twice["words"] = {"a", "a"};
  EXPECT_THAT(run(twice).output, HasSubstr("'a' is listed twice"));
  auto shortv = ok;
  shortv["vectors"]["b"] = {1};
  EXPECT_THAT(run(shortv).output, HasSubstr("'b' has no vector of 2 values"));
  auto text = ok;
  text["vectors"]["b"] = {1, "2", 0, 0};
  EXPECT_THAT(run(text).output, HasSubstr("'b' value 1 is not a finite number"));
  auto spaced = ok;
  spaced["words"] = {"a", "b c"};
  EXPECT_NE(run(spaced).exit_code, 0);
}

TEST_F(WordVectorsTest, VocabularyMatchCountsWordsPiecesAndSpecials) {
  auto wv = ReadWordVectors(dir_ / "tables", kName);
  ASSERT_THAT(wv.status(), IsOk());
  const std::vector<std::string> vocab = {"[PAD]", "[UNK]", "the", "Paris", "##ing", "##zz", "qqq", "[unused0]"};
  VocabularyMatch m = MatchVocabulary(vocab, *wv);
  EXPECT_EQ(m.coverage.vocab_size, 8);
  EXPECT_EQ(m.coverage.special, 3);
  EXPECT_EQ(m.coverage.whole_words, 3);
  EXPECT_EQ(m.coverage.whole_words_covered, 2);  // the; Paris as paris
  EXPECT_EQ(m.coverage.pieces, 2);
  EXPECT_EQ(m.coverage.pieces_covered, 1);  // ##ing as ing
  EXPECT_EQ(m.token_ids, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(m.vector_rows, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(CoverageLine(m.coverage),
            "glove-6b-100d: 3 of 8 tokens (37.5%): whole words 2 of 3, ## pieces 1 of 2; 3 special tokens and the 2 "
            "without a vector keep their random initialisation");
}

BertConfig Config(int64_t hidden, const std::vector<std::string>& vocab) {
  BertConfig c;
  c.vocab_size = static_cast<int64_t>(vocab.size());
  c.hidden_size = hidden;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.intermediate_size = 16;
  c.max_position_embeddings = 16;
  c.labels = {"a", "b"};
  c.pad_token_id = 0;
  return c;
}

double Cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

// For hidden >= dimensions the projection keeps the centred vectors'
// geometry: cosines between covered rows equal those computed here; the
// covered rows' std is the initialiser's; every other row is the random
// initialisation, bit for bit.
TEST_F(WordVectorsTest, ProjectionKeepsCosinesRescalesAndLeavesTheRestAlone) {
  auto wv = ReadWordVectors(dir_ / "tables", kName);
  ASSERT_THAT(wv.status(), IsOk());
  const std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "doctor",
                                          "physician", "loan", "##bank", "river", "zzz", "##qq"};
  const VocabularyMatch m = MatchVocabulary(vocab, *wv);
  ASSERT_EQ(m.coverage.covered(), 6);
  for (int64_t hidden : {16, 8, 4}) {  // wider than, equal to and narrower than the 8 dimensions
    SCOPED_TRACE(hidden);
    auto fresh = CreateModel(Config(hidden, vocab), MethodConfig{}, 5);
    auto model = CreateModel(Config(hidden, vocab), MethodConfig{}, 5);
    ASSERT_TRUE(fresh.ok() && model.ok());
    ASSERT_THAT(InitWordEmbeddings(**model, *wv, m, 5), IsOk());
    torch::Tensor w = (*model)->word->weight.detach().to(torch::kFloat64), w0 = (*fresh)->word->weight.detach();
    for (int64_t id : {0, 1, 2, 3, 4, 11, 12}) EXPECT_TRUE(torch::equal((*model)->word->weight[id], w0[id])) << id;
    torch::Tensor covered = w.index_select(0, torch::tensor(m.token_ids));
    EXPECT_NEAR(covered.std().item<double>(), 0.02, 1e-6);
    EXPECT_NEAR(covered.mean().item<double>(), 0.0, 1e-6);
    if (hidden < 8) continue;
    // The centred table rows, independently.
    std::vector<std::vector<double>> x;
    std::vector<double> mean(8, 0.0);
    for (int64_t row : m.vector_rows) x.push_back(values_[static_cast<size_t>(row)]);
    for (const auto& r : x) for (int k = 0; k < 8; ++k) mean[k] += r[k] / static_cast<double>(x.size());
    for (auto& r : x) for (int k = 0; k < 8; ++k) r[k] -= mean[k];
    for (size_t a = 0; a < x.size(); ++a) {
      for (size_t b = a + 1; b < x.size(); ++b) {
        auto ra = covered[static_cast<int64_t>(a)], rb = covered[static_cast<int64_t>(b)];
        const double got = (ra * rb).sum().item<double>() / (ra.norm() * rb.norm()).item<double>();
        EXPECT_NEAR(got, Cosine(x[a], x[b]), 1e-5) << vocab[static_cast<size_t>(m.token_ids[a])] << " / "
                                                   << vocab[static_cast<size_t>(m.token_ids[b])];
      }
    }
  }
  // The same seed gives the same rows; another seed another projection.
  auto a = CreateModel(Config(16, vocab), MethodConfig{}, 5), b = CreateModel(Config(16, vocab), MethodConfig{}, 5);
  ASSERT_THAT(InitWordEmbeddings(**a, *wv, m, 11), IsOk());
  ASSERT_THAT(InitWordEmbeddings(**b, *wv, m, 11), IsOk());
  EXPECT_TRUE(torch::equal((*a)->word->weight, (*b)->word->weight));
  ASSERT_THAT(InitWordEmbeddings(**b, *wv, m, 12), IsOk());
  EXPECT_FALSE(torch::equal((*a)->word->weight[6], (*b)->word->weight[6]));
}

}  // namespace
}  // namespace attune::worker::model
