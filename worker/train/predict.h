#pragma once

// Batch inference with an exported model directory. Torch stays in the .cc.

#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace attune::worker::train {

struct PredictOptions {
  std::string text_column = "text";
  std::string text_pair_column = "text_pair";
  int max_length = 0;  // 0: the length the model was trained with, else its max_position_embeddings capped at 512
  int batch_size = 32;
  int threads = 1;
  int top_k = 5;  // masked-LM models: candidates per [MASK]
  // cpu, cuda or cuda:N (device.h): the model and each batch go there; a GPU
  // this build or machine cannot give is kFailedPrecondition naming why.
  std::string device = "cpu";
};

// Reads `input` (CSV or JSONL with a text column and optionally a text_pair
// column) and writes one JSON line per record, in input order:
// {"logits": [...], "probs": [...], "label": "..."} for sequence
// classification, plus "labels" (every label above 0.5) for multi-label, and
// {"logits": [x], "score": x} for regression (from config.json's problem_type).
// A BertForMaskedLM model fills masks instead: {"masks": [{"index": i,
// "top_k": [{"id", "token", "score"}]}]} per [MASK] in the text, where i is
// the token position in the encoded ids ([CLS] = 0) and scores are softmax
// probabilities, best first.
absl::Status Predict(const std::string& model_dir, const std::string& input, const PredictOptions& options,
                     std::ostream& out);

}  // namespace attune::worker::train
