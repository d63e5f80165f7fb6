#pragma once

// Lets binaries accept --flag-name as well as absl's --flag_name, so that
// documented command lines such as `--data-root DIR` work; and answers
// --help with the binary's own flags.

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

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

// Whether the command line asks for help (--help, -h, -help, --helpfull, help).
inline bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "-help" || a == "--helpfull" || a == "help") return true;
  }
  return false;
}

// Every flag defined by this project's sources (not absl's own), by name,
// with its default and help text: the --help of each binary.
inline std::string FlagsHelp() {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "absl/")) continue;
    flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) { return a->Name() < b->Name(); });
  std::string out = "\nflags (--a_b and --a-b are the same flag):\n";
  for (const auto* f : flags) {
    out += "  --" + std::string(f->Name()) + " (default: " + f->DefaultValue() + ")\n      " + f->Help() + "\n";
  }
  return out;
}

// An inclusive range an integer flag must lie in.
struct FlagRange {
  const char* name;
  int64_t low, high;
};

// "--name must be in [low, high], not v" for the first integer flag outside
// its range; empty when all are in range. A binary checks its flags with it
// right after parsing, so that no value overflows or starves it later
// (--threads 100000, --max_message_mb 4096).
inline std::string CheckFlagRanges(std::initializer_list<FlagRange> ranges) {
  for (const FlagRange& r : ranges) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(r.name);
    if (flag == nullptr) return std::string("unknown flag --") + r.name + " in a range check";
    const std::string text = flag->CurrentValue();
    int64_t v = 0;
    if (!absl::SimpleAtoi(text, &v) || v < r.low || v > r.high) {
      return "--" + std::string(r.name) + " must be in [" + std::to_string(r.low) + ", " + std::to_string(r.high) +
             "], not " + text;
    }
  }
  return "";
}

// "" when the flag `name` holds HOST:PORT with a port in [0, 65535] (0: any
// free one), HOST a name, an IPv4 address or a bracketed IPv6 one, or is
// empty where `may_be_empty`; else what is wrong, naming the flag. gRPC
// took --listen 127.0.0.1:99999 and served on some other port.
inline std::string CheckListenFlag(const char* name, bool may_be_empty) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return std::string("unknown flag --") + name + " in a listen check";
  const std::string value = flag->CurrentValue();
  if (value.empty() && may_be_empty) return "";
  const std::string bad = "--" + std::string(name) + " must be HOST:PORT with PORT in [0, 65535], not '" + value + "'";
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad;
  const std::string host = value.substr(0, colon), port = value.substr(colon + 1);
  int64_t p = -1;
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(port, &p) || p > 65535) {
    return bad;
  }
  const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  const std::string inner = bracketed ? host.substr(1, host.size() - 2) : host;
  const char* allowed = bracketed ? "0123456789abcdefABCDEF:.%" : nullptr;
  for (char ch : inner) {
    const bool ok = allowed ? std::strchr(allowed, ch) != nullptr
                            : (std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == '_');
    if (!ok || ch == '\0') return bad;
  }
  return "";
}

}  // namespace attune::common
