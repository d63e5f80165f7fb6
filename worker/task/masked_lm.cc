// masked_lm: masked-language-model pretraining (BertForMaskedLM).

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "worker/model/model.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::task {
namespace {

double Unit(uint64_t h) { return static_cast<double>(h >> 11) / 9007199254740992.0; }

// NOTE [masking]: which tokens a sequence masks is a pure function of (seed,
// epoch, example index) in training and of (seed, example index) in
// evaluation. Nothing depends on the batch, the rank or the step, so a run
// resumed from a checkpoint, or re-sharded over another world size, masks
// every example exactly as an uninterrupted run does; and every world size
// evaluates the same masked tokens. The rule is Hugging Face's
// DataCollatorForLanguageModeling: each non-special token is selected with
// probability mlm_probability (with whole_word_mask, each word, and all its
// pieces with it); a selected token becomes [MASK] with probability 0.8, a
// token drawn uniformly from the vocabulary with 0.1, and stays with 0.1. The
// loss is taken at the selected tokens only.
class MaskedLm : public LanguageModelTask {
 public:
  const common::TaskInfo& info() const override { return *common::FindTask("masked_lm"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kNone; }
  absl::Status CheckLabels(const data::LabelMap&, const std::string&) const override { return absl::OkStatus(); }
  std::vector<std::string> OutputNames(const data::LabelMap&) const override { return {}; }
  std::string problem_type() const override { return "single_label_classification"; }
  std::string architecture() const override { return "BertForMaskedLM"; }

  absl::Status Configure(const text::Tokenizer& tok, const common::JobConfig& c) override {
    const text::SpecialIds& sp = tok.special();
    if (sp.mask < 0) return absl::InvalidArgumentError("masked_lm: the vocabulary has no [MASK] token");
    cls_ = sp.cls;
    sep_ = sp.sep;
    mask_ = sp.mask;
    special_ = {sp.cls, sp.sep, sp.pad, sp.mask};
    vocab_size_ = tok.vocab_size();
    continuation_.assign(tok.vocab().size(), 0);
    for (size_t i = 0; i < tok.vocab().size(); ++i) continuation_[i] = tok.IsContinuation(static_cast<int64_t>(i));
    probability_ = c.mlm_probability;
    whole_word_ = c.whole_word_mask;
    group_ = c.group_texts;
    seed_ = static_cast<uint64_t>(c.seed);
    return absl::OkStatus();
  }

  // group_texts: every text as [CLS] pieces [SEP], concatenated and cut into
  // max_length blocks; the last partial block is dropped (as HF run_mlm does)
  // unless it is the only one. Otherwise one sequence per text, truncated.
  std::vector<Encoded> Encode(const text::Tokenizer& tok, const std::vector<data::Example>& examples,
                              int max_length, EncodeReport*) const override {
    std::vector<Encoded> out;
    auto add = [&](std::vector<int64_t> ids) {
      Encoded e;
      e.types.assign(ids.size(), 0);
      if (whole_word_) {
        for (int64_t id : ids) {
          e.word_start.push_back(id < 0 || static_cast<size_t>(id) >= continuation_.size() || !continuation_[id]);
        }
      }
      e.ids = std::move(ids);
      out.push_back(std::move(e));
    };
    if (!group_) {
      for (const auto& x : examples) add(tok.Encode(x.text, nullptr, max_length, /*pad=*/false).input_ids);
      return out;
    }
    std::vector<int64_t> stream;
    for (const auto& x : examples) {
      stream.push_back(cls_);
      const std::vector<int64_t> ids = tok.EncodePieces(x.text);
      stream.insert(stream.end(), ids.begin(), ids.end());
      stream.push_back(sep_);
    }
    const size_t block = static_cast<size_t>(max_length);
    size_t usable = stream.size() / block * block;
    if (usable == 0) usable = stream.size();
    for (size_t at = 0; at < usable; at += block) {
      add(std::vector<int64_t>(stream.begin() + static_cast<long>(at),
                               stream.begin() + static_cast<long>(std::min(usable, at + block))));
    }
    return out;
  }

  Batch Collate(const std::vector<Encoded>& data, const std::vector<int64_t>& idx, const CollateContext& ctx,
                int) const override {
    std::vector<std::vector<int64_t>> ids(idx.size()), types(idx.size()), where(idx.size()), original(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      const Encoded& e = data[static_cast<size_t>(idx[i])];
      ids[i] = e.ids;
      types[i] = e.types;
      Mask(e, Key(ctx.train, ctx.epoch, idx[i]), &ids[i], &where[i], &original[i]);
    }
    Batch b = PadRows(ids, types, ctx.pad_id);
    const int64_t t = b.ids.size(1);
    std::vector<int64_t> positions, targets, rows;
    for (size_t i = 0; i < idx.size(); ++i) {
      for (size_t k = 0; k < where[i].size(); ++k) {
        positions.push_back(static_cast<int64_t>(i) * t + where[i][k]);
        targets.push_back(original[i][k]);
        rows.push_back(static_cast<int64_t>(i));
      }
    }
    SetPositions(&b, positions, targets, rows);
    return b;
  }

  at::Tensor Forward(model::Model& model, const Batch& b) const override {
    return model.MaskedLmLogits(model.Encode(b.ids, b.types, b.mask), b.positions);
  }

  // A unigram model of the training tokens (add-one smoothed) at the
  // evaluation's masked tokens: what the model must beat to have learnt
  // anything from context.
  Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                           int) const override {
    std::vector<double> counts(static_cast<size_t>(vocab_size_), 1.0);
    double total = static_cast<double>(vocab_size_);
    for (const auto& e : train) {
      for (int64_t id : e.ids) {
        if (special_.count(id) || id < 0 || id >= vocab_size_) continue;
        counts[static_cast<size_t>(id)] += 1;
        total += 1;
      }
    }
    const auto top = static_cast<int64_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
    double nll = 0;
    int64_t masked = 0, right = 0;
    for (size_t i = 0; i < validation.size(); ++i) {
      std::vector<int64_t> ids = validation[i].ids, where, original;
      Mask(validation[i], Key(false, 0, static_cast<int64_t>(i)), &ids, &where, &original);
      for (int64_t id : original) {
        const double c = id >= 0 && id < vocab_size_ ? counts[static_cast<size_t>(id)] : 1.0;
        nll -= std::log(c / total);
        ++masked;
        right += id == top;
      }
    }
    eval::Metrics m = eval::ComputeMaskedLmMetrics(static_cast<int64_t>(validation.size()), nll, masked, right);
    return {"unigram", "a unigram model of the training tokens (add-one smoothed), blind to context",
            {{"loss", m.loss}, {"perplexity", m.perplexity}, {"accuracy", m.accuracy}},
            {}};
  }

  nlohmann::json PredictLine(const std::vector<double>&, const std::vector<std::string>&) const override {
    return nlohmann::json::object();
  }

 private:
  uint64_t Key(bool train, int64_t epoch, int64_t example) const {
    const uint64_t stream = train ? MixBits(static_cast<uint64_t>(epoch) + 1) : 0x6576616c756174ULL;  // "evaluat"
    return MixBits(MixBits(seed_ ^ stream) ^ static_cast<uint64_t>(example));
  }

  // Applies NOTE [masking] to `ids` (a copy of e.ids): the selected positions
  // go to `where`, their original ids to `original`.
  void Mask(const Encoded& e, uint64_t key, std::vector<int64_t>* ids, std::vector<int64_t>* where,
            std::vector<int64_t>* original) const {
    bool selected = false;
    for (size_t k = 0; k < e.ids.size(); ++k) {
      const uint64_t h = MixBits(key ^ MixBits(k));
      if (special_.count(e.ids[k])) {
        selected = false;
        continue;
      }
      if (!whole_word_ || e.word_start.empty() || e.word_start[k]) selected = Unit(h) < probability_;
      if (!selected) continue;
      where->push_back(static_cast<int64_t>(k));
      original->push_back(e.ids[k]);
      const uint64_t h2 = MixBits(h);
      const double u = Unit(h2);
      if (u < 0.8) {
        (*ids)[k] = mask_;
      } else if (u < 0.9) {
        (*ids)[k] = static_cast<int64_t>(MixBits(h2) % static_cast<uint64_t>(vocab_size_));
      }
    }
  }

  int64_t cls_ = 0, sep_ = 0, mask_ = 0, vocab_size_ = 1;
  std::unordered_set<int64_t> special_;
  std::vector<uint8_t> continuation_;
  double probability_ = 0.15;
  bool whole_word_ = false, group_ = true;
  uint64_t seed_ = 0;
};

}  // namespace

std::unique_ptr<Task> NewMaskedLm() { return std::make_unique<MaskedLm>(); }

}  // namespace attune::worker::task
