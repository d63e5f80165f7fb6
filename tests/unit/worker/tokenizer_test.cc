#include "worker/text/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/testing/status_matchers.h"

namespace attune::worker::text {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;
using Tokens = std::vector<std::string>;

WordPieceTokenizer Make(std::vector<std::string> extra, bool lower = true) {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  v.insert(v.end(), extra.begin(), extra.end());
  TokenizerOptions o;
  o.do_lower_case = lower;
  o.strip_accents = lower;
  return *WordPieceTokenizer::Create(v, o);
}

// Cases from BERT's published tokenizer behaviour.
TEST(TokenizerTest, WordPieceGreedyLongestMatch) {
  WordPieceTokenizer t = Make({"want", "##want", "##ed", "wa", "un", "runn", "##ing", ","});
  EXPECT_EQ(t.Tokenize("UNwant\u00E9d,running"), (Tokens{"un", "##want", "##ed", ",", "runn", "##ing"}));
  EXPECT_EQ(t.Tokenize("unwantedX running"), (Tokens{"[UNK]", "runn", "##ing"}));
  EXPECT_EQ(t.Tokenize(""), Tokens{});
}

TEST(TokenizerTest, LowerCaseStripsAccentsAndSplitsPunctuation) {
  WordPieceTokenizer t = Make({});
  EXPECT_EQ(t.BasicTokenize(" \tHeLLo!how  \n Are yoU?  "), (Tokens{"hello", "!", "how", "are", "you", "?"}));
  EXPECT_EQ(t.BasicTokenize("H\u00E9llo"), (Tokens{"hello"}));
  EXPECT_EQ(t.BasicTokenize("na\u00EFve caf\u00E9 \u00C5ngstr\u00F6m"), (Tokens{"naive", "cafe", "angstrom"}));
  EXPECT_EQ(t.BasicTokenize("e.g. \u00ABquoted\u00BB \u2014 dash"), (Tokens{"e", ".", "g", ".", "\u00AB", "quoted", "\u00BB", "\u2014", "dash"}));
  EXPECT_EQ(t.BasicTokenize("$5 + 3^2 = `x`"), (Tokens{"$", "5", "+", "3", "^", "2", "=", "`", "x", "`"}));
}

TEST(TokenizerTest, CasedKeepsCaseAndAccents) {
  WordPieceTokenizer t = Make({}, /*lower=*/false);
  EXPECT_EQ(t.BasicTokenize(" \tHeLLo!how  \n Are yoU?  "), (Tokens{"HeLLo", "!", "how", "Are", "yoU", "?"}));
  EXPECT_EQ(t.BasicTokenize("H\u00E4LLo"), (Tokens{"H\u00E4LLo"}));
}

TEST(TokenizerTest, ChineseCharactersBecomeSingleTokens) {
  WordPieceTokenizer t = Make({"\u535A", "\u63A8", "ah", "zz", "\u60A3", "\u8005"});
  EXPECT_EQ(t.BasicTokenize("ah\u535A\u63A8zz"), (Tokens{"ah", "\u535A", "\u63A8", "zz"}));
  // "患者发热" (patient has a fever): unknown ideographs become [UNK] one by one.
  EXPECT_EQ(t.Tokenize("\u60A3\u8005\u53D1\u70ED"), (Tokens{"\u60A3", "\u8005", "[UNK]", "[UNK]"}));
  // Hiragana and Hangul are not split per character.
  EXPECT_EQ(t.BasicTokenize("\u3053\u3093\u306B\u3061\u306F"), (Tokens{"\u3053\u3093\u306B\u3061\u306F"}));
}

TEST(TokenizerTest, ControlCharactersAreRemovedWhitespaceSplits) {
  WordPieceTokenizer t = Make({});
  const std::string text = std::string("a") + '\0' + "b\u00ADc\u200Bd\x01" "e\tf\u3000g\u2028h";
  EXPECT_EQ(t.BasicTokenize(text), (Tokens{"abcde", "f", "g", "h"}));
  EXPECT_EQ(t.BasicTokenize("bad \xff byte"), (Tokens{"bad", "byte"}));
}

TEST(TokenizerTest, LongWordsBecomeUnk) {
  WordPieceTokenizer t = Make({"a", "##a"});
  EXPECT_EQ(t.Tokenize(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(t.Tokenize(std::string(101, 'a')), Tokens{"[UNK]"});
}

TEST(TokenizerTest, SpecialTokensInTextStayWhole) {
  WordPieceTokenizer t = Make({"hi"});
  EXPECT_EQ(t.Tokenize("hi [SEP] [MASK] HI"), (Tokens{"hi", "[SEP]", "[MASK]", "hi"}));
}

TEST(TokenizerTest, PairsTruncationPaddingAndMasks) {
  WordPieceTokenizer t = Make({"a", "b", "c", "d", "e", "f", "g"});
  const std::string pair = "f g";
  Encoding e = t.Encode("a b c d e", &pair, 8, true);
  // budget 5: longest-first trims the first text to 3 tokens.
  EXPECT_EQ(e.input_ids, (std::vector<int64_t>{2, 5, 6, 7, 3, 10, 11, 3}));
  EXPECT_EQ(e.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(e.attention_mask, (std::vector<int64_t>(8, 1)));
  // Equal lengths, odd budget 5: HF's longest_first trims the second text first.
  const std::string second = "e f g";
  Encoding tie = t.Encode("a b c", &second, 8, false);
  EXPECT_EQ(tie.input_ids, (std::vector<int64_t>{2, 5, 6, 7, 3, 9, 10, 3}));
  Encoding p = t.Encode("a", nullptr, 6, true);
  EXPECT_EQ(p.input_ids, (std::vector<int64_t>{2, 5, 3, 0, 0, 0}));
  EXPECT_EQ(p.attention_mask, (std::vector<int64_t>{1, 1, 1, 0, 0, 0}));
  Encoding u = t.Encode("a b", nullptr, 6, false);
  EXPECT_EQ(u.input_ids.size(), 4u);
}

// An HF fast tokenizer's file: WordPiece with BertNormalizer is read; another
// model or normalizer is refused by name rather than tokenised wrongly.
TEST(TokenizerTest, TokenizerJsonIsReadAndOtherKindsAreRefused) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("attune_tokjson_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const nlohmann::json& j) { std::ofstream(dir / "tokenizer.json") << j.dump(); };
  nlohmann::json vocab = {{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"[MASK]", 4}, {"Aspirin", 5},
                          {"aspirin", 6}};
  nlohmann::json j = {{"normalizer", {{"type", "BertNormalizer"}, {"lowercase", false}, {"strip_accents", nullptr}}},
                      {"model", {{"type", "WordPiece"}, {"continuing_subword_prefix", "##"}, {"vocab", vocab}}}};
  write(j);
  auto cased = WordPieceTokenizer::FromDirectory(dir.string());
  ASSERT_TRUE(cased.ok()) << cased.status();
  EXPECT_EQ(cased->Tokenize("Aspirin aspirin"), (Tokens{"Aspirin", "aspirin"}));
  j["normalizer"]["lowercase"] = true;
  write(j);
  auto lower = WordPieceTokenizer::FromDirectory(dir.string());
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(lower->Tokenize("Aspirin"), (Tokens{"aspirin"}));
  j["model"]["type"] = "BPE";
  write(j);
  EXPECT_THAT(WordPieceTokenizer::FromDirectory(dir.string()), StatusIs(absl::StatusCode::kInvalidArgument, "model type 'BPE'"));
  // The interface reads a BPE tokenizer.json as a decoder's (bpe_tokenizer.h), which refuses this one.
  EXPECT_THAT(Tokenizer::FromDirectory(dir.string()), StatusIs(absl::StatusCode::kInvalidArgument, "tokenizer.json: model.continuing_subword_prefix"));
  j["model"]["type"] = "Unigram";
  write(j);
  EXPECT_THAT(Tokenizer::FromDirectory(dir.string()), StatusIs(absl::StatusCode::kInvalidArgument, "model type 'Unigram'"));
  j["model"]["type"] = "WordPiece";
  j["normalizer"] = {{"type", "Sequence"}};
  write(j);
  EXPECT_THAT(WordPieceTokenizer::FromDirectory(dir.string()), StatusIs(absl::StatusCode::kInvalidArgument, "'Sequence' is not BertNormalizer"));
  j["normalizer"] = nullptr;
  j["model"]["vocab"]["dup"] = 6;
  write(j);
  EXPECT_THAT(WordPieceTokenizer::FromDirectory(dir.string()), StatusIs(absl::StatusCode::kInvalidArgument, "each once"));
  fs::remove_all(dir);
}

// NOTE [tokenizer interface]: what tasks, the trainer and predict ask of any
// tokenizer, answered for a saved WordPiece directory as BertTokenizer would.
TEST(TokenizerTest, TheInterfaceLoadsASavedDirectoryAndAnswersAsWordPiece) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("attune_tokiface_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const WordPieceTokenizer wp = Make({"want", "##want", "##ed", "un", "runn", "##ing", ","}, /*lower=*/false);
  ASSERT_THAT(wp.Save(dir.string(), 64), IsOk());
  auto loaded = Tokenizer::FromDirectory(dir.string());
  ASSERT_THAT(loaded, IsOk());
  const Tokenizer& t = **loaded;
  EXPECT_EQ(t.vocab(), wp.vocab());
  EXPECT_EQ(t.special().pad, 0);
  EXPECT_EQ(t.special().unk, 1);
  EXPECT_EQ(t.special().cls, 2);
  EXPECT_EQ(t.special().sep, 3);
  EXPECT_EQ(t.special().mask, 4);
  EXPECT_EQ(t.pad_id(), 0);
  // Pieces without specials; ## marks a continuation; case kept as saved.
  EXPECT_EQ(t.EncodePieces("unwanted running"), (std::vector<int64_t>{8, 6, 7, 9, 10}));
  EXPECT_EQ(t.EncodePieces("Unwanted"), (std::vector<int64_t>{1}));
  EXPECT_FALSE(t.IsContinuation(8));
  EXPECT_TRUE(t.IsContinuation(6));
  EXPECT_FALSE(t.IsContinuation(-1));
  EXPECT_FALSE(t.IsContinuation(99));
  EXPECT_EQ(t.SplitWords("unwanted, running"), (Tokens{"unwanted", ",", "running"}));
  EXPECT_EQ(t.Encode("unwanted", nullptr, 8, false).input_ids, (std::vector<int64_t>{2, 8, 6, 7, 3}));
  // A vocabulary without [MASK] has none, rather than [UNK]'s id.
  auto no_mask = WordPieceTokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"}, {});
  ASSERT_THAT(no_mask, IsOk());
  EXPECT_EQ(no_mask->special().mask, -1);
  fs::remove_all(dir);
}

TEST(TokenizerTest, VocabularyNeedsSpecialTokens) {
  EXPECT_THAT(WordPieceTokenizer::Create({"a", "b"}, {}), StatusIs(absl::StatusCode::kInvalidArgument, "[UNK]"));
}

TEST(VocabBuilderTest, LearnsPiecesThatCoverTheCorpus) {
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    texts.push_back("the patient reported chest pain and shortness of breath");
    texts.push_back("patients reporting pain were treated");
  }
  VocabBuilderOptions o;
  o.vocab_size = 60;
  auto vocab = BuildWordPieceVocab(texts, o);
  EXPECT_LE(vocab.size(), 60u + 0u);
  EXPECT_EQ(vocab[0], "[PAD]");
  auto t = WordPieceTokenizer::Create(vocab, o.tokenizer);
  ASSERT_THAT(t, IsOk());
  auto toks = t->Tokenize("the patient reported pain");
  for (const auto& tok : toks) EXPECT_NE(tok, "[UNK]");
  // Frequent words become whole tokens.
  EXPECT_NE(std::find(vocab.begin(), vocab.end(), "the"), vocab.end());
  EXPECT_LT(toks.size(), std::string("thepatientreportedpain").size());
}

// Compares against an independent Python implementation of BertTokenizer on
// Python's unicodedata, over a mixed-script corpus.
TEST(TokenizerTest, MatchesIndependentPythonReference) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("attune_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::string> inputs = {
      "Hello, World! It's a TEST.",
      "Caf\u00E9 na\u00EFve r\u00E9sum\u00E9 \u00FCber Stra\u00DFe",
      "\u60A3\u8005\u4E3B\u8BC9\uFF1A\u53D1\u70ED\u4E09\u5929\u3002",
      "Payment of $1,250.00 (USD) due 2024-01-15; see \u00A73(b).",
      "tab\tnew\nline\r\ncarriage \u00A0nbsp\u2009thin",
      "emoji \U0001F600 and \u0394\u03B5\u03BB\u03C4\u03B1 and \u041F\u0440\u0438\u0432\u0435\u0442",
      "zero\u200Dwidth soft\u00ADhyphen ctrl\x07" "bell",
      "[CLS] keep [SEP] specials [MASK]",
      "The defendant's counsel (Smith & Jones, LLP) objected\u2014again.",
      std::string(120, 'x') + " short",
  };
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  VocabBuilderOptions vo;
  vo.vocab_size = 300;
  vo.min_frequency = 1;
  for (auto& v : BuildWordPieceVocab(inputs, vo)) {
    if (std::find(vocab.begin(), vocab.end(), v) == vocab.end()) vocab.push_back(v);
  }
  {
    std::ofstream vf(dir / "vocab.txt");
    for (const auto& v : vocab) vf << v << "\n";
    std::ofstream(dir / "in.json") << nlohmann::json(inputs).dump();
  }
  std::string cmd = std::string("/usr/bin/python3 ") + ATTUNE_SOURCE_DIR + "/tests/fixtures/hf_bert_tokenizer.py " +
                    (dir / "vocab.txt").string() + " " + (dir / "in.json").string() + " " + (dir / "out.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto expected = nlohmann::json::parse(std::ifstream(dir / "out.json"));
  TokenizerOptions o;
  auto t = WordPieceTokenizer::Create(vocab, o);
  ASSERT_THAT(t, IsOk());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(t->Tokenize(inputs[i]), expected[i].get<Tokens>()) << "input " << i << ": " << inputs[i];
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace attune::worker::text
