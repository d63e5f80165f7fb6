#pragma once

// Lets binaries accept --flag-name as well as absl's --flag_name, so that
// documented command lines such as `--data-root DIR` work.

#include <string>
#include <vector>

namespace attune::common {

// Rewrites "--a-b[=v]" to "--a_b[=v]" in place (the name part only).
inline std::vector<char*> DashesToUnderscores(int argc, char** argv, std::vector<std::string>* storage) {
  storage->clear();
  storage->reserve(static_cast<size_t>(argc));
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && a.size() > 2 && a[0] == '-' && a[1] == '-') {
      size_t end = a.find('=');
      if (end == std::string::npos) end = a.size();
      for (size_t k = 2; k < end; ++k) {
        if (a[k] == '-') a[k] = '_';
      }
    }
    storage->push_back(a);
  }
  std::vector<char*> out;
  for (auto& s : *storage) out.push_back(s.data());
  return out;
}

}  // namespace attune::common
