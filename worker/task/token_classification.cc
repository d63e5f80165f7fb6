// token_classification: a tag per word (NER), BertForTokenClassification.

#include <algorithm>
#include <map>
#include <set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/job_config.h"
#include "worker/model/model.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::task {
namespace {

namespace F = torch::nn::functional;

// seqeval's reading of a tag: its first character is the prefix (B I E S O),
// the rest after the first '-' is the type ("_" when empty).
std::pair<char, std::string> ParseTag(const std::string& tag) {
  if (tag.empty()) return {'O', "_"};
  std::string rest = tag.substr(1);
  const size_t dash = rest.find('-');
  std::string type = dash == std::string::npos ? rest : rest.substr(dash + 1);
  return {tag[0], type.empty() ? "_" : type};
}

bool EndOfChunk(char prev, char tag, const std::string& prev_type, const std::string& type) {
  if (prev == 'E' || prev == 'S') return true;
  if ((prev == 'B' || prev == 'I') && (tag == 'B' || tag == 'S' || tag == 'O')) return true;
  return prev != 'O' && prev != '.' && prev_type != type;
}

bool StartOfChunk(char prev, char tag, const std::string& prev_type, const std::string& type) {
  if (tag == 'B' || tag == 'S') return true;
  if ((prev == 'E' || prev == 'S' || prev == 'O') && (tag == 'E' || tag == 'I')) return true;
  return tag != 'O' && tag != '.' && prev_type != type;
}

class TokenClassification : public TokenLevelTask {
 public:
  const common::TaskInfo& info() const override { return *common::FindTask("token_classification"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kTags; }
  absl::Status CheckLabels(const data::LabelMap& labels, const std::string& source) const override {
    if (labels.size() >= 2) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": needs at least two distinct tags after cleaning, found ", labels.size()));
  }
  std::vector<std::string> OutputNames(const data::LabelMap& labels) const override { return labels.labels(); }
  std::string problem_type() const override { return "single_label_classification"; }
  std::string architecture() const override { return "BertForTokenClassification"; }

  absl::Status Configure(const text::Tokenizer& tok, const common::JobConfig& c) override {
    cls_ = tok.special().cls;
    sep_ = tok.special().sep;
    unk_ = tok.special().unk;
    label_all_ = c.label_all_subwords;
    return absl::OkStatus();
  }
  void SetOutputs(const std::vector<std::string>& names) override {
    names_ = names;
    std::set<std::string> types;
    for (const auto& n : names) {
      auto [prefix, type] = ParseTag(n);
      if (prefix != 'O') types.insert(type);
    }
    types_.assign(types.begin(), types.end());
    // With label_all_subwords, a word's later pieces carry I-X where it is B-X (HF's b_to_i_label).
    inside_.resize(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      inside_[i] = static_cast<int>(i);
      if (absl::StartsWith(names[i], "B-")) {
        auto it = std::find(names.begin(), names.end(), "I-" + names[i].substr(2));
        if (it != names.end()) inside_[i] = static_cast<int>(it - names.begin());
      }
    }
  }

  // Each word is tokenised alone (HF's is_split_into_words); a word with no
  // piece becomes [UNK]. Truncation keeps the pieces that fit, and the words
  // whose first piece is among them.
  std::vector<Encoded> Encode(const text::Tokenizer& tok, const std::vector<data::Example>& examples,
                              int max_length, EncodeReport*) const override {
    std::vector<Encoded> out;
    out.reserve(examples.size());
    for (const auto& x : examples) {
      Encoded e;
      e.ids.push_back(cls_);
      e.piece_labels.push_back(-100);
      for (size_t w = 0; w < x.words.size(); ++w) {
        std::vector<int64_t> pieces = tok.EncodePieces(x.words[w]);
        if (pieces.empty()) pieces.push_back(unk_);
        const int tag = w < x.tags.size() ? x.tags[w] : -100;
        for (size_t k = 0; k < pieces.size() && static_cast<int>(e.ids.size()) < max_length - 1; ++k) {
          if (k == 0) {
            e.first_piece.push_back(static_cast<int64_t>(e.ids.size()));
            e.word_tags.push_back(tag);
            e.words.push_back(x.words[w]);
          }
          e.ids.push_back(pieces[k]);
          e.piece_labels.push_back(k == 0 ? tag : label_all_ && tag >= 0 ? inside_.at(static_cast<size_t>(tag)) : -100);
        }
      }
      e.ids.push_back(sep_);
      e.piece_labels.push_back(-100);
      e.types.assign(e.ids.size(), 0);
      out.push_back(std::move(e));
    }
    return out;
  }

  // Training takes the loss at every labelled piece; evaluation at each
  // word's first piece, so that its figures are per word.
  Batch Collate(const std::vector<Encoded>& data, const std::vector<int64_t>& idx, const CollateContext& ctx,
                int) const override {
    std::vector<std::vector<int64_t>> ids, types;
    for (int64_t i : idx) {
      ids.push_back(data[static_cast<size_t>(i)].ids);
      types.push_back(data[static_cast<size_t>(i)].types);
    }
    Batch b = PadRows(ids, types, ctx.pad_id);
    const int64_t t = b.ids.size(1);
    std::vector<int64_t> positions, targets, rows;
    for (size_t i = 0; i < idx.size(); ++i) {
      const Encoded& e = data[static_cast<size_t>(idx[i])];
      if (ctx.train) {
        for (size_t k = 0; k < e.piece_labels.size(); ++k) {
          if (e.piece_labels[k] < 0) continue;
          positions.push_back(static_cast<int64_t>(i) * t + static_cast<int64_t>(k));
          targets.push_back(e.piece_labels[k]);
          rows.push_back(static_cast<int64_t>(i));
        }
      } else {
        for (size_t w = 0; w < e.first_piece.size(); ++w) {
          positions.push_back(static_cast<int64_t>(i) * t + e.first_piece[w]);
          targets.push_back(e.word_tags[w]);
          rows.push_back(static_cast<int64_t>(i));
        }
      }
    }
    SetPositions(&b, positions, targets, rows);
    return b;
  }

  at::Tensor Forward(model::Model& model, const Batch& b) const override {
    return model.TokenLogits(model.Encode(b.ids, b.types, b.mask), b.positions);
  }

  // One row per sentence: words, words tagged right, then per entity type its
  // right, true and predicted entities. All sums.
  int RowWidth(int) const override { return 2 + 3 * static_cast<int>(types_.size()); }
  void AppendRows(const at::Tensor& logits, const Batch& b, std::vector<double>* rows) const override {
    const size_t width = static_cast<size_t>(RowWidth(0)), first = rows->size();
    rows->resize(first + width * static_cast<size_t>(b.examples), 0.0);
    torch::Tensor pred = logits.argmax(-1).contiguous();
    auto pp = pred.accessor<int64_t, 1>();
    auto pt = b.targets.accessor<int64_t, 1>();
    auto pr = b.rows.accessor<int64_t, 1>();
    std::vector<std::vector<std::string>> truth(static_cast<size_t>(b.examples)), guess(truth.size());
    for (int64_t m = 0; m < pred.size(0); ++m) {
      truth[static_cast<size_t>(pr[m])].push_back(Name(pt[m]));
      guess[static_cast<size_t>(pr[m])].push_back(Name(pp[m]));
    }
    for (size_t i = 0; i < truth.size(); ++i) {
      double* r = rows->data() + first + width * i;
      Count(truth[i], guess[i], r);
    }
  }
  eval::Metrics Compute(const std::vector<double>& rows, int, double loss_sum) const override {
    const size_t width = static_cast<size_t>(RowWidth(0));
    std::vector<double> sum(width, 0.0);
    for (size_t at = 0; at + width <= rows.size(); at += width) {
      for (size_t k = 0; k < width; ++k) sum[k] += rows[at + k];
    }
    std::vector<eval::EntityCounts> counts(types_.size());
    for (size_t t = 0; t < types_.size(); ++t) {
      counts[t] = {static_cast<int64_t>(sum[2 + 3 * t]), static_cast<int64_t>(sum[3 + 3 * t]),
                   static_cast<int64_t>(sum[4 + 3 * t])};
    }
    return eval::ComputeTokenMetrics(static_cast<int64_t>(rows.size() / width), types_, counts,
                                     static_cast<int64_t>(sum[0]), static_cast<int64_t>(sum[1]), loss_sum);
  }

  // The classic CoNLL baseline: each word gets the tag it most often has in
  // training; unseen words get O.
  Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                           int) const override {
    std::map<std::string, std::map<int, int64_t>> seen;
    for (const auto& e : train) {
      for (size_t w = 0; w < e.words.size(); ++w) ++seen[e.words[w]][e.word_tags[w]];
    }
    const std::string outside = std::find(names_.begin(), names_.end(), "O") != names_.end() ? "O" : "";
    std::vector<double> rows(validation.size() * static_cast<size_t>(RowWidth(0)), 0.0);
    for (size_t i = 0; i < validation.size(); ++i) {
      const Encoded& e = validation[i];
      std::vector<std::string> truth, guess;
      for (size_t w = 0; w < e.words.size(); ++w) {
        truth.push_back(Name(e.word_tags[w]));
        auto it = seen.find(e.words[w]);
        if (it == seen.end()) {
          guess.push_back(outside);
          continue;
        }
        auto best = std::max_element(it->second.begin(), it->second.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
        guess.push_back(Name(best->first));
      }
      Count(truth, guess, rows.data() + i * static_cast<size_t>(RowWidth(0)));
    }
    eval::Metrics m = Compute(rows, 0, 0);
    return {"most_frequent_tag", "each word tagged with its most frequent training tag, unseen words O (the CoNLL baseline)",
            {{"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1}, {"accuracy", m.accuracy}},
            {}};
  }

  nlohmann::json PredictLine(const std::vector<double>&, const std::vector<std::string>&) const override {
    return nlohmann::json::object();
  }

 private:
  std::string Name(int64_t id) const {
    return id >= 0 && static_cast<size_t>(id) < names_.size() ? names_[static_cast<size_t>(id)] : "O";
  }
  // One sentence's sums into r (RowWidth doubles).
  void Count(const std::vector<std::string>& truth, const std::vector<std::string>& guess, double* r) const {
    r[0] += static_cast<double>(truth.size());
    for (size_t k = 0; k < truth.size(); ++k) r[1] += truth[k] == guess[k] ? 1 : 0;
    const std::vector<Entity> t = ExtractEntities(truth), g = ExtractEntities(guess);
    const std::set<Entity> gs(g.begin(), g.end());
    auto type_at = [&](const std::string& type) -> double* {
      auto it = std::lower_bound(types_.begin(), types_.end(), type);
      return it != types_.end() && *it == type ? r + 2 + 3 * (it - types_.begin()) : nullptr;
    };
    for (const auto& e : t) {
      if (double* c = type_at(e.type)) {
        c[1] += 1;
        c[0] += gs.count(e) ? 1 : 0;
      }
    }
    for (const auto& e : g) {
      if (double* c = type_at(e.type)) c[2] += 1;
    }
  }

  int64_t cls_ = 0, sep_ = 0, unk_ = 0;
  bool label_all_ = false;
  std::vector<std::string> names_, types_;
  std::vector<int> inside_;
};

}  // namespace

std::vector<Entity> ExtractEntities(const std::vector<std::string>& tags) {
  std::vector<Entity> out;
  char prev = 'O';
  std::string prev_type;
  int64_t begin = 0;
  for (size_t i = 0; i <= tags.size(); ++i) {
    auto [tag, type] = i < tags.size() ? ParseTag(tags[i]) : std::make_pair('O', std::string("_"));
    if (EndOfChunk(prev, tag, prev_type, type)) out.push_back({prev_type, begin, static_cast<int64_t>(i)});
    if (StartOfChunk(prev, tag, prev_type, type)) begin = static_cast<int64_t>(i);
    prev = tag;
    prev_type = type;
  }
  return out;
}

std::unique_ptr<Task> NewTokenClassification() { return std::make_unique<TokenClassification>(); }

}  // namespace attune::worker::task
