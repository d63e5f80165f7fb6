#pragma once

// BPE tokenizers read from a Hugging Face tokenizer.json (the "fast" format)
// with the semantics of the Rust `tokenizers` crate: added tokens split out
// first (leftmost, then longest), then per remaining segment the normalizer
// (NFC/NFKC/NFD/NFKD, Prepend, Replace, Lowercase, Strip, Sequence), the
// pre-tokenizer (Split by a regex, ByteLevel, Metaspace, Sequence), the BPE
// model (merges by rank, ignore_merges, byte_fallback, unk and fuse_unk), and
// the post-processor (TemplateProcessing, ByteLevel, RobertaProcessing,
// BertProcessing, Sequence). Byte-level BPE is Llama 3's, Qwen's and GPT-2's;
// SentencePiece-style BPE (Prepend/Replace or Metaspace, byte_fallback) is
// Llama 2's and Mistral's. A component or option this build lacks is
// refused by name (NOTE [tokenizer interface]). Regexes run on ICU with the
// Unicode properties the Rust crate's Oniguruma gives \s, \p{L} and \p{N}.
// Immutable once loaded: a const BpeTokenizer may be shared between threads.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::text {

class BpeTokenizer : public Tokenizer {
 public:
  ~BpeTokenizer() override;
  // tokenizer.json, and tokenizer_config.json beside it when present (its
  // bos/eos/pad/unk tokens). Errors name the file and the key.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromTokenizerJson(const std::string& path);
  // A decoder's tokenizer in `dir`: its tokenizer.json, else its
  // tokenizer.model (SentencePiece, converted as NOTE [tokenizer.model] says),
  // with tokenizer_config.json beside either.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromDirectory(const std::string& dir);
  // The same from texts; `source` names them in errors.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(const std::string& tokenizer_json,
                                                                 const std::string& tokenizer_config_json,
                                                                 const std::string& source);

  // HF's tokenizer(text)["input_ids"]: with `add_special_tokens` the
  // post-processor's (BOS, say) around the pieces.
  std::vector<int64_t> EncodeText(const std::string& text, bool add_special_tokens) const;
  // The same, and for each id the byte range [begin, end) of `text` it
  // stands for, through the normalizer and pre-tokenizer (HF's
  // offset_mapping, in bytes); the post-processor's specials get (0, 0).
  std::vector<int64_t> EncodeWithOffsets(const std::string& text, bool add_special_tokens,
                                         std::vector<std::pair<size_t, size_t>>* offsets) const;
  // tokenizer_config.json's named special tokens as strings (bos_token,
  // eos_token, pad_token, unk_token), for a chat template's context.
  const std::vector<std::pair<std::string, std::string>>& named_tokens() const { return named_tokens_; }
  // tokenizer_config.json's chat_template (its "default" when it holds several); empty when none.
  const std::string& chat_template() const { return chat_template_; }
  // HF's decode(ids, skip_special_tokens) through the decoder chain; bytes
  // that are not UTF-8 become U+FFFD, as errors="replace" does.
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
  // The id of a token string (added tokens included); -1 when absent.
  int64_t TokenId(const std::string& token) const;
  // Ids of the tokenizer_config's eos_token and the added tokens marked special.
  bool IsSpecial(int64_t id) const;

  std::vector<std::string> SplitWords(const std::string& text) const override;
  std::vector<int64_t> EncodePieces(const std::string& text) const override { return EncodeText(text, false); }
  Encoding Encode(const std::string& a, const std::string* b, int max_length, bool pad) const override;
  const std::vector<std::string>& vocab() const override { return vocab_; }
  bool IsContinuation(int64_t id) const override;
  const SpecialIds& special() const override { return special_; }
  // tokenizer.json and tokenizer_config.json as they were read (converted,
  // for a tokenizer.model, which is written beside them as it was read).
  absl::Status Save(const std::string& dir, int64_t model_max_length = 512) const override;

  struct Impl;  // the parsed pipeline (bpe_tokenizer.cc)

 private:
  BpeTokenizer();
  // The pieces of one segment between added tokens (no specials), which
  // starts at byte `base` of the text; `first`: at the text's start.
  void EncodeSegment(const std::string& segment, size_t base, bool first, std::vector<int64_t>* out,
                     std::vector<std::pair<size_t, size_t>>* offsets) const;

  std::unique_ptr<Impl> impl_;
  std::vector<std::string> vocab_;  // id -> token, added tokens included
  SpecialIds special_;
  std::string tokenizer_json_, tokenizer_config_json_;
  std::string sentencepiece_model_;  // the tokenizer.model it was converted from, if any
  std::vector<std::pair<std::string, std::string>> named_tokens_;
  std::string chat_template_;
};

}  // namespace attune::worker::text
