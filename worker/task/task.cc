#include "worker/task/task.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/baseline/text_baseline.h"
#include "worker/model/model.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::task {

void EncodeReport::Drop(const std::string& reason, int64_t line, const std::string& message) {
  ++dropped[reason];
  auto& lines = sample_lines[reason];
  if (lines.size() < 10) lines.push_back(line);
  if (!message.empty()) first_error.emplace(reason, message);
}

nlohmann::json EncodeReport::ToJson() const {
  nlohmann::json j = {{"sequences", sequences}, {"examples", examples}, {"truncated", truncated}};
  j["dropped"] = nlohmann::json::object();
  for (const auto& [reason, n] : dropped) j["dropped"][reason] = n;
  j["sample_lines"] = nlohmann::json::object();
  for (const auto& [reason, lines] : sample_lines) j["sample_lines"][reason] = lines;
  if (!first_error.empty()) {
    j["first_error"] = nlohmann::json::object();
    for (const auto& [reason, m] : first_error) j["first_error"][reason] = m;
  }
  return j;
}

uint64_t MixBits(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

Batch PadRows(const std::vector<std::vector<int64_t>>& ids, const std::vector<std::vector<int64_t>>& types,
              int64_t pad_id) {
  size_t longest = 0;
  for (const auto& r : ids) longest = std::max(longest, r.size());
  const auto b = static_cast<int64_t>(ids.size()), t = static_cast<int64_t>(longest);
  Batch out;
  out.examples = b;
  out.ids = torch::full({b, t}, pad_id, torch::kInt64);
  out.types = torch::zeros({b, t}, torch::kInt64);
  out.mask = torch::zeros({b, t}, torch::kInt64);
  auto pi = out.ids.accessor<int64_t, 2>();
  auto pt = out.types.accessor<int64_t, 2>();
  auto pm = out.mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& row = ids[static_cast<size_t>(i)];
    for (size_t k = 0; k < row.size(); ++k) {
      pi[i][static_cast<int64_t>(k)] = row[k];
      pt[i][static_cast<int64_t>(k)] = types[static_cast<size_t>(i)][k];
      pm[i][static_cast<int64_t>(k)] = 1;
    }
    out.tokens += static_cast<int64_t>(row.size());
  }
  return out;
}

std::vector<Encoded> Task::Encode(const text::Tokenizer& tok, const std::vector<data::Example>& examples,
                                  int max_length, EncodeReport*) const {
  std::vector<Encoded> out;
  out.reserve(examples.size());
  for (const auto& e : examples) {
    const std::string* pair = e.text_pair ? &*e.text_pair : nullptr;
    text::Encoding enc = tok.Encode(e.text, pair, max_length, /*pad=*/false);
    Encoded x;
    x.ids = std::move(enc.input_ids);
    x.types = std::move(enc.token_type_ids);
    x.label = e.label;
    x.labels = e.labels;
    x.value = e.value;
    out.push_back(std::move(x));
  }
  return out;
}

// With a non-zero augmentation rate, each non-special token of a training
// example is deleted or replaced by [MASK], decided by a hash of (aug_seed,
// example), so that a resumed run draws the same augmentation.
Batch Task::Collate(const std::vector<Encoded>& data, const std::vector<int64_t>& idx, const CollateContext& ctx,
                    int outputs) const {
  std::vector<std::vector<int64_t>> ids(idx.size()), types(idx.size());
  std::vector<const Encoded*> rows;
  for (size_t i = 0; i < idx.size(); ++i) {
    const Encoded& e = data[static_cast<size_t>(idx[i])];
    rows.push_back(&e);
    if (ctx.delete_rate > 0 || ctx.mask_rate > 0) {
      uint64_t h = MixBits(ctx.aug_seed ^ MixBits(static_cast<uint64_t>(idx[i])));
      for (size_t k = 0; k < e.ids.size(); ++k) {
        h = MixBits(h);
        double u = static_cast<double>(h >> 11) / 9007199254740992.0;
        bool special = k == 0 || k + 1 == e.ids.size() || (k + 1 < e.ids.size() && e.types[k] != e.types[k + 1]);
        if (!special && u < ctx.delete_rate) continue;
        ids[i].push_back(!special && u < ctx.delete_rate + ctx.mask_rate && ctx.mask_id >= 0 ? ctx.mask_id : e.ids[k]);
        types[i].push_back(e.types[k]);
      }
    } else {
      ids[i] = e.ids;
      types[i] = e.types;
    }
  }
  Batch out = PadRows(ids, types, ctx.pad_id);
  out.targets = Targets(rows, outputs);
  out.loss_units = static_cast<double>(out.examples * LossUnitsPerExample(outputs));
  return out;
}

at::Tensor Task::Forward(model::Model& model, const Batch& b) const {
  return model.SequenceLogits(b.ids, b.types, b.mask);
}

at::Tensor TokenLevelTask::Targets(const std::vector<const Encoded*>&, int) const {
  return torch::empty({0}, torch::kInt64);
}

at::Tensor TokenLevelTask::SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const {
  return torch::nn::functional::cross_entropy(
      logits, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
}

void LanguageModelTask::AppendRows(const at::Tensor& logits, const Batch& b, std::vector<double>* rows) const {
  const size_t first = rows->size();
  rows->resize(first + 3 * static_cast<size_t>(b.examples), 0.0);
  if (b.targets.numel() == 0) return;
  torch::Tensor l64 = logits.to(torch::kFloat64);
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      l64, b.targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  torch::Tensor right = l64.argmax(-1).eq(b.targets);
  auto pl = loss.accessor<double, 1>();
  auto pr = right.accessor<bool, 1>();
  auto row = b.rows.accessor<int64_t, 1>();
  for (int64_t m = 0; m < loss.size(0); ++m) {
    double* r = rows->data() + first + 3 * static_cast<size_t>(row[m]);
    r[0] += pl[m];
    r[1] += 1;
    r[2] += pr[m] ? 1 : 0;
  }
}

eval::Metrics LanguageModelTask::Compute(const std::vector<double>& rows, int, double) const {
  double loss = 0, tokens = 0, right = 0;
  for (size_t at = 0; at + 3 <= rows.size(); at += 3) {
    loss += rows[at];
    tokens += rows[at + 1];
    right += rows[at + 2];
  }
  return eval::ComputeLmMetrics(name(), static_cast<int64_t>(rows.size() / 3), loss, static_cast<int64_t>(tokens),
                                static_cast<int64_t>(right));
}

void TokenLevelTask::SetPositions(Batch* b, const std::vector<int64_t>& positions, const std::vector<int64_t>& targets,
                                  const std::vector<int64_t>& rows) {
  b->positions = torch::tensor(positions, torch::kInt64);
  b->targets = torch::tensor(targets, torch::kInt64);
  b->rows = torch::tensor(rows, torch::kInt64);
  b->loss_units = static_cast<double>(positions.size());
}

namespace {

namespace F = torch::nn::functional;

std::vector<double> RowOf(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

const common::TaskInfo& Info(const char* name) { return *common::FindTask(name); }

std::vector<std::string> Texts(const std::vector<data::Example>& examples) {
  std::vector<std::string> out;
  out.reserve(examples.size());
  for (const auto& e : examples) out.push_back(e.text_pair ? absl::StrCat(e.text, " ", *e.text_pair) : e.text);
  return out;
}

Baseline FromText(const baseline::TextBaselineResult& r, std::map<std::string, double> metrics) {
  return {"tfidf_logreg",
          absl::StrFormat("TF-IDF of word 1-2-grams + logistic regression (C %g, chosen on the training data)", r.c),
          std::move(metrics),
          {{"c", r.c},
           {"features", static_cast<double>(r.features)},
           {"iterations", static_cast<double>(r.iterations)},
           {"seconds", r.seconds}}};
}

class SequenceClassification : public Task {
 public:
  const common::TaskInfo& info() const override { return Info("sequence_classification"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kClass; }
  absl::Status CheckLabels(const data::LabelMap& labels, const std::string& source) const override {
    if (labels.size() >= 2) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": needs at least two distinct labels after cleaning, found ", labels.size()));
  }
  std::vector<std::string> OutputNames(const data::LabelMap& labels) const override { return labels.labels(); }
  std::string problem_type() const override { return "single_label_classification"; }

  at::Tensor Targets(const std::vector<const Encoded*>& batch, int) const override {
    std::vector<int64_t> y;
    for (const Encoded* e : batch) y.push_back(e->label);
    return torch::tensor(y, torch::kInt64);
  }
  at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const override {
    return F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }

  int RowWidth(int outputs) const override { return 1 + outputs; }
  void AppendRows(const at::Tensor& logits, const Batch& b, std::vector<double>* rows) const override {
    const at::Tensor& targets = b.targets;
    torch::Tensor p = torch::softmax(logits.to(torch::kFloat64), -1);
    for (int64_t i = 0; i < logits.size(0); ++i) {
      rows->push_back(static_cast<double>(targets[i].item<int64_t>()));
      auto r = RowOf(p[i]);
      rows->insert(rows->end(), r.begin(), r.end());
    }
  }
  eval::Metrics Compute(const std::vector<double>& rows, int outputs, double loss_sum) const override {
    eval::EvalInput in;
    in.num_classes = outputs;
    const size_t w = static_cast<size_t>(RowWidth(outputs));
    for (size_t at = 0; at + w <= rows.size(); at += w) {
      in.labels.push_back(static_cast<int>(rows[at]));
      in.probs.emplace_back(rows.begin() + static_cast<long>(at + 1), rows.begin() + static_cast<long>(at + w));
    }
    in.loss_sum = loss_sum;
    return eval::ComputeMetrics(in);
  }
  Baseline ComputeBaseline(const std::vector<Encoded>&, const std::vector<Encoded>& validation,
                           int outputs) const override {
    std::vector<int64_t> counts(static_cast<size_t>(outputs), 0);
    for (const auto& e : validation) ++counts[static_cast<size_t>(e.label)];
    const double best = static_cast<double>(*std::max_element(counts.begin(), counts.end()));
    return {"majority_class", "majority class of the evaluation set",
            {{"accuracy", validation.empty() ? 0.0 : best / static_cast<double>(validation.size())}}, {}};
  }
  absl::StatusOr<std::optional<Baseline>> TextBaseline(const std::vector<data::Example>& train,
                                                       const std::vector<data::Example>& validation,
                                                       int outputs) const override {
    std::vector<int> y;
    for (const auto& e : train) y.push_back(e.label);
    auto r = baseline::FitTfidfLogReg(Texts(train), y, outputs, Texts(validation));
    if (!r.ok()) return r.status();
    eval::EvalInput in;
    in.num_classes = outputs;
    for (const auto& e : validation) in.labels.push_back(e.label);
    in.probs = r->probs;
    const eval::Metrics m = eval::ComputeMetrics(in);
    std::map<std::string, double> named = m.Named();
    named.erase("loss");
    return std::optional<Baseline>(FromText(*r, std::move(named)));
  }

  nlohmann::json PredictLine(const std::vector<double>& logits, const std::vector<std::string>& names) const override {
    torch::Tensor p = torch::softmax(torch::tensor(logits, torch::kFloat64), -1);
    auto probs = RowOf(p);
    const size_t best = static_cast<size_t>(std::max_element(probs.begin(), probs.end()) - probs.begin());
    return {{"logits", logits}, {"probs", probs}, {"label", best < names.size() ? names[best] : std::to_string(best)}};
  }
};

class MultiLabelClassification : public Task {
 public:
  const common::TaskInfo& info() const override { return Info("multi_label_classification"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kMultiLabel; }
  absl::Status CheckLabels(const data::LabelMap& labels, const std::string& source) const override {
    if (labels.size() >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(source, ": no labels left after cleaning"));
  }
  std::vector<std::string> OutputNames(const data::LabelMap& labels) const override { return labels.labels(); }
  std::string problem_type() const override { return "multi_label_classification"; }

  at::Tensor Targets(const std::vector<const Encoded*>& batch, int outputs) const override {
    torch::Tensor y = torch::zeros({static_cast<int64_t>(batch.size()), outputs}, torch::kFloat32);
    auto a = y.accessor<float, 2>();
    for (size_t i = 0; i < batch.size(); ++i) {
      for (int c : batch[i]->labels) a[static_cast<int64_t>(i)][c] = 1.0f;
    }
    return y;
  }
  // HF's BCEWithLogitsLoss averages over examples and labels: the engine
  // divides this sum by examples x labels.
  at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const override {
    return F::binary_cross_entropy_with_logits(
        logits, targets.to(logits.scalar_type()), F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum));
  }
  int64_t LossUnitsPerExample(int outputs) const override { return outputs; }

  int RowWidth(int outputs) const override { return 2 * outputs; }
  void AppendRows(const at::Tensor& logits, const Batch& b, std::vector<double>* rows) const override {
    const at::Tensor& targets = b.targets;
    torch::Tensor p = torch::sigmoid(logits.to(torch::kFloat64));
    for (int64_t i = 0; i < logits.size(0); ++i) {
      auto t = RowOf(targets[i]), s = RowOf(p[i]);
      rows->insert(rows->end(), t.begin(), t.end());
      rows->insert(rows->end(), s.begin(), s.end());
    }
  }
  eval::Metrics Compute(const std::vector<double>& rows, int outputs, double loss_sum) const override {
    eval::MultiLabelInput in;
    in.num_labels = outputs;
    const size_t k = static_cast<size_t>(outputs), w = 2 * k;
    for (size_t at = 0; at + w <= rows.size(); at += w) {
      std::vector<int> t(k);
      for (size_t c = 0; c < k; ++c) t[c] = rows[at + c] > 0.5;
      in.targets.push_back(std::move(t));
      in.probs.emplace_back(rows.begin() + static_cast<long>(at + k), rows.begin() + static_cast<long>(at + w));
    }
    in.loss_sum = loss_sum;
    return eval::ComputeMultiLabelMetrics(in);
  }
  // Each label predicted when most training examples carry it.
  Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                           int outputs) const override {
    std::vector<int64_t> carried(static_cast<size_t>(outputs), 0);
    for (const auto& e : train) {
      for (int c : e.labels) ++carried[static_cast<size_t>(c)];
    }
    eval::MultiLabelInput in;
    in.num_labels = outputs;
    std::vector<double> fixed(static_cast<size_t>(outputs));
    for (size_t c = 0; c < fixed.size(); ++c) fixed[c] = 2 * carried[c] > static_cast<int64_t>(train.size()) ? 1.0 : 0.0;
    for (const auto& e : validation) {
      std::vector<int> t(static_cast<size_t>(outputs), 0);
      for (int c : e.labels) t[static_cast<size_t>(c)] = 1;
      in.targets.push_back(std::move(t));
      in.probs.push_back(fixed);
    }
    eval::Metrics m = eval::ComputeMultiLabelMetrics(in);
    return {"label_frequency", "each label predicted when most training examples carry it",
            {{"subset_accuracy", m.subset_accuracy},
             {"hamming_loss", m.hamming_loss},
             {"micro_f1", m.micro_f1},
             {"macro_f1", m.macro_f1}},
            {}};
  }
  absl::StatusOr<std::optional<Baseline>> TextBaseline(const std::vector<data::Example>& train,
                                                       const std::vector<data::Example>& validation,
                                                       int outputs) const override {
    std::vector<std::vector<int>> y;
    for (const auto& e : train) y.push_back(e.labels);
    auto r = baseline::FitTfidfLogRegMultiLabel(Texts(train), y, outputs, Texts(validation));
    if (!r.ok()) return r.status();
    eval::MultiLabelInput in;
    in.num_labels = outputs;
    for (const auto& e : validation) {
      std::vector<int> t(static_cast<size_t>(outputs), 0);
      for (int c : e.labels) t[static_cast<size_t>(c)] = 1;
      in.targets.push_back(std::move(t));
    }
    in.probs = r->probs;
    std::map<std::string, double> named = eval::ComputeMultiLabelMetrics(in).Named();
    named.erase("loss");
    return std::optional<Baseline>(FromText(*r, std::move(named)));
  }

  nlohmann::json PredictLine(const std::vector<double>& logits, const std::vector<std::string>& names) const override {
    auto probs = RowOf(torch::sigmoid(torch::tensor(logits, torch::kFloat64)));
    const size_t best = static_cast<size_t>(std::max_element(probs.begin(), probs.end()) - probs.begin());
    std::vector<std::string> above;
    for (size_t c = 0; c < probs.size(); ++c) {
      if (probs[c] > 0.5) above.push_back(c < names.size() ? names[c] : std::to_string(c));
    }
    return {{"logits", logits},
            {"probs", probs},
            {"label", best < names.size() ? names[best] : std::to_string(best)},
            {"labels", above}};
  }
};

class SequenceRegression : public Task {
 public:
  const common::TaskInfo& info() const override { return Info("sequence_regression"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kNumber; }
  absl::Status CheckLabels(const data::LabelMap&, const std::string&) const override { return absl::OkStatus(); }
  std::vector<std::string> OutputNames(const data::LabelMap&) const override { return {"LABEL_0"}; }
  std::string problem_type() const override { return "regression"; }

  at::Tensor Targets(const std::vector<const Encoded*>& batch, int) const override {
    std::vector<float> y;
    for (const Encoded* e : batch) y.push_back(static_cast<float>(e->value));
    return torch::tensor(y, torch::kFloat32);
  }
  at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const override {
    return F::mse_loss(logits.squeeze(-1), targets.to(logits.scalar_type()),
                       F::MSELossFuncOptions().reduction(torch::kSum));
  }

  int RowWidth(int) const override { return 2; }
  void AppendRows(const at::Tensor& logits, const Batch& b, std::vector<double>* rows) const override {
    auto t = RowOf(b.targets), p = RowOf(logits.squeeze(-1));
    for (size_t i = 0; i < t.size(); ++i) {
      rows->push_back(t[i]);
      rows->push_back(p[i]);
    }
  }
  eval::Metrics Compute(const std::vector<double>& rows, int, double) const override {
    eval::RegressionInput in;
    for (size_t at = 0; at + 2 <= rows.size(); at += 2) {
      in.targets.push_back(rows[at]);
      in.predictions.push_back(rows[at + 1]);
    }
    return eval::ComputeRegressionMetrics(in);
  }
  Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                           int) const override {
    double mean = 0;
    for (const auto& e : train) mean += e.value;
    mean /= static_cast<double>(std::max<size_t>(1, train.size()));
    eval::RegressionInput in;
    for (const auto& e : validation) {
      in.targets.push_back(e.value);
      in.predictions.push_back(mean);
    }
    eval::Metrics m = eval::ComputeRegressionMetrics(in);
    return {"training_mean", absl::StrCat("the training mean (", mean, ") for every example"), {{"mse", m.mse}, {"mae", m.mae}}, {}};
  }

  nlohmann::json PredictLine(const std::vector<double>& logits, const std::vector<std::string>&) const override {
    return {{"logits", logits}, {"score", logits.empty() ? 0.0 : logits[0]}};
  }
};

}  // namespace

std::unique_ptr<Task> MakeTask(const std::string& name) {
  if (name.empty() || name == "sequence_classification") return std::make_unique<SequenceClassification>();
  if (name == "multi_label_classification") return std::make_unique<MultiLabelClassification>();
  if (name == "sequence_regression") return std::make_unique<SequenceRegression>();
  if (name == "masked_lm") return NewMaskedLm();
  if (name == "causal_lm") return NewCausalLm();
  if (name == "token_classification") return NewTokenClassification();
  return nullptr;
}

std::unique_ptr<Task> TaskForProblemType(const std::string& problem_type) {
  if (problem_type == "multi_label_classification") return MakeTask("multi_label_classification");
  if (problem_type == "regression") return MakeTask("sequence_regression");
  return MakeTask("sequence_classification");
}

}  // namespace attune::worker::task
