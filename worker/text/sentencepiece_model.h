#pragma once

// NOTE [tokenizer.model]: a decoder directory that ships SentencePiece's own
// tokenizer.model and no tokenizer.json (older Llama 2 and Mistral uploads)
// is read and converted to the tokenizer.json that
// Hugging Face's AutoTokenizer makes of it (transformers'
// convert_slow_tokenizer, LlamaConverter), which BpeTokenizer then runs, so
// the ids are those of HF's fast tokenizer on that directory:
// - the BPE vocabulary is the model's pieces in id order; the merges are every
//   split of a piece into two pieces, ordered by the piece's score (highest
//   first), a piece's splits by their halves' ids (SentencePieceExtractor);
//   byte_fallback and fuse_unk on, unk the model's;
// - control pieces (<s>, </s>) and the unknown piece are special added
//   tokens, user-defined pieces plain added tokens;
// - tokenizer_config.json's `legacy` (default true): the Prepend("▁") and
//   Replace(" ", "▁") normalizers; `legacy: false`: a Metaspace pre-tokenizer
//   that prepends to the first piece only; `add_prefix_space: false` drops the
//   prepend;
// - the post-processor adds bos (`add_bos_token`, default true) and eos
//   (`add_eos_token`, default false), as LlamaTokenizerFast does.
// The merges are ordered as transformers 4.x's SentencePieceExtractor orders
// them (score alone; some later versions break ties between pieces of equal
// score by the halves' lengths), which reproduces the Llama 2 package's
// tokenizer.json merge for merge.
// What HF's conversion would silently get wrong or cannot express is refused
// naming the field: a Unigram, word or char model, a normaliser other than
// identity (HF drops its rules), remove_extra_whitespaces (HF ignores it,
// SentencePiece collapses spaces), add_dummy_prefix false (HF prefixes
// anyway), treat_whitespace_as_suffix, a tokenizer_class other than Llama's
// (Gemma's and others are converted by other rules), a model whose pieces
// split into more than 2M merges, a non-finite score. A config that does not
// name bos/eos/unk gets the model's pieces, as LlamaTokenizer defaults them.
//
// The file is read by this project's own reader of its protobuf fields, not
// by libsentencepiece: Debian's libsentencepiece (0.1.97) carries its own
// protobuf 3.14 and exports it, and a process that also loads the system's
// protobuf 3.21 (as libtorch and gRPC do) aborts when it loads
// ("compiled against version 3.14.0 ... not compatible with 3.21.12").
// libsentencepiece (through python3-sentencepiece) is the tests' reference
// for the pieces, their scores and types, and the ids.

#include <string>

#include "absl/status/statusor.h"

namespace attune::worker::text {

struct ConvertedSentencePiece {
  std::string tokenizer_json;
  // The tokenizer_config.json given (with the model's bos, eos and unk pieces
  // for those it does not name), or for a model that came without one those
  // pieces, BOS added, no EOS (LlamaTokenizer's defaults).
  std::string tokenizer_config_json;
};

// `model` holds the bytes of a tokenizer.model, `tokenizer_config_json` the
// tokenizer_config.json beside it ("" when there is none), `source` names the
// model file in errors (kInvalidArgument naming the field).
absl::StatusOr<ConvertedSentencePiece> ConvertSentencePiece(const std::string& model,
                                                            const std::string& tokenizer_config_json,
                                                            const std::string& source);

}  // namespace attune::worker::text
