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
  // Masked-LM models: candidates per [MASK] (0: 5). Causal-LM models: the
  // top-k filter when sampling (0: none).
  int top_k = 0;
  // cpu, cuda or cuda:N (device.h): the model and each batch go there; a GPU
  // this build or machine cannot give is kFailedPrecondition naming why.
  std::string device = "cpu";

  // Causal-LM models (decoder LLMs) do one of two things:
  // - logprobs: {"text": s} -> {"ids": [...], "logprobs": [...]}, ids as
  //   HF's tokenizer(s)["input_ids"] and logprobs[i] = log p(ids[i+1] |
  //   ids[:i+1]); a {"messages": [...]} record is rendered by the chat
  //   template first (and keeps attune tokenize's text and assistant_mask);
  // - max_new_tokens > 0: {"text"} or {"messages"} (rendered with the
  //   generation prompt) -> {"generated_ids", "generated_text",
  //   "finish_reason": "stop"|"length", "prompt_tokens"}, stopping at the
  //   EOS ids of the tokenizer and generation_config.json (else
  //   config.json), the stop token kept in generated_ids, and at `stop` in
  //   the text (which then ends before it).
  bool logprobs = false;
  int max_new_tokens = 0;
  double temperature = 0;  // 0: greedy, whatever generation_config.json suggests
  double top_p = 1;
  uint64_t seed = 0;
  std::string stop;
};

// What a run did, for the throughput line on standard error.
struct PredictStats {
  int64_t records = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;  // causal-LM generation
  double prefill_seconds = 0, decode_seconds = 0;
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
// Input that cannot be used (a bad record, a model or tokenizer file) is
// kInvalidArgument naming the file, the line or the key.
absl::Status Predict(const std::string& model_dir, const std::string& input, const PredictOptions& options,
                     std::ostream& out, PredictStats* stats = nullptr);

}  // namespace attune::worker::train
