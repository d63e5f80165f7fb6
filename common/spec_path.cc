#include "common/spec_path.h"

#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attune::common {

bool IsSpecPath(const std::string& path) {
  // [a-z_][a-z0-9_]* joined by '.', at most 8 parts.
  if (path.size() > 256) return false;
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '.');
  if (parts.size() > 8) return false;
  for (absl::string_view part : parts) {
    if (part.empty() || (part[0] >= '0' && part[0] <= '9')) return false;
    for (char c : part) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
  }
  return true;
}

absl::StatusOr<std::string> SetSpecPaths(const std::string& spec_json,
                                         const std::map<std::string, std::string>& literal_by_path) {
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, false);
  if (!spec.is_object()) return absl::InvalidArgumentError("spec: not a JSON object");
  for (const auto& [path, literal] : literal_by_path) {
    if (!IsSpecPath(path)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a spec path (snake_case fields joined by '.', like hyperparameters.learning_rate)"));
    }
    nlohmann::json value = nlohmann::json::parse(literal, nullptr, false);
    if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": bad value ", literal));
    std::vector<std::string> parts = absl::StrSplit(path, '.');
    nlohmann::json* at = &spec;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      nlohmann::json& next = (*at)[parts[i]];
      if (next.is_null()) next = nlohmann::json::object();
      if (!next.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts[i], " is not a mapping"));
      at = &next;
    }
    (*at)[parts.back()] = value;
  }
  return spec.dump();
}

std::vector<std::string> TakeSetFlags(std::vector<char*>* args) {
  std::vector<std::string> sets;
  std::vector<char*> kept;
  for (size_t i = 0; i < args->size(); ++i) {
    char* a = (*args)[i];
    if ((std::strcmp(a, "--set") == 0 || std::strcmp(a, "-set") == 0) && i + 1 < args->size()) {
      sets.emplace_back((*args)[++i]);
    } else if (std::strncmp(a, "--set=", 6) == 0) {
      sets.emplace_back(a + 6);
    } else {
      kept.push_back(a);
    }
  }
  *args = kept;
  return sets;
}

}  // namespace attune::common
