#include "worker/eval/text_metrics.h"

#include <algorithm>
#include <cstring>

namespace attune::worker::eval {
namespace {

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Python's string.whitespace and string.punctuation.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool IsPunct(char c) { return c != '\0' && std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", c) != nullptr; }

}  // namespace

std::string NormalizeAnswer(std::string_view text) {
  std::string kept;
  kept.reserve(text.size());
  for (char c : text) {
    if (!IsPunct(c)) kept.push_back(AsciiLower(c));
  }
  // Articles go as whole words; SQuAD's \b(a|an|the)\b also sees a word
  // boundary between an article and a non-word character, but punctuation is
  // gone by then and other non-word bytes (UTF-8) are part of their word here.
  std::string out;
  size_t i = 0;
  while (i < kept.size()) {
    while (i < kept.size() && IsSpace(kept[i])) ++i;
    size_t j = i;
    while (j < kept.size() && !IsSpace(kept[j])) ++j;
    if (j > i) {
      const std::string_view word(kept.data() + i, j - i);
      if (word != "a" && word != "an" && word != "the") {
        if (!out.empty()) out.push_back(' ');
        out.append(word);
      }
    }
    i = j;
  }
  return out;
}

double ExactMatch(std::string_view prediction, std::string_view reference) {
  return NormalizeAnswer(prediction) == NormalizeAnswer(reference) ? 1.0 : 0.0;
}

std::vector<std::string> RougeTokens(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char raw : text) {
    const char c = AsciiLower(raw);
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      cur.push_back(c);
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

double RougeL(std::string_view prediction, std::string_view reference) {
  const std::vector<std::string> p = RougeTokens(prediction), r = RougeTokens(reference);
  if (p.empty() || r.empty()) return 0;
  // One row of the LCS table at a time: O(|p| |r|) time, O(|r|) memory.
  std::vector<size_t> prev(r.size() + 1, 0), cur(r.size() + 1, 0);
  for (size_t i = 1; i <= p.size(); ++i) {
    for (size_t j = 1; j <= r.size(); ++j) {
      cur[j] = p[i - 1] == r[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const double lcs = static_cast<double>(prev[r.size()]);
  const double precision = lcs / static_cast<double>(p.size()), recall = lcs / static_cast<double>(r.size());
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
}

}  // namespace attune::worker::eval
