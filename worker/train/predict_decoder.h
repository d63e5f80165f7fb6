#pragma once

// attune predict for causal-LM models (predict.h's logprobs and generation
// modes): JSON lines through the model directory's tokenizer.json and chat
// template into generate.h, and back to JSON lines.

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "worker/model/decoder.h"
#include "worker/train/predict.h"

namespace attune::worker::train {

absl::Status PredictCausalLm(model::DecoderLmImpl& m, const std::string& model_dir, const std::string& input,
                             const PredictOptions& o, std::ostream& out, PredictStats* stats);

}  // namespace attune::worker::train
