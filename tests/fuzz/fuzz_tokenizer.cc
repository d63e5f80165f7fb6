// Basic + WordPiece tokenisation of arbitrary bytes, single texts and pairs.
#include <string>

#include "worker/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using attune::worker::text::WordPieceTokenizer;
  using attune::worker::text::TokenizerOptions;
  static const WordPieceTokenizer* tok = [] {
    std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "food", "##s", "great",
                                      "caf", "##e", "中", "a", "##b", "##c", ",", "."};
    TokenizerOptions o;
    auto t = WordPieceTokenizer::Create(vocab, o);
    return t.ok() ? new WordPieceTokenizer(std::move(*t)) : nullptr;
  }();
  if (tok == nullptr) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)tok->Encode(text, nullptr, 64, true);
  const size_t half = size / 2;
  const std::string a = text.substr(0, half), b = text.substr(half);
  (void)tok->Encode(a, &b, 32, false);
  return 0;
}
