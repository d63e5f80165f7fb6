#pragma once

// attune predict for causal-LM models (predict.h's logprobs and generation
// modes): JSON lines through the model directory's tokenizer (tokenizer.json or tokenizer.model) and chat
// template into generate.h, and back to JSON lines.

#include <cstdint>
#include <ostream>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/decoder.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/train/predict.h"

namespace attune::worker::train {

// The ids that end a generation: the tokenizer's eos_token, and
// generation_config.json's eos_token_id in `model_dir` (an id or a list;
// none when `model_dir` is empty or has no such file), else config.json's.
absl::StatusOr<std::set<int64_t>> StopIds(const model::DecoderLmImpl& m, const text::BpeTokenizer& tok,
                                          const std::string& model_dir);

absl::Status PredictCausalLm(model::DecoderLmImpl& m, const std::string& model_dir, const std::string& input,
                             const PredictOptions& o, std::ostream& out, PredictStats* stats);

}  // namespace attune::worker::train
