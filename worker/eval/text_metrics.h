#pragma once

// Scores of generated text against a reference answer (causal_lm's
// evaluation.generate). Torch-free.

#include <string>
#include <string_view>
#include <vector>

namespace attune::worker::eval {

// SQuAD's normalize_answer: ASCII letters lower-cased, ASCII punctuation
// removed, the articles a, an and the dropped, runs of whitespace made one
// space (leading and trailing ones removed).
std::string NormalizeAnswer(std::string_view text);

// 1 when the normalised texts are equal, else 0 (SQuAD's exact match).
double ExactMatch(std::string_view prediction, std::string_view reference);

// ROUGE-L F1 as Google's rouge_score computes it without stemming: each text
// lower-cased (ASCII), every run of characters other than [a-z0-9] made a
// separator, the tokens' longest common subsequence L, precision L / |pred|,
// recall L / |ref|, F1 their harmonic mean; 0 when either text has no token.
double RougeL(std::string_view prediction, std::string_view reference);

// rouge_score's tokens of `text` (as above).
std::vector<std::string> RougeTokens(std::string_view text);

}  // namespace attune::worker::eval
