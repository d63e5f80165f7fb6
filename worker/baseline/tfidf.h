#pragma once

// TF-IDF features of word 1- and 2-grams, as scikit-learn's
// TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2) computes
// them: lower-cased tokens of two or more word characters, n-grams joined by
// one space, tf = 1 + ln(count), idf = ln((1 + n) / (1 + df)) + 1, each row
// scaled to unit L2 norm. Torch-free.
//
// Word characters are ASCII letters, digits and '_', and every non-ASCII code
// point that is not punctuation or a space (Python's str.isalnum() without
// Unicode tables); lower-casing covers ASCII and Latin-1.

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace attune::worker::baseline {

// Rows of a sparse matrix (CSR): row r's entries are [offsets[r], offsets[r+1]).
struct SparseRows {
  std::vector<int64_t> offsets{0};
  std::vector<int32_t> cols;
  std::vector<double> vals;
  size_t rows() const { return offsets.size() - 1; }
};

// The lower-cased tokens of `text` (maximal runs of two or more word characters).
std::vector<std::string> WordTokens(std::string_view text);

class TfidfVectorizer {
 public:
  struct Options {
    int max_n = 2;       // n-grams of 1..max_n tokens
    int64_t min_df = 2;  // a feature is kept when this many training documents hold it
    bool sublinear_tf = true;
  };
  TfidfVectorizer() = default;
  explicit TfidfVectorizer(Options o) : o_(o) {}

  // Learns the vocabulary and the idf weights from `docs`.
  void Fit(const std::vector<std::string>& docs);
  SparseRows Transform(const std::vector<std::string>& docs) const;
  size_t features() const { return idf_.size(); }

 private:
  std::vector<std::string> Grams(std::string_view doc) const;
  Options o_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<double> idf_;
};

}  // namespace attune::worker::baseline
