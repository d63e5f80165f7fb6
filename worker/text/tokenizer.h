#pragma once

// The tokenizer interface (NOTE [tokenizer interface]); WordPiece
// tokenisation with the semantics of Hugging Face BertTokenizer
// (BasicTokenizer + WordpieceTokenizer), and a WordPiece vocabulary builder.
// Thread-compatible: a const Tokenizer may be shared between threads.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::worker::text {

struct TokenizerOptions {
  bool do_lower_case = true;
  bool strip_accents = true;  // HF: None means "follow do_lower_case"
  bool tokenize_chinese_chars = true;
  int max_input_chars_per_word = 100;
};

struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  std::vector<int64_t> attention_mask;
};

// The ids of a tokenizer's special tokens; -1 where it has none.
struct SpecialIds {
  int64_t pad = -1, unk = -1;
  int64_t cls = -1, sep = -1;  // what opens and closes (and separates) a sequence
  int64_t mask = -1;           // masked-LM's mask token
};

// NOTE [tokenizer interface]: what tasks, the trainer, predict and the
// exporter know of a tokenizer. WordPiece (BERT's) is one implementation; a
// decoder's byte-level or SentencePiece BPE is added beside it without
// touching them. Implementations are immutable after loading: a const
// Tokenizer may be shared between threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The tokenizer a model directory holds (WordPiece: vocab.txt, or an HF
  // tokenizer.json of a WordPiece model); another kind is refused by name.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);

  // The words of `text` as the pre-tokenizer splits them (NER input given as
  // text), before any piece is made.
  virtual std::vector<std::string> SplitWords(const std::string& text) const = 0;
  // The piece ids of `text` with no special token added.
  virtual std::vector<int64_t> EncodePieces(const std::string& text) const = 0;
  // A model input: specials around `a` (and the pair `b`), truncated
  // longest-first to `max_length`, padded to exactly `max_length` when `pad`.
  virtual Encoding Encode(const std::string& a, const std::string* b, int max_length, bool pad) const = 0;

  // Tokens in id order.
  virtual const std::vector<std::string>& vocab() const = 0;
  int vocab_size() const { return static_cast<int>(vocab().size()); }
  // Whether piece `id` continues the word before it (WordPiece's ##).
  virtual bool IsContinuation(int64_t id) const = 0;
  virtual const SpecialIds& special() const = 0;
  int64_t pad_id() const { return special().pad; }

  // Writes the tokenizer's files into `dir`, as Hugging Face reads them.
  // model_max_length: the longest input the model takes, for tokenizer_config.json.
  virtual absl::Status Save(const std::string& dir, int64_t model_max_length = 512) const = 0;
};

// WordPiece with the semantics of Hugging Face BertTokenizer.
class WordPieceTokenizer : public Tokenizer {
 public:
  // `vocab` lists tokens in id order. Must contain [UNK], [CLS], [SEP], [PAD].
  static absl::StatusOr<WordPieceTokenizer> Create(std::vector<std::string> vocab, TokenizerOptions options);
  // Loads vocab.txt from `dir`, and do_lower_case / strip_accents /
  // tokenize_chinese_chars from tokenizer_config.json when present. Without
  // vocab.txt, reads an HF fast tokenizer's tokenizer.json: its WordPiece
  // vocabulary and its BertNormalizer's lowercase / strip_accents /
  // handle_chinese_chars (strip_accents null follows lowercase, as in HF).
  // Another model or normalizer type is refused by name.
  static absl::StatusOr<WordPieceTokenizer> FromDirectory(const std::string& dir);
  static absl::StatusOr<WordPieceTokenizer> FromTokenizerJson(const std::string& path);
  static absl::StatusOr<WordPieceTokenizer> FromVocabFile(const std::string& vocab_path, TokenizerOptions options);

  // BasicTokenizer: clean, split CJK, lower-case and strip accents, split punctuation.
  std::vector<std::string> BasicTokenize(const std::string& text) const;
  // Full tokenisation to WordPiece strings.
  std::vector<std::string> Tokenize(const std::string& text) const;
  // Unknown tokens give [UNK]'s id.
  std::vector<int64_t> ConvertTokensToIds(const std::vector<std::string>& tokens) const;

  std::vector<std::string> SplitWords(const std::string& text) const override { return BasicTokenize(text); }
  std::vector<int64_t> EncodePieces(const std::string& text) const override {
    return ConvertTokensToIds(Tokenize(text));
  }
  // [CLS] a [SEP] (b [SEP]), truncated longest-first, padded with [PAD].
  Encoding Encode(const std::string& a, const std::string* b, int max_length, bool pad) const override;
  const std::vector<std::string>& vocab() const override { return vocab_; }
  bool IsContinuation(int64_t id) const override;
  const SpecialIds& special() const override { return special_; }
  const TokenizerOptions& options() const { return options_; }
  // vocab.txt, tokenizer_config.json and special_tokens_map.json.
  absl::Status Save(const std::string& dir, int64_t model_max_length = 512) const override;

 private:
  WordPieceTokenizer() = default;
  std::vector<std::string> WordPiece(const std::string& word) const;
  void TokenizeSegment(const std::string& text, std::vector<std::string>* out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  TokenizerOptions options_;
  SpecialIds special_;
};

struct VocabBuilderOptions {
  int vocab_size = 8192;
  int min_frequency = 2;
  TokenizerOptions tokenizer;
};

// Learns a WordPiece vocabulary from `texts`: words from the basic tokenizer,
// then byte-pair-style merges of the most frequent adjacent pieces (word
// pieces after the first carry "##"), as the Hugging Face WordPiece trainer
// does. Specials come first: [PAD] [UNK] [CLS] [SEP] [MASK].
std::vector<std::string> BuildWordPieceVocab(const std::vector<std::string>& texts,
                                             const VocabBuilderOptions& options);

}  // namespace attune::worker::text
