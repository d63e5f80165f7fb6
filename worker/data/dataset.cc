#include "worker/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace attune::worker::data {
namespace {

constexpr size_t kSampleLines = 10;

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Unbiased integer in [0, bound) by rejection.
uint64_t Below(uint64_t* state, uint64_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do {
    r = SplitMix64(state);
  } while (r >= limit);
  return r % bound;
}

}  // namespace


std::string NormalizeWhitespace(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
  }
  return out;
}

LabelMap::LabelMap(std::vector<std::string> labels) : labels_(std::move(labels)) {
  for (size_t i = 0; i < labels_.size(); ++i) ids_[labels_[i]] = static_cast<int>(i);
}

LabelMap LabelMap::FromLabels(const std::vector<std::string>& seen) {
  std::set<std::string> unique(seen.begin(), seen.end());
  std::vector<std::string> labels(unique.begin(), unique.end());
  bool all_int = !labels.empty();
  for (const auto& l : labels) {
    int64_t v;
    if (!absl::SimpleAtoi(l, &v)) all_int = false;
  }
  if (all_int) {
    std::sort(labels.begin(), labels.end(), [](const std::string& a, const std::string& b) {
      int64_t x = 0, y = 0;
      (void)absl::SimpleAtoi(a, &x);
      (void)absl::SimpleAtoi(b, &y);
      return x < y;
    });
  }
  return LabelMap(std::move(labels));
}

std::optional<int> LabelMap::Id(const std::string& label) const {
  auto it = ids_.find(label);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::string DataReport::ToJson() const {
  nlohmann::json j;
  j["source"] = source;
  j["rows_read"] = rows_read;
  j["rows_kept"] = rows_kept;
  j["dropped"] = nlohmann::json::object();
  for (const auto& [k, v] : dropped) j["dropped"][k] = v;
  j["label_counts"] = nlohmann::json::object();
  for (const auto& [k, v] : label_counts) j["label_counts"][k] = v;
  if (has_targets) {
    j["targets"] = {{"min", target_min}, {"max", target_max}, {"mean", target_mean}, {"stddev", target_stddev}};
  }
  j["sample_dropped_lines"] = nlohmann::json::object();
  for (const auto& [k, v] : sample_lines) j["sample_dropped_lines"][k] = v;
  return j.dump(2);
}

CleanResult Clean(const std::vector<Record>& records, const CleaningPolicy& policy,
                  const std::optional<LabelMap>& labels, const std::string& source) {
  CleanResult out;
  out.report.source = source;
  out.report.rows_read = static_cast<int64_t>(records.size());
  auto drop = [&](const std::string& reason, int64_t line) {
    ++out.report.dropped[reason];
    auto& lines = out.report.sample_lines[reason];
    if (lines.size() < kSampleLines) lines.push_back(line);
  };
  auto blank = [](const std::optional<std::string>& v) {
    return !v.has_value() || NormalizeWhitespace(*v).empty();
  };
  // The label in one spelling per meaning: a sorted, deduplicated set for
  // multi-label rows ("" is the empty set, written ";" in a file or [] in
  // JSONL), the shortest exact decimal for numbers; nullopt if invalid.
  auto canonical = [&](const std::string& raw) -> std::optional<std::string> {
    switch (policy.kind) {
      case LabelKind::kClass: return NormalizeWhitespace(raw);
      case LabelKind::kMultiLabel: {
        std::set<std::string> parts;
        for (absl::string_view p : absl::StrSplit(raw, ';', absl::SkipEmpty())) {
          std::string n = NormalizeWhitespace(std::string(p));
          if (!n.empty()) parts.insert(n);
        }
        return absl::StrJoin(parts, ";");
      }
      case LabelKind::kNone: return std::string();
      case LabelKind::kTags: return NormalizeWhitespace(raw);
      case LabelKind::kNumber: {
        double v;
        std::string n = NormalizeWhitespace(raw);
        if (!absl::SimpleAtod(n, &v) || !std::isfinite(v)) return std::nullopt;
        return absl::StrFormat("%.17g", v);
      }
    }
    return std::nullopt;
  };

  // Pass 1: validity, then the labels each normalised text appears with.
  struct Kept {
    const Record* r;
    std::string key;
  };
  std::vector<Kept> valid;
  std::unordered_map<std::string, std::set<std::string>> labels_of;
  for (const Record& r : records) {
    bool utf8 = (!r.text || IsValidUtf8(*r.text)) && (!r.text_pair || IsValidUtf8(*r.text_pair)) &&
                (!r.label || IsValidUtf8(*r.label));
    if (!utf8) {
      drop("invalid_utf8", r.line);
      continue;
    }
    if (blank(r.text)) {
      if (policy.drop_missing) {
        drop("missing_text", r.line);
        continue;
      }
    }
    if (policy.kind != LabelKind::kNone && (blank(r.label) || !canonical(*r.label))) {
      // A row without a label cannot be trained on whatever the policy says.
      drop(blank(r.label) ? "missing_label" : "invalid_number", r.line);
      continue;
    }
    if (policy.kind == LabelKind::kTags && r.words.size() != r.tags.size()) {
      drop("tag_count_mismatch", r.line);
      continue;
    }
    std::string key = NormalizeWhitespace(r.text.value_or(""));
    if (r.text_pair) key += std::string("\x1f") + NormalizeWhitespace(*r.text_pair);
    labels_of[key].insert(*canonical(r.label.value_or("")));
    valid.push_back({&r, std::move(key)});
  }

  // Pass 2: conflicts and duplicates, keeping the first occurrence.
  std::unordered_map<std::string, bool> seen;
  std::vector<const Record*> kept;
  for (const Kept& k : valid) {
    if (policy.drop_conflicting && labels_of[k.key].size() > 1) {
      drop("conflicting_label", k.r->line);
      continue;
    }
    std::string dedup_key = k.key + "\x1e" + *canonical(k.r->label.value_or(""));
    if (policy.drop_duplicates && seen.count(dedup_key)) {
      drop("duplicate", k.r->line);
      continue;
    }
    seen[dedup_key] = true;
    kept.push_back(k.r);
  }

  if (labels) {
    out.labels = *labels;
  } else if (policy.kind == LabelKind::kClass || policy.kind == LabelKind::kMultiLabel ||
             policy.kind == LabelKind::kTags) {
    std::vector<std::string> all;
    for (const Record* r : kept) {
      if (policy.kind == LabelKind::kClass) {
        all.push_back(*canonical(*r->label));
      } else if (policy.kind == LabelKind::kTags) {
        all.insert(all.end(), r->tags.begin(), r->tags.end());
      } else {
        for (absl::string_view p : absl::StrSplit(*canonical(*r->label), ';', absl::SkipEmpty())) all.emplace_back(p);
      }
    }
    out.labels = LabelMap::FromLabels(all);
  }
  double sum = 0, sum_sq = 0;
  for (const Record* r : kept) {
    const std::string label = *canonical(r->label.value_or(""));
    Example e;
    e.text = r->text.value_or("");
    e.text_pair = r->text_pair;
    e.line = r->line;
    if (policy.kind == LabelKind::kClass) {
      auto id = out.labels.Id(label);
      if (!id) {
        drop("unknown_label", r->line);
        continue;
      }
      e.label = *id;
      ++out.report.label_counts[label];
    } else if (policy.kind == LabelKind::kMultiLabel) {
      bool known = true;
      for (absl::string_view p : absl::StrSplit(label, ';', absl::SkipEmpty())) {
        auto id = out.labels.Id(std::string(p));
        known &= id.has_value();
        if (id) e.labels.push_back(*id);
      }
      if (!known) {
        drop("unknown_label", r->line);
        continue;
      }
      std::sort(e.labels.begin(), e.labels.end());
      for (int id : e.labels) ++out.report.label_counts[out.labels.Name(id)];
    } else if (policy.kind == LabelKind::kTags) {
      bool known = true;
      for (const auto& t : r->tags) {
        auto id = out.labels.Id(t);
        known &= id.has_value();
        e.tags.push_back(id.value_or(-1));
      }
      if (!known) {
        drop("unknown_label", r->line);
        continue;
      }
      e.words = r->words;
      for (const auto& t : r->tags) ++out.report.label_counts[t];
    } else if (policy.kind == LabelKind::kNumber) {
      (void)absl::SimpleAtod(label, &e.value);
      if (!out.report.has_targets) out.report.target_min = out.report.target_max = e.value;
      out.report.has_targets = true;
      out.report.target_min = std::min(out.report.target_min, e.value);
      out.report.target_max = std::max(out.report.target_max, e.value);
      sum += e.value;
      sum_sq += e.value * e.value;
    }
    out.examples.push_back(std::move(e));
  }
  out.report.rows_kept = static_cast<int64_t>(out.examples.size());
  if (out.report.has_targets) {
    const double n = static_cast<double>(out.examples.size());
    out.report.target_mean = sum / n;
    out.report.target_stddev = std::sqrt(std::max(0.0, sum_sq / n - out.report.target_mean * out.report.target_mean));
  }
  return out;
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(Below(&state, static_cast<uint64_t>(i + 1)));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

void StratifiedSplit(std::vector<Example> all, double fraction, uint64_t seed, std::vector<Example>* train,
                     std::vector<Example>* validation) {
  std::map<int, std::vector<size_t>> by_label;
  for (size_t i = 0; i < all.size(); ++i) by_label[all[i].label].push_back(i);
  std::vector<bool> to_validation(all.size(), false);
  for (auto& [label, idx] : by_label) {
    auto perm = SeededPermutation(static_cast<int64_t>(idx.size()), seed * 1000003ULL + static_cast<uint64_t>(label));
    auto take = static_cast<size_t>(static_cast<double>(idx.size()) * fraction + 0.5);
    if (take == 0 && idx.size() >= 2 && fraction > 0) take = 1;
    if (take >= idx.size() && idx.size() >= 2) take = idx.size() - 1;
    for (size_t k = 0; k < take; ++k) to_validation[idx[static_cast<size_t>(perm[k])]] = true;
  }
  for (size_t i = 0; i < all.size(); ++i) {
    (to_validation[i] ? validation : train)->push_back(std::move(all[i]));
  }
}

EpochSampler::EpochSampler(int64_t dataset_size, int64_t per_rank_batch, int rank, int world_size, uint64_t seed,
                           bool shuffle)
    : n_(dataset_size), batch_(per_rank_batch), rank_(rank), world_(world_size), seed_(seed), shuffle_(shuffle) {
  Permute();
}

void EpochSampler::Permute() {
  if (shuffle_) {
    perm_ = SeededPermutation(n_, seed_ ^ (0x5851f42d4c957f2dULL * static_cast<uint64_t>(epoch_ + 1)));
  } else {
    perm_.clear();
    for (int64_t i = 0; i < n_; ++i) perm_.push_back(i);
  }
}

void EpochSampler::StartEpoch(int64_t epoch) {
  epoch_ = epoch;
  cursor_ = 0;
  Permute();
}

void EpochSampler::Restore(const SamplerState& s) {
  seed_ = s.seed;
  epoch_ = s.epoch;
  Permute();
  cursor_ = std::min(s.cursor, n_);
}

int64_t EpochSampler::StepsPerEpoch() const {
  int64_t global = batch_ * world_;
  return (n_ + global - 1) / global;
}

std::vector<int64_t> EpochSampler::Next() {
  int64_t global = std::min(batch_ * world_, n_ - cursor_);
  last_global_ = global;
  if (global <= 0) return {};
  // Split `global` as evenly as possible: the first (global % world) ranks get one more.
  int64_t base = global / world_, extra = global % world_;
  int64_t begin = cursor_ + rank_ * base + std::min<int64_t>(rank_, extra);
  int64_t count = base + (rank_ < extra ? 1 : 0);
  std::vector<int64_t> out(perm_.begin() + begin, perm_.begin() + begin + count);
  cursor_ += global;
  return out;
}

}  // namespace attune::worker::data
