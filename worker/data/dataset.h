#pragma once

// Reading, cleaning, labelling and splitting of domain text data. Torch-free.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/text.h"

namespace attune::worker::data {

// One row as read from a file. A value is nullopt when the column is absent,
// null (JSONL) or an empty CSV field.
struct Record {
  int64_t line = 0;  // 1-based line where the row starts
  std::optional<std::string> text;
  std::optional<std::string> text_pair;
  std::optional<std::string> label;
  // Token lists (token_classification): the words and their tags; `text` and
  // `label` then hold them joined by single spaces.
  std::vector<std::string> words, tags;
};

struct ReaderOptions {
  std::string text_column = "text";
  std::string text_pair_column;  // empty: single-sentence task
  std::string label_column = "label";
  bool require_label = true;     // false for prediction inputs
  bool require_text_pair = true; // false: a missing text_pair_column reads as no pairs
  // JSONL: a label that is an array of strings or numbers is read as its
  // elements joined by ';' (multi-label data); an element holding ';' is refused.
  bool label_list = false;
  // token_classification: the text and label columns of JSONL are arrays (the
  // words and their tags); CoNLL files (.conll, .iob, .bio) are read too.
  bool token_lists = false;
  // JSONL: each record kept whole, its line as `text` (conversations, whose
  // fields a task parses itself); no label is read.
  bool whole_record = false;
  int64_t max_field_bytes = int64_t{1} << 20;
  int64_t max_row_bytes = int64_t{4} << 20;
  int64_t max_rows = 50'000'000;
};

// Reads CSV (RFC 4180: quoted fields, embedded quotes, newlines and CRLF, a
// UTF-8 BOM) or JSONL, chosen by extension (.csv/.tsv vs .jsonl/.json/.ndjson);
// or, without labels (require_label false), plain text: a .txt file or a
// directory of them (in name order), one record per blank-line-separated
// paragraph; or, with token_lists, CoNLL (.conll/.iob/.bio: a token per line,
// its tag in the last column, a blank line between sentences, -DOCSTART-
// lines ignored).
// Malformed input is kInvalidArgument "FILE:LINE: reason"; a missing file is
// kNotFound; a field or row over its cap is kInvalidArgument naming the line,
// found without buffering more than the cap.
absl::StatusOr<std::vector<Record>> ReadRecords(const std::string& path, const ReaderOptions& options);

// What a row's label is.
enum class LabelKind {
  kClass,       // one class name
  kMultiLabel,  // a set of class names, ';'-separated (order and repeats do not matter; ";" alone is the empty set)
  kNumber,      // a finite decimal number (regression target)
  kNone,        // no label (masked_lm: the text is its own target)
  kTags,        // one tag per word (token_classification), space-separated in `label`
};

struct CleaningPolicy {
  bool drop_missing = true;      // missing or empty (after trimming) text or label
  bool drop_duplicates = true;   // exact duplicates after whitespace normalisation
  bool drop_conflicting = true;  // the same text seen with different labels
  LabelKind kind = LabelKind::kClass;
};

// Maps label strings to ids. Built from the data: labels that are all
// integers sort numerically, otherwise lexicographically; or given explicitly.
class LabelMap {
 public:
  LabelMap() = default;
  explicit LabelMap(std::vector<std::string> labels);
  static LabelMap FromLabels(const std::vector<std::string>& seen);

  int size() const { return static_cast<int>(labels_.size()); }
  std::optional<int> Id(const std::string& label) const;
  const std::string& Name(int id) const { return labels_.at(static_cast<size_t>(id)); }
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  std::vector<std::string> labels_;
  std::map<std::string, int> ids_;
};

struct Example {
  std::string text;
  std::optional<std::string> text_pair;
  int label = -1;           // kClass: the class id; -1 otherwise
  int64_t line = 0;
  std::vector<int> labels;  // kMultiLabel: the class ids, ascending
  double value = 0;         // kNumber: the target
  std::vector<std::string> words;  // kTags: the words
  std::vector<int> tags;           // kTags: their tag ids
};

// What cleaning did, for data_report.json.
struct DataReport {
  std::string source;
  int64_t rows_read = 0;
  int64_t rows_kept = 0;
  std::map<std::string, int64_t> dropped;  // reason -> count
  std::map<std::string, int64_t> label_counts;  // kMultiLabel: per class
  // kNumber: the targets kept.
  bool has_targets = false;
  double target_min = 0, target_max = 0, target_mean = 0, target_stddev = 0;
  // First few dropped lines per reason, so a person can look at them.
  std::map<std::string, std::vector<int64_t>> sample_lines;
  std::string ToJson() const;
};

// Applies the policy. Reasons: missing_text, missing_label, invalid_utf8,
// duplicate, conflicting_label, unknown_label (label absent from a given map),
// invalid_number (kNumber: not a finite decimal number), tag_count_mismatch
// (kTags: not one tag per word).
// With `labels` nullopt the map is built from the kept rows.
struct CleanResult {
  std::vector<Example> examples;
  DataReport report;
  LabelMap labels;
};
CleanResult Clean(const std::vector<Record>& records, const CleaningPolicy& policy,
                  const std::optional<LabelMap>& labels, const std::string& source);

using common::IsValidUtf8;
std::string NormalizeWhitespace(const std::string& s);

// Seeded stratified split: for each label, a `fraction` of its examples (at
// least one when the label has two or more) goes to the second set. Examples
// without a single class (multi-label, regression) form one stratum: a seeded
// random split.
void StratifiedSplit(std::vector<Example> all, double fraction, uint64_t seed,
                     std::vector<Example>* train, std::vector<Example>* validation);

// Deterministic, seeded, resumable sampler. Each epoch is a permutation of
// [0, n) drawn from (seed, epoch). A global batch is the next
// `per_rank_batch * world_size` indices of the permutation; rank r gets the
// r-th contiguous slice of it, so a run with N ranks sees the same global
// batches as one rank with N times the batch.
struct SamplerState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t cursor = 0;  // position in the epoch's permutation (global)
};

class EpochSampler {
 public:
  EpochSampler(int64_t dataset_size, int64_t per_rank_batch, int rank, int world_size,
               uint64_t seed, bool shuffle = true);

  // Indices of this rank's part of the next global batch; empty at the end of
  // the epoch (then call StartEpoch). The last global batch may be short; it
  // is divided as evenly as possible, ranks first.
  std::vector<int64_t> Next();
  void StartEpoch(int64_t epoch);
  int64_t StepsPerEpoch() const;
  // Size of the global batch that Next() just returned (all ranks together).
  int64_t last_global_batch() const { return last_global_; }

  SamplerState state() const { return {seed_, epoch_, cursor_}; }
  void Restore(const SamplerState& s);

 private:
  void Permute();
  int64_t n_, batch_;
  int rank_, world_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0, cursor_ = 0, last_global_ = 0;
  std::vector<int64_t> perm_;
};

// A portable permutation (Fisher-Yates over splitmix64), identical on every
// platform and standard library.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace attune::worker::data
