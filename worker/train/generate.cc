#include "worker/train/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"

namespace attune::worker::train {
namespace {

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// HF's logits processors in generate()'s order: temperature, top-k
// (everything below the k-th largest score removed), top-p (the tokens,
// least likely first, whose cumulative probability stays at or below 1 -
// top_p removed, the most likely always kept).
torch::Tensor Filter(torch::Tensor scores, const SamplingOptions& o) {
  scores = scores / o.temperature;
  const float minus_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < scores.size(-1)) {
    const torch::Tensor kth = std::get<0>(scores.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, minus_inf);
  }
  if (o.top_p < 1) {
    auto [sorted, order] = scores.sort(-1, /*descending=*/false);
    torch::Tensor remove = sorted.softmax(-1).cumsum(-1) <= 1 - o.top_p;
    remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);
    scores = scores.masked_fill(remove.scatter(-1, order, remove), minus_inf);
  }
  return scores;
}

// `rows` as one [rows, longest] batch of ids and its mask (1 on real
// tokens), each row against the left edge (prompts) or the right; every id
// must lie in the vocabulary and every row hold at most `max_len` ids (`what`
// names a row in errors).
absl::Status PadRows(const model::DecoderLmImpl& m, const std::vector<std::vector<int64_t>>& rows, bool left,
                     int64_t max_len, const char* what, torch::Tensor* ids, torch::Tensor* mask) {
  int64_t longest = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto n = static_cast<int64_t>(rows[i].size());
    if (n > max_len) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", i, " has ", n,
                                                     " tokens; the model's max_position_embeddings is ",
                                                     m.config().max_position_embeddings));
    }
    for (int64_t id : rows[i]) {
      if (id < 0 || id >= m.config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(what, " ", i, ": token id ", id, " is outside the vocabulary"));
      }
    }
    longest = std::max(longest, n);
  }
  const auto b = static_cast<int64_t>(rows.size());
  *ids = torch::zeros({b, longest}, torch::kLong);
  *mask = torch::zeros({b, longest}, torch::kLong);
  for (int64_t r = 0; r < b; ++r) {
    const auto& row = rows[static_cast<size_t>(r)];
    const auto n = static_cast<int64_t>(row.size());
    if (n == 0) continue;
    const int64_t off = left ? longest - n : 0;
    (*ids)[r].narrow(0, off, n).copy_(torch::tensor(row, torch::kLong));
    (*mask)[r].narrow(0, off, n).fill_(1);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Generation>> Generate(
    model::DecoderLmImpl& m, const std::vector<std::vector<int64_t>>& prompts, const SamplingOptions& o,
    const std::vector<uint64_t>& seeds, const std::set<int64_t>& stop_ids,
    const std::function<bool(size_t row, const std::vector<int64_t>& generated)>& stopped, GenerationStats* stats) {
  if (o.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be at least 1");
  if (!(o.temperature >= 0) || !(o.top_p > 0 && o.top_p <= 1) || o.top_k < 0) {
    return absl::InvalidArgumentError("temperature must be >= 0, top_p in (0, 1] and top_k >= 0");
  }
  if (seeds.size() != prompts.size()) return absl::InvalidArgumentError("one seed per prompt");
  std::vector<Generation> out(prompts.size());
  if (prompts.empty()) return out;
  const int64_t limit = m.config().max_position_embeddings;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " is empty"));
  }
  torch::Tensor ids, mask;  // generation needs a position after the prompt
  if (auto s = PadRows(m, prompts, /*left=*/true, limit - 1, "prompt", &ids, &mask); !s.ok()) return s;
  const int64_t longest = ids.size(1);
  const auto device = m.embed_tokens->weight.device();
  std::vector<at::Generator> generators;
  for (uint64_t s : seeds) generators.push_back(at::detail::createCPUGenerator(s));

  torch::NoGradGuard no_grad;
  model::KvCache cache(std::min(limit, longest + o.max_new_tokens));
  auto start = std::chrono::steady_clock::now();
  torch::Tensor logits = m.Forward(ids.to(device), mask.to(device), &cache, /*last_only=*/true);
  if (stats != nullptr) {
    stats->prompt_tokens += mask.sum().item<int64_t>();
    stats->prefill_seconds += Since(start);
  }
  start = std::chrono::steady_clock::now();
  std::vector<size_t> active(prompts.size());
  for (size_t i = 0; i < active.size(); ++i) active[i] = i;
  while (true) {
    torch::Tensor next;
    if (o.temperature == 0) {
      next = logits.argmax(-1).cpu();
    } else {
      const torch::Tensor probs = Filter(logits.to(torch::kFloat), o).softmax(-1).cpu();
      next = torch::empty({static_cast<int64_t>(active.size())}, torch::kLong);
      for (size_t j = 0; j < active.size(); ++j) {
        next[static_cast<int64_t>(j)] =
            torch::multinomial(probs[static_cast<int64_t>(j)], 1, false, generators[active[j]]).item<int64_t>();
      }
    }
    std::vector<int64_t> keep;
    std::vector<size_t> still;
    for (size_t j = 0; j < active.size(); ++j) {
      Generation& g = out[active[j]];
      const int64_t id = next[static_cast<int64_t>(j)].item<int64_t>();
      g.ids.push_back(id);
      if (stop_ids.count(id) > 0 || (stopped && stopped(active[j], g.ids))) {
        g.finish_reason = "stop";
      } else if (static_cast<int>(g.ids.size()) >= o.max_new_tokens || cache.length >= cache.capacity) {
        g.finish_reason = "length";
      } else {
        keep.push_back(static_cast<int64_t>(j));
        still.push_back(active[j]);
      }
    }
    if (stats != nullptr) stats->generated_tokens += static_cast<int64_t>(active.size());
    if (still.empty()) break;
    if (still.size() < active.size()) {
      const torch::Tensor rows = torch::tensor(keep, torch::kLong);
      cache.SelectRows(rows);
      next = next.index_select(0, rows);
    }
    active = std::move(still);
    const torch::Tensor step = next.unsqueeze(1).to(device);
    logits = m.Forward(step, torch::ones_like(step), &cache, /*last_only=*/true);
  }
  if (stats != nullptr) stats->decode_seconds += Since(start);
  return out;
}

absl::StatusOr<std::vector<std::vector<double>>> TokenLogprobs(model::DecoderLmImpl& m,
                                                               const std::vector<std::vector<int64_t>>& sequences) {
  std::vector<std::vector<double>> out(sequences.size());
  torch::Tensor ids, mask;
  if (auto s = PadRows(m, sequences, /*left=*/false, m.config().max_position_embeddings, "sequence", &ids, &mask);
      !s.ok()) {
    return s;
  }
  const int64_t longest = ids.size(1);
  if (longest < 2) return out;
  const auto device = m.embed_tokens->weight.device();
  const auto b = static_cast<int64_t>(sequences.size());
  torch::NoGradGuard no_grad;
  const torch::Tensor hidden = m.Hidden(ids.to(device), mask.to(device), nullptr);
  // The LM head a slice of positions at a time: about 16M logits each.
  const int64_t vocab = m.config().vocab_size;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, b * vocab));
  std::vector<torch::Tensor> parts;
  for (int64_t c = 0; c < longest - 1; c += chunk) {
    const int64_t len = std::min(chunk, longest - 1 - c);
    const torch::Tensor lp = m.LmLogits(hidden.narrow(1, c, len)).to(torch::kFloat).log_softmax(-1);
    parts.push_back(lp.gather(-1, ids.narrow(1, c + 1, len).to(device).unsqueeze(-1)).squeeze(-1).cpu());
  }
  const torch::Tensor all = torch::cat(parts, 1).to(torch::kDouble).contiguous();  // [b, longest - 1]
  for (int64_t r = 0; r < b; ++r) {
    const auto n = static_cast<int64_t>(sequences[static_cast<size_t>(r)].size());
    if (n < 2) continue;
    const double* p = all[r].data_ptr<double>();
    out[static_cast<size_t>(r)].assign(p, p + n - 1);
  }
  return out;
}

}  // namespace attune::worker::train
