#include "common/text.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

namespace attune::common {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Advances over [0-9]*, returning how many were read.
size_t Digits(std::string_view s, size_t& i) {
  const size_t from = i;
  while (i < s.size() && IsDigit(s[i])) ++i;
  return i - from;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and out-of-range code points are invalid.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

bool LooksLikeInteger(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  return Digits(s, i) > 0 && i == s.size();
}

bool LooksLikeFloat(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (Digits(s, i) == 0) return false;
  } else {
    if (Digits(s, i) == 0) return false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      Digits(s, i);
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (Digits(s, i) == 0) return false;
  }
  return i == s.size();
}

std::optional<int64_t> ParseInt64(std::string_view s) {
  if (!LooksLikeInteger(s)) return std::nullopt;
  size_t i = 0;
  const bool negative = s[0] == '-';
  if (s[0] == '-' || s[0] == '+') ++i;
  // Accumulate as a negative number: its range holds INT64_MIN.
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    const int d = s[i] - '0';
    if (v < (INT64_MIN + d) / 10) return std::nullopt;
    v = v * 10 - d;
  }
  if (negative) return v;
  if (v == INT64_MIN) return std::nullopt;
  return -v;
}

std::optional<double> ParseFiniteDouble(std::string_view s) {
  if (!LooksLikeFloat(s)) return std::nullopt;
  const std::string text(s);  // strtod needs a terminator
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v)) return std::nullopt;
  return v;
}

bool IsWordOf(std::string_view s, std::string_view extra, size_t min_len, size_t max_len) {
  if (s.size() < min_len || s.size() > max_len) return false;
  for (char c : s) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c);
    if (!alnum && extra.find(c) == std::string_view::npos) return false;
  }
  return true;
}

absl::Status ForEachLine(std::string_view text, const std::function<absl::Status(int64_t, std::string_view)>& fn) {
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    ++line_no;
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    if (absl::Status s = fn(line_no, line); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace attune::common
