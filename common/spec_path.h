#pragma once

// Setting fields of a spec by path ("hyperparameters.learning_rate"), on its
// JSON text: what sweeps (one trial's parameters) and `--set PATH=VALUE`
// (attune submit, attune-worker train) share. Proto-free: whether the path
// names a field is checked where the JSON is parsed into the spec, like any
// other key, so a bad path is refused naming it.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::common {

// Whether `path` is snake_case fields joined by dots (at most 8).
bool IsSpecPath(const std::string& path);

// `spec_json` with each path set to its JSON literal value; missing
// mappings on the way are created. kInvalidArgument naming the path when it
// is malformed, its value is not JSON, or a field on the way is not a mapping.
absl::StatusOr<std::string> SetSpecPaths(const std::string& spec_json,
                                         const std::map<std::string, std::string>& literal_by_path);

// Takes every "--set PATH=VALUE" and "--set=PATH=VALUE" out of `args` (in
// place) and returns the PATH=VALUE texts in order.
std::vector<std::string> TakeSetFlags(std::vector<char*>* args);

}  // namespace attune::common
