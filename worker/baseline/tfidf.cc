#include "worker/baseline/tfidf.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace attune::worker::baseline {
namespace {

// Decodes one UTF-8 code point at text[*at] (an invalid byte stands for itself).
uint32_t NextCodePoint(std::string_view text, size_t* at) {
  const auto b = static_cast<unsigned char>(text[*at]);
  int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1;
  if (*at + static_cast<size_t>(len) > text.size()) len = 1;
  uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
  for (int i = 1; i < len; ++i) {
    const auto c = static_cast<unsigned char>(text[*at + static_cast<size_t>(i)]);
    if ((c >> 6) != 2) {
      len = 1;
      cp = b;
      break;
    }
    cp = (cp << 6) | (c & 0x3Fu);
  }
  *at += static_cast<size_t>(len);
  return cp;
}

bool IsWordChar(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  if (cp >= 0xA0 && cp <= 0xBF) {  // Latin-1 punctuation and signs, but for these letters and digits
    return cp == 0xAA || cp == 0xB2 || cp == 0xB3 || cp == 0xB5 || cp == 0xB9 || cp == 0xBA || cp >= 0xBC;
  }
  if (cp == 0xD7 || cp == 0xF7) return false;                   // x and division signs
  if (cp >= 0x2000 && cp <= 0x2BFF) return false;               // punctuation, symbols, arrows
  if (cp >= 0x3000 && cp <= 0x303F) return false;               // CJK punctuation
  if (cp >= 0xFE30 && cp <= 0xFE4F) return false;               // CJK compatibility forms
  if (cp >= 0xFF00 && cp <= 0xFF0F) return false;               // full-width punctuation
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;               // surrogates
  return cp >= 0xC0;  // 0x80-0x9F are control characters
}

uint32_t Lower(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) return cp + 32;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

std::vector<std::string> WordTokens(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  size_t cur_len = 0;
  auto flush = [&] {
    if (cur_len >= 2) out.push_back(cur);
    cur.clear();
    cur_len = 0;
  };
  for (size_t at = 0; at < text.size();) {
    const uint32_t cp = NextCodePoint(text, &at);
    if (IsWordChar(cp)) {
      AppendUtf8(Lower(cp), &cur);
      ++cur_len;
    } else {
      flush();
    }
  }
  flush();
  return out;
}

std::vector<std::string> TfidfVectorizer::Grams(std::string_view doc) const {
  std::vector<std::string> words = WordTokens(doc);
  std::vector<std::string> grams = words;
  for (int n = 2; n <= o_.max_n; ++n) {
    for (size_t i = 0; i + static_cast<size_t>(n) <= words.size(); ++i) {
      std::string g = words[i];
      for (size_t k = 1; k < static_cast<size_t>(n); ++k) g.append(" ").append(words[i + k]);
      grams.push_back(std::move(g));
    }
  }
  return grams;
}

void TfidfVectorizer::Fit(const std::vector<std::string>& docs) {
  std::unordered_map<std::string, int64_t> df;
  for (const auto& d : docs) {
    std::vector<std::string> g = Grams(d);
    std::sort(g.begin(), g.end());
    g.erase(std::unique(g.begin(), g.end()), g.end());
    for (auto& s : g) ++df[std::move(s)];
  }
  // Features in sorted order, as scikit-learn numbers them.
  std::vector<std::pair<std::string, int64_t>> kept;
  for (auto& [gram, count] : df) {
    if (count >= o_.min_df) kept.emplace_back(gram, count);
  }
  std::sort(kept.begin(), kept.end());
  vocab_.clear();
  idf_.clear();
  const double n = static_cast<double>(docs.size());
  for (const auto& [gram, count] : kept) {
    vocab_.emplace(gram, static_cast<int32_t>(idf_.size()));
    idf_.push_back(std::log((1 + n) / (1 + static_cast<double>(count))) + 1);
  }
}

SparseRows TfidfVectorizer::Transform(const std::vector<std::string>& docs) const {
  SparseRows out;
  out.offsets.reserve(docs.size() + 1);
  std::vector<std::pair<int32_t, double>> row;
  for (const auto& d : docs) {
    std::unordered_map<int32_t, double> counts;
    for (const auto& g : Grams(d)) {
      auto it = vocab_.find(g);
      if (it != vocab_.end()) counts[it->second] += 1;
    }
    row.assign(counts.begin(), counts.end());
    std::sort(row.begin(), row.end());
    double norm = 0;
    for (auto& [col, v] : row) {
      const double tf = o_.sublinear_tf ? 1 + std::log(v) : v;
      v = tf * idf_[static_cast<size_t>(col)];
      norm += v * v;
    }
    norm = std::sqrt(norm);
    for (const auto& [col, v] : row) {
      out.cols.push_back(col);
      out.vals.push_back(norm > 0 ? v / norm : 0);
    }
    out.offsets.push_back(static_cast<int64_t>(out.cols.size()));
  }
  return out;
}

}  // namespace attune::worker::baseline
