#pragma once

// Secrets (tokens, session ids, rendezvous secrets): making and comparing
// them. Header-only, torch- and proto-free.

#include <sys/random.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace attune::common {

// Equal, compared without an early exit, so timing does not reveal a prefix.
inline bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i % std::max<size_t>(a.size(), 1)] ^ b[i]);
  return diff == 0;
}

// 128 bits from the kernel's CSPRNG (getrandom), as 32 lowercase hex digits.
inline std::string NewSecret() {
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
    // getrandom blocks until the pool is seeded and fails only on EINTR here.
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

// A secret as NewSecret makes them: 32 to 128 hex digits, nothing else.
inline bool IsWellFormedSecret(const std::string& s) {
  return s.size() >= 32 && s.size() <= 128 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace attune::common
