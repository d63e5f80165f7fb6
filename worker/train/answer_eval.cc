#include "worker/train/answer_eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/eval/text_metrics.h"
#include "worker/model/decoder.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/train/evaluator.h"
#include "worker/train/generate.h"
#include "worker/train/predict_decoder.h"

namespace attune::worker::train {
namespace {

constexpr size_t kSamples = 5;
constexpr int64_t kMaxChoiceFileBytes = int64_t{256} << 20;

// Rows whose attention scores (float32, per layer) fit kAnswerScoresBudget.
int64_t RowsWithin(int64_t length, int64_t heads, int64_t most) {
  const double per_row = 4.0 * static_cast<double>(heads) * static_cast<double>(length) * static_cast<double>(length);
  return std::clamp<int64_t>(static_cast<int64_t>(kAnswerScoresBudget / std::max(per_row, 1.0)), 1, most);
}

}  // namespace

absl::StatusOr<AnswerEvalSet> PrepareAnswerEvals(const common::JobConfig& c, const task::Task& task,
                                                 const text::Tokenizer& tok, const model::Model& m,
                                                 const std::string& model_dir,
                                                 const std::vector<data::Example>& validation) {
  AnswerEvalSet set;
  if (c.eval_generate_max_new_tokens == 0 && c.eval_multiple_choice_path.empty()) return set;
  const auto* decoder = dynamic_cast<const model::DecoderLmImpl*>(&m);
  const auto* bpe = dynamic_cast<const text::BpeTokenizer*>(&tok);
  if (decoder == nullptr || bpe == nullptr) {
    return absl::InvalidArgumentError(
        "evaluation.generate and evaluation.multiple_choice need a decoder and its BPE tokenizer "
        "(tokenizer.json or tokenizer.model)");
  }
  const int64_t heads = decoder->config().num_attention_heads;
  if (c.eval_generate_max_new_tokens > 0) {
    set.max_new_tokens = static_cast<int>(c.eval_generate_max_new_tokens);
    ATTUNE_ASSIGN_OR_RETURN(set.stop_ids, StopIds(*decoder, *bpe, model_dir));
    for (int64_t id : task.AnswerStopIds()) set.stop_ids.insert(id);
    ATTUNE_ASSIGN_OR_RETURN(std::vector<task::GenerationCase> cases, task.GenerationCases(validation));
    const int64_t limit = m.max_positions();
    int64_t longest = 0;
    for (auto& g : cases) {
      if (static_cast<int64_t>(g.prompt.size()) >= limit) {
        ++set.skipped;
      } else {
        longest = std::max<int64_t>(longest, static_cast<int64_t>(g.prompt.size()));
        set.generation.push_back(std::move(g));
      }
    }
    set.generation_rows = RowsWithin(std::min(limit, longest + set.max_new_tokens), heads, c.eval_batch_size);
  }
  if (!c.eval_multiple_choice_path.empty()) {
    ATTUNE_ASSIGN_OR_RETURN(const std::string text,
                            common::ReadFile(c.eval_multiple_choice_path, kMaxChoiceFileBytes));
    const std::string shown = c.staged_inputs.count(c.eval_multiple_choice_path)
                                  ? c.staged_inputs.at(c.eval_multiple_choice_path)
                                  : c.eval_multiple_choice_path;
    ATTUNE_ASSIGN_OR_RETURN(set.questions,
                            task.ChoiceQuestions(text, shown, static_cast<int>(std::min<int64_t>(c.max_length, m.max_positions()))));
    int64_t longest = 0;
    for (const auto& q : set.questions) {
      set.choices.insert(set.choices.end(), q.choices.begin(), q.choices.end());
      for (const auto& e : q.choices) longest = std::max<int64_t>(longest, static_cast<int64_t>(e.ids.size()));
    }
    set.choice_rows = RowsWithin(longest, heads, c.eval_batch_size);
  }
  return set;
}

absl::Status EvaluateAnswers(model::Model& m, const task::Task& task, const text::Tokenizer& tok,
                             const AnswerEvalSet& set, int64_t pad_id, comm::Communicator* comm,
                             Precision precision, const c10::Device& device, eval::Metrics* metrics,
                             eval::AnswerSummary* summary) {
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  *summary = eval::AnswerSummary{};
  summary->max_new_tokens = set.max_new_tokens;
  summary->skipped = set.skipped;
  if (!set.generation.empty()) {
    auto& decoder = dynamic_cast<model::DecoderLmImpl&>(m);
    const auto& bpe = dynamic_cast<const text::BpeTokenizer&>(tok);
    SamplingOptions greedy;
    greedy.max_new_tokens = set.max_new_tokens;
    std::vector<double> scores;  // exact_match, rouge_l per case of this rank's batches
    const auto n = set.generation.size(), per = static_cast<size_t>(set.generation_rows);
    m.eval();
    // Batch k's answers, scored; rank 0 keeps the first kSamples cases'.
    auto answer_batch = [&](size_t k, bool score) -> absl::Status {
      const size_t start = k * per;
      std::vector<std::vector<int64_t>> prompts;
      for (size_t i = start; i < std::min(n, start + per); ++i) prompts.push_back(set.generation[i].prompt);
      ATTUNE_ASSIGN_OR_RETURN(std::vector<Generation> got,
                              Generate(decoder, prompts, greedy, std::vector<uint64_t>(prompts.size(), 0),
                                       set.stop_ids, nullptr, nullptr));
      for (size_t j = 0; j < prompts.size(); ++j) {
        const task::GenerationCase& g = set.generation[start + j];
        const std::string answer = bpe.Decode(got[j].ids, /*skip_special_tokens=*/true);
        const double em = eval::ExactMatch(answer, g.reference), rouge = eval::RougeL(answer, g.reference);
        if (score) {
          scores.push_back(em);
          scores.push_back(rouge);
        }
        if (rank == 0 && start + j < kSamples) summary->samples.push_back({g.line, g.shown, g.reference, answer, em, rouge});
      }
      return absl::OkStatus();
    };
    absl::Status status;
    for (size_t k = 0; k * per < n && status.ok(); ++k) {
      const bool mine = static_cast<int>(k % static_cast<size_t>(world)) == rank;
      // Rank 0 also answers the other ranks' batches among the first kSamples
      // cases, as they do (the same batch, the same answers), to show them.
      if (mine || (rank == 0 && k * per < kSamples)) status = answer_batch(k, mine);
    }
    if (!status.ok()) {
      m.train();
      return status;
    }
    m.train();
    ATTUNE_ASSIGN_OR_RETURN(const std::vector<double> all, GatherInItemOrder(comm, scores, n, per, 2));
    double em = 0, rouge = 0;
    for (size_t i = 0; i < n; ++i) {
      em += all[2 * i];
      rouge += all[2 * i + 1];
    }
    metrics->answers["exact_match"] = em / static_cast<double>(n);
    metrics->answers["rouge_l"] = rouge / static_cast<double>(n);
    summary->answered = static_cast<int64_t>(n);
  }
  if (!set.questions.empty()) {
    // Each choice's row: its summed cross-entropy over the scored tokens (the
    // negated log-likelihood), their count, and the right predictions.
    ATTUNE_ASSIGN_OR_RETURN(EvaluatedRows r,
                            EvaluateRows(m, task, 0, set.choices, set.choice_rows, pad_id, comm, precision, device));
    double right = 0, right_norm = 0;
    size_t at = 0;
    for (const auto& q : set.questions) {
      int best = 0, best_norm = 0;
      double top = -std::numeric_limits<double>::infinity(), top_norm = top;
      for (size_t k = 0; k < q.choices.size(); ++k, ++at) {
        const double loglik = -r.rows[3 * at];
        const double norm = loglik / static_cast<double>(std::max<int64_t>(q.choice_chars[k], 1));
        // The first of equal scores wins, as numpy's argmax picks it.
        if (loglik > top) {
          top = loglik;
          best = static_cast<int>(k);
        }
        if (norm > top_norm) {
          top_norm = norm;
          best_norm = static_cast<int>(k);
        }
      }
      right += best == q.answer;
      right_norm += best_norm == q.answer;
    }
    metrics->answers["mc_accuracy"] = right / static_cast<double>(set.questions.size());
    metrics->answers["mc_accuracy_norm"] = right_norm / static_cast<double>(set.questions.size());
    summary->questions = static_cast<int64_t>(set.questions.size());
    summary->truncated_questions =
        std::count_if(set.questions.begin(), set.questions.end(), [](const auto& q) { return q.truncated; });
  }
  return absl::OkStatus();
}

void AddAnswerBaselines(const task::Task& task, const std::vector<data::Example>& train, const AnswerEvalSet& set,
                        eval::BaselineFigures* trivial) {
  if (!set.generation.empty()) {
    // The most frequent training answer (ties: the first seen).
    std::map<std::string, std::pair<int64_t, size_t>> seen;  // answer -> (count, first index)
    auto cases = task.GenerationCases(train);
    std::string top;
    if (cases.ok()) {
      int64_t best = 0;
      size_t best_first = 0;
      for (size_t i = 0; i < cases->size(); ++i) {
        auto& s = seen.try_emplace((*cases)[i].reference, 0, i).first->second;
        ++s.first;
        if (s.first > best || (s.first == best && s.second < best_first)) {
          best = s.first;
          best_first = s.second;
          top = (*cases)[i].reference;
        }
      }
    }
    double em = 0, rouge = 0;
    for (const auto& g : set.generation) {
      em += eval::ExactMatch(top, g.reference);
      rouge += eval::RougeL(top, g.reference);
    }
    trivial->metrics["exact_match"] = em / static_cast<double>(set.generation.size());
    trivial->metrics["rouge_l"] = rouge / static_cast<double>(set.generation.size());
    absl::StrAppend(&trivial->description, "; every prompt answered with the most frequent training answer (",
                    absl::StrFormat("%d", seen.empty() ? 0 : seen[top].first), " of ", cases.ok() ? cases->size() : 0,
                    ")");
  }
  if (!set.questions.empty()) {
    std::map<int, int64_t> by_position;
    double chance = 0;
    for (const auto& q : set.questions) {
      ++by_position[q.answer];
      chance += 1.0 / static_cast<double>(q.choices.size());
    }
    int64_t most = 0;
    for (const auto& [position, count] : by_position) most = std::max(most, count);
    const double n = static_cast<double>(set.questions.size());
    trivial->metrics["mc_accuracy"] = static_cast<double>(most) / n;
    trivial->metrics["mc_accuracy_norm"] = static_cast<double>(most) / n;
    trivial->details["mc_chance_accuracy"] = chance / n;
    absl::StrAppend(&trivial->description,
                    "; every question answered with the choice position most often right (chance: ",
                    absl::StrFormat("%.4f", chance / n), ")");
  }
}

}  // namespace attune::worker::train
