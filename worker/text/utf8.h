#pragma once

// UTF-8 helpers shared by the tokenizers and the chat-template interpreter.

#include <algorithm>
#include <string>
#include <vector>

namespace attune::worker::text {

// `s` cut into code points, each as its own UTF-8 string. A malformed lead
// byte stands alone; a sequence cut short at the end is kept as it is.
inline std::vector<std::string> SplitCodePoints(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace attune::worker::text
