#pragma once

// Comparison of secrets (tokens, session ids). Header-only, torch- and
// proto-free.

#include <algorithm>
#include <string>

namespace attune::common {

// Equal, compared without an early exit, so timing does not reveal a prefix.
inline bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i % std::max<size_t>(a.size(), 1)] ^ b[i]);
  return diff == 0;
}

}  // namespace attune::common
