#pragma once

// Inference with a decoder LLM (model/decoder.h): the log-probability of
// each token of a sequence given those before it, and continuations of
// prompts, batched (left-padded) with a KV cache, greedy or sampled as
// Hugging Face's generate() does (temperature, then top-k, then top-p).

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/decoder.h"

namespace attune::worker::train {

struct SamplingOptions {
  int max_new_tokens = 16;  // at least 1
  double temperature = 0;   // 0: greedy (the most likely token)
  double top_p = 1;         // (0, 1]: the smallest set of tokens whose probability reaches it
  int top_k = 0;            // 0: no top-k filter
};

struct Generation {
  std::vector<int64_t> ids;   // the generated tokens, the one that stopped them included
  std::string finish_reason;  // "stop" (a stop id or `stopped`) or "length"
};

struct GenerationStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Continues each prompt (token ids, none empty, each at most the model's
// max_position_embeddings - 1 long). A row stops at a token in `stop_ids`,
// when `stopped` (may be empty) says so for its generated ids, after
// `max_new_tokens`, or when the model's positions run out ("length"). Row i
// samples from its own generator seeded with seeds[i], so a row's
// continuation does not depend on which rows share its batch.
absl::StatusOr<std::vector<Generation>> Generate(
    model::DecoderLmImpl& m, const std::vector<std::vector<int64_t>>& prompts, const SamplingOptions& o,
    const std::vector<uint64_t>& seeds, const std::set<int64_t>& stop_ids,
    const std::function<bool(size_t row, const std::vector<int64_t>& generated)>& stopped, GenerationStats* stats);

// For each sequence, log p(ids[i+1] | ids[:i+1]) for i in [0, len - 1), in
// float32 arithmetic from the model's logits.
absl::StatusOr<std::vector<std::vector<double>>> TokenLogprobs(model::DecoderLmImpl& m,
                                                               const std::vector<std::vector<int64_t>>& sequences);

}  // namespace attune::worker::train
