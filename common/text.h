#pragma once

// Small, allocation-free checks on untrusted text. None uses std::regex: its
// backtracking recurses per character and overflows the stack on long input.

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

namespace attune::common {

// Well-formed UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool IsValidUtf8(std::string_view s);

// YAML 1.2 core-schema number forms, decided by scanning, never by regex.
// [-+]?[0-9]+
bool LooksLikeInteger(std::string_view s);
// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool LooksLikeFloat(std::string_view s);

// The value of a LooksLikeInteger text; nullopt when it does not fit in int64.
std::optional<int64_t> ParseInt64(std::string_view s);
// The value of a LooksLikeFloat text; nullopt when it overflows to infinity or
// underflows past the smallest normal double (1e400, 1e-320).
std::optional<double> ParseFiniteDouble(std::string_view s);

// Every character of `s` is in [A-Za-z0-9] or in `extra`, and its length is
// in [min_len, max_len].
bool IsWordOf(std::string_view s, std::string_view extra, size_t min_len, size_t max_len);

// Calls fn(line number from 1, line) for each line of `text` (split at '\n')
// that holds more than spaces, tabs and CRs; returns the first error fn gives.
absl::Status ForEachLine(std::string_view text, const std::function<absl::Status(int64_t, std::string_view)>& fn);

}  // namespace attune::common
