#pragma once

// WordPiece tokenisation with the semantics of Hugging Face BertTokenizer
// (BasicTokenizer + WordpieceTokenizer), and a WordPiece vocabulary builder.
// Thread-compatible: a const Tokenizer may be shared between threads.

#include <cstdint>
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

class Tokenizer {
 public:
  // `vocab` lists tokens in id order. Must contain [UNK], [CLS], [SEP], [PAD].
  static absl::StatusOr<Tokenizer> Create(std::vector<std::string> vocab, TokenizerOptions options);
  // Loads vocab.txt from `dir`, and do_lower_case / strip_accents /
  // tokenize_chinese_chars from tokenizer_config.json when present. Without
  // vocab.txt, reads an HF fast tokenizer's tokenizer.json: its WordPiece
  // vocabulary and its BertNormalizer's lowercase / strip_accents /
  // handle_chinese_chars (strip_accents null follows lowercase, as in HF).
  // Another model or normalizer type is refused by name.
  static absl::StatusOr<Tokenizer> FromDirectory(const std::string& dir);
  static absl::StatusOr<Tokenizer> FromTokenizerJson(const std::string& path);
  static absl::StatusOr<Tokenizer> FromVocabFile(const std::string& vocab_path, TokenizerOptions options);

  // BasicTokenizer: clean, split CJK, lower-case and strip accents, split punctuation.
  std::vector<std::string> BasicTokenize(const std::string& text) const;
  // Full tokenisation to WordPiece strings.
  std::vector<std::string> Tokenize(const std::string& text) const;
  std::vector<int64_t> ConvertTokensToIds(const std::vector<std::string>& tokens) const;

  // [CLS] a [SEP] (b [SEP]), truncated longest-first to `max_length` and
  // padded with [PAD] to exactly `max_length` when `pad` is set.
  Encoding Encode(const std::string& a, const std::string* b, int max_length, bool pad) const;

  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  const std::vector<std::string>& vocab() const { return vocab_; }
  const TokenizerOptions& options() const { return options_; }
  int64_t pad_id() const { return pad_id_; }
  // Writes vocab.txt and tokenizer_config.json into `dir`.
  // model_max_length: the longest input the model takes (its position
  // embeddings, at most 512), for tokenizer_config.json.
  absl::Status Save(const std::string& dir, int64_t model_max_length = 512) const;

 private:
  Tokenizer() = default;
  std::vector<std::string> WordPiece(const std::string& word) const;
  void TokenizeSegment(const std::string& text, std::vector<std::string>* out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  TokenizerOptions options_;
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0;
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
