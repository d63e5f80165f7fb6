#pragma once

// Generated data for the multi-label and regression tasks (TESTONLY): short
// texts from the tiny test model's vocabulary whose labels follow from their
// words, so that a model can learn them.

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/testing/process.h"

namespace attune::testing {

// A tiny binary task in CSV (text,label): 32 train and 8 validation rows
// "the <subject> was <good|bad> <i>", labelled pos / neg by parity.
inline void WriteTinyBinaryCsvs(const std::string& train_path, const std::string& valid_path,
                                const std::string& subject, const std::string& good, const std::string& bad) {
  std::ofstream train(train_path), valid(valid_path);
  train << "text,label\n";
  valid << "text,label\n";
  for (int i = 0; i < 40; ++i) {
    (i < 32 ? train : valid) << "the " << subject << " was " << (i % 2 ? good : bad) << " " << i << ","
                             << (i % 2 ? "pos" : "neg") << "\n";
  }
}

inline const std::vector<std::vector<std::string>>& TopicWords() {
  static const std::vector<std::vector<std::string>> words = {{"patient", "aspirin", "fever", "chest", "pain"},
                                                              {"bank", "loan", "interest", "rates", "pay"},
                                                              {"court", "license", "rights", "contract", "party"}};
  return words;
}

// JSONL {"text", "topics": [...]}: each row mentions one or two of the
// topics medical, finance, legal, and is labelled with those it mentions.
inline void WriteMultiLabelData(const std::string& path, int n, int seed) {
  const std::vector<std::string> names = {"medical", "finance", "legal"};
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::ostringstream out;
  for (int i = 0; i < n; ++i) {
    const int a = i % 3, b = (i / 3) % 4 == 0 ? (a + 1 + static_cast<int>(rng() % 2)) % 3 : a;
    std::string text = "the";
    for (int w = 0; w < 3; ++w) text += " " + TopicWords()[static_cast<size_t>(a)][rng() % 5];
    for (int w = 0; w < 2; ++w) text += " " + TopicWords()[static_cast<size_t>(b)][rng() % 5];
    nlohmann::json labels = {names[static_cast<size_t>(a)]};
    if (b != a) labels.push_back(names[static_cast<size_t>(b)]);
    out << nlohmann::json({{"text", text + " " + std::to_string(i)}, {"topics", labels}}).dump() << "\n";
  }
  WriteText(path, out.str());
}

// CSV text,score: the score is (medical words) - 0.5 x (finance words) among
// five, plus a small deterministic offset.
inline std::vector<double> WriteRegressionData(const std::string& path, int n, int seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::ostringstream out;
  std::vector<double> scores;
  out << "text,score\n";
  for (int i = 0; i < n; ++i) {
    std::string text = "the";
    double score = 0.1 * (i % 3);
    for (int w = 0; w < 5; ++w) {
      const int topic = static_cast<int>(rng() % 3);
      text += " " + TopicWords()[static_cast<size_t>(topic)][rng() % 5];
      score += topic == 0 ? 1.0 : topic == 1 ? -0.5 : 0.0;
    }
    out << text << " " << i << "," << score << "\n";
    scores.push_back(score);
  }
  WriteText(path, out.str());
  return scores;
}

// Tagged sentences for token_classification: filler words around entities
// of three types (DRUG, DISEASE, ORG; some of two words), IOB2 tags. As JSONL
// {"words": [...], "tags": [...]}, or as CoNLL (token and tag per line, a
// blank line between sentences, a -DOCSTART- line first) when `path` ends in
// .conll. Returns the sentences' tags.
inline std::vector<std::vector<std::string>> WriteNerData(const std::string& path, int n, int seed) {
  static const std::vector<std::pair<std::string, std::vector<std::vector<std::string>>>> kEntities = {
      {"DRUG", {{"aspirin"}, {"heparin"}, {"ibuprofen"}}},
      {"DISEASE", {{"chest", "pain"}, {"fever"}, {"lung", "cancer"}}},
      {"ORG", {{"world", "bank"}, {"supreme", "court"}, {"acme"}}}};
  // "bank" and "court" are also fillers: whether they are part of an ORG depends on the word before.
  static const std::vector<std::string> kFiller = {"the", "patient", "was", "given", "for", "and", "rates",
                                                   "rose", "held", "that", "a", "loan", "bank", "court"};
  std::mt19937 rng(static_cast<unsigned>(seed));
  const bool conll = path.size() > 6 && path.substr(path.size() - 6) == ".conll";
  std::ostringstream out;
  if (conll) out << "-DOCSTART- -X- O O\n\n";
  std::vector<std::vector<std::string>> all;
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> words, tags;
    const int parts = 3 + static_cast<int>(rng() % 4);
    for (int p = 0; p < parts; ++p) {
      if (rng() % 2) {
        words.push_back(kFiller[rng() % kFiller.size()]);
        tags.push_back("O");
        continue;
      }
      const auto& [type, spans] = kEntities[rng() % kEntities.size()];
      const auto& span = spans[rng() % spans.size()];
      for (size_t k = 0; k < span.size(); ++k) {
        words.push_back(span[k]);
        tags.push_back((k == 0 ? "B-" : "I-") + type);
      }
    }
    words.push_back(std::to_string(i));  // no two sentences alike
    tags.push_back("O");
    if (conll) {
      for (size_t k = 0; k < words.size(); ++k) out << words[k] << " NN " << tags[k] << "\n";
      out << "\n";
    } else {
      out << nlohmann::json({{"words", words}, {"tags", tags}}).dump() << "\n";
    }
    all.push_back(tags);
  }
  WriteText(path, out.str());
  return all;
}

}  // namespace attune::testing
