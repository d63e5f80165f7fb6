#include "worker/train/predict.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/status_macros.h"
#include "worker/data/dataset.h"
#include "worker/model/decoder.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/model.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"
#include "worker/train/device.h"
#include "worker/train/predict_decoder.h"
#include "worker/train/trainer.h"

namespace attune::worker::train {
namespace {

// Forwards to another stream buffer, counting the lines written.
class LineCounter : public std::streambuf {
 public:
  explicit LineCounter(std::streambuf* to) : to_(to) {}
  int64_t lines() const { return lines_; }

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    if (c == '\n') ++lines_;
    return to_->sputc(static_cast<char>(c));
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i) lines_ += s[i] == '\n';
    return to_->sputn(s, n);
  }
  int sync() override { return to_->pubsync(); }

 private:
  std::streambuf* to_;
  int64_t lines_ = 0;
};

// Fill-mask: the top_k tokens at every [MASK] of each row.
absl::Status FillMasks(model::Model& m, const text::Tokenizer& tok, const torch::Tensor& ids,
                       const torch::Tensor& types, const torch::Tensor& mask, int top_k, std::ostream& out) {
  const int64_t mask_id = tok.special().mask;
  const int64_t t = ids.size(1);
  torch::Tensor where = (ids.eq(mask_id) & mask.eq(1)).reshape({-1}).nonzero().reshape({-1});
  torch::Tensor probs =
      torch::softmax(m.MaskedLmLogits(m.Encode(ids, types, mask), where).to(torch::kFloat64), -1).cpu();
  where = where.cpu();
  const int64_t k = std::min<int64_t>(top_k > 0 ? top_k : 5, probs.size(1));
  auto [score, id] = probs.topk(k, -1);
  std::vector<nlohmann::json> rows(static_cast<size_t>(ids.size(0)));
  for (auto& r : rows) r["masks"] = nlohmann::json::array();
  for (int64_t j = 0; j < where.size(0); ++j) {
    const int64_t flat = where[j].item<int64_t>();
    nlohmann::json cands = nlohmann::json::array();
    for (int64_t c = 0; c < k; ++c) {
      const int64_t tid = id[j][c].item<int64_t>();
      cands.push_back({{"id", tid},
                       {"token", tid < tok.vocab_size() ? tok.vocab()[static_cast<size_t>(tid)] : "[UNK]"},
                       {"score", score[j][c].item<double>()}});
    }
    rows[static_cast<size_t>(flat / t)]["masks"].push_back({{"index", flat % t}, {"top_k", cands}});
  }
  for (const auto& r : rows) out << r.dump() << "\n";
  return absl::OkStatus();
}

// Token classification: {"tokens": [...]} or {"text": "..."} per JSONL line;
// a tag per word, the logits at its first piece, and the entities.
absl::Status PredictTokens(model::Model& m, const text::Tokenizer& tok, const std::string& input,
                           const PredictOptions& o, int max_len, const torch::Device& device, std::ostream& out) {
  std::unique_ptr<task::Task> task = task::MakeTask("token_classification");
  ATTUNE_RETURN_IF_ERROR(task->Configure(tok, common::JobConfig()));
  task->SetOutputs(m.labels());
  ATTUNE_ASSIGN_OR_RETURN(std::string text, common::ReadFile(input, int64_t{1} << 30));
  std::vector<data::Example> examples;
  size_t at = 0;
  int64_t line = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string row = text.substr(at, end - at);
    at = end + 1;
    ++line;
    if (row.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(row, nullptr, false);
    data::Example e;
    if (j.is_object() && j.contains("tokens") && j["tokens"].is_array()) {
      for (const auto& w : j["tokens"]) {
        if (!w.is_string()) return absl::InvalidArgumentError(absl::StrCat(input, ":", line, ": tokens must be strings"));
        e.words.push_back(w.get<std::string>());
      }
    } else if (j.is_object() && j.contains(o.text_column) && j[o.text_column].is_string()) {
      e.words = tok.SplitWords(j[o.text_column].get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(input, ":", line, ": expected a JSON object with \"tokens\" (an array) or \"",
                                                     o.text_column, "\" (a string)"));
    }
    examples.push_back(std::move(e));
  }
  std::vector<task::Encoded> enc = task->Encode(tok, examples, max_len);
  torch::NoGradGuard g;
  for (size_t start = 0; start < enc.size(); start += static_cast<size_t>(o.batch_size)) {
    std::vector<int64_t> idx;
    for (size_t i = start; i < std::min(enc.size(), start + static_cast<size_t>(o.batch_size)); ++i) {
      idx.push_back(static_cast<int64_t>(i));
    }
    task::CollateContext ctx;
    ctx.pad_id = tok.pad_id();
    ctx.train = false;
    task::Batch b = OnDevice(task->Collate(enc, idx, ctx, static_cast<int>(m.labels().size())), device);
    torch::Tensor logits = task->Forward(m, b).to(torch::kFloat64).cpu().contiguous();
    size_t row = 0;
    for (int64_t i : idx) {
      const data::Example& x = examples[static_cast<size_t>(i)];
      const size_t kept = enc[static_cast<size_t>(i)].first_piece.size();
      std::vector<std::string> tags;
      nlohmann::json word_logits = nlohmann::json::array();
      for (size_t w = 0; w < x.words.size(); ++w) {
        if (w >= kept) {  // cut off by max_length: no prediction
          tags.push_back("O");
          word_logits.push_back(nlohmann::json::array());
          continue;
        }
        torch::Tensor l = logits[static_cast<int64_t>(row++)];
        std::vector<double> v(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
        const size_t best = static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
        tags.push_back(best < m.labels().size() ? m.labels()[best] : "O");
        word_logits.push_back(v);
      }
      nlohmann::json entities = nlohmann::json::array();
      for (const auto& e : task::ExtractEntities(tags)) {
        std::string span;
        for (int64_t w = e.start; w < e.end; ++w) absl::StrAppend(&span, w > e.start ? " " : "", x.words[static_cast<size_t>(w)]);
        entities.push_back({{"type", e.type}, {"start", e.start}, {"end", e.end}, {"text", span}});
      }
      out << nlohmann::json({{"tokens", x.words}, {"tags", tags}, {"logits", word_logits}, {"entities", entities}})
                 .dump()
          << "\n";
    }
  }
  out.flush();
  if (!out) return absl::UnavailableError("cannot write predictions");
  return absl::OkStatus();
}

// --max_length, else the length the model was trained with (config.json
// attune_max_length), else its position limit capped at 512.
int MaxLength(const model::Model& m, const PredictOptions& o) {
  if (o.max_length > 0) return o.max_length;
  const int64_t limit = std::min<int64_t>(512, m.max_positions());
  return static_cast<int>(m.train_max_length() > 0 ? std::min(m.train_max_length(), limit) : limit);
}

absl::Status PredictImpl(const std::string& model_dir, const std::string& input, const PredictOptions& o,
                         std::ostream& out, PredictStats* stats) {
  ConfigureThreads(o.threads);
  ATTUNE_ASSIGN_OR_RETURN(const torch::Device device, ResolveDevice(o.device, common::JobConfig{}, 0));
  ATTUNE_ASSIGN_OR_RETURN(const model::ModelPtr loaded, model::LoadHfModel(model_dir));
  model::Model& m = *loaded;
  if (m.head() == model::Head::kCausalLm) {
    m.to(device);
    m.eval();
    return PredictCausalLm(dynamic_cast<model::DecoderLmImpl&>(m), model_dir, input, o, out, stats);
  }
  if (o.logprobs || o.max_new_tokens > 0) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, " is a ", m.hf().architecture,
                                                   "; --logprobs and --max_new_tokens are for causal language models"));
  }
  ATTUNE_ASSIGN_OR_RETURN(const std::unique_ptr<text::Tokenizer> tokenizer, text::Tokenizer::FromDirectory(model_dir));
  const text::Tokenizer& tok = *tokenizer;
  // Ids past the embedding table would fail mid-run ("index out of range").
  if (const int64_t rows = m.input_embeddings().size(0); tok.vocab_size() > rows) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": the tokenizer has ", tok.vocab_size(),
                                                   " tokens but config.json's vocab_size (the embedding table) is ",
                                                   rows));
  }
  m.to(device);
  if (m.head() == model::Head::kToken) {
    const int max_len = MaxLength(m, o);
    return PredictTokens(m, tok, input, o, max_len, device, out);
  }
  // The model's HF problem_type decides the output: softmax and a label,
  // sigmoids and every label above 0.5, or a score.
  const std::unique_ptr<task::Task> task = task::TaskForProblemType(m.problem_type());
  data::ReaderOptions ro;
  ro.text_column = o.text_column;
  ro.label_column = "label";
  ro.require_label = false;
  ro.text_pair_column = o.text_pair_column;
  ro.require_text_pair = false;  // optional in prediction input
  ATTUNE_ASSIGN_OR_RETURN(auto records, data::ReadRecords(input, ro));
  const int max_len = MaxLength(m, o);
  torch::NoGradGuard g;
  // Records are predicted in batches of valid ones; a record without text gets
  // its own error line in its place, so line k of the output is record k.
  std::vector<size_t> pending;
  auto flush = [&]() -> absl::Status {
    if (pending.empty()) return absl::OkStatus();
    std::vector<text::Encoding> enc;
    size_t longest = 0;
    for (size_t i : pending) {
      const std::string* pair = records[i].text_pair ? &*records[i].text_pair : nullptr;
      enc.push_back(tok.Encode(*records[i].text, pair, max_len, false));
      longest = std::max(longest, enc.back().input_ids.size());
    }
    pending.clear();
    const auto b = static_cast<int64_t>(enc.size()), t = static_cast<int64_t>(longest);
    torch::Tensor ids = torch::full({b, t}, tok.pad_id(), torch::kInt64), types = torch::zeros({b, t}, torch::kInt64),
                  mask = torch::zeros({b, t}, torch::kInt64);
    for (int64_t i = 0; i < b; ++i) {
      const auto& e = enc[static_cast<size_t>(i)];
      const auto n = static_cast<int64_t>(e.input_ids.size());
      ids[i].slice(0, 0, n).copy_(torch::tensor(e.input_ids, torch::kInt64));
      types[i].slice(0, 0, n).copy_(torch::tensor(e.token_type_ids, torch::kInt64));
      mask[i].slice(0, 0, n).fill_(1);
    }
    ids = ids.to(device), types = types.to(device), mask = mask.to(device);
    if (m.head() == model::Head::kMaskedLm) return FillMasks(m, tok, ids, types, mask, o.top_k, out);
    torch::Tensor logits = m.SequenceLogits(ids, types, mask).to(torch::kFloat64).cpu().contiguous();
    for (int64_t i = 0; i < b; ++i) {
      std::vector<double> l(logits[i].data_ptr<double>(), logits[i].data_ptr<double>() + logits.size(1));
      out << task->PredictLine(l, m.labels()).dump() << "\n";
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < records.size(); ++i) {
    if (!records[i].text) {
      ATTUNE_RETURN_IF_ERROR(flush());
      out << nlohmann::json{{"error", "missing text"}, {"line", records[i].line}}.dump() << "\n";
      continue;
    }
    pending.push_back(i);
    if (pending.size() >= static_cast<size_t>(o.batch_size)) ATTUNE_RETURN_IF_ERROR(flush());
  }
  ATTUNE_RETURN_IF_ERROR(flush());
  out.flush();
  if (!out) return absl::UnavailableError("cannot write predictions");
  return absl::OkStatus();
}

}  // namespace

absl::Status Predict(const std::string& model_dir, const std::string& input, const PredictOptions& o,
                     std::ostream& out, PredictStats* stats) {
  LineCounter counted(out.rdbuf());
  std::ostream lines(&counted);
  PredictStats ignored;
  PredictStats& st = stats != nullptr ? *stats : ignored;
  try {
    absl::Status s = PredictImpl(model_dir, input, o, lines, &st);
    lines.flush();
    st.records = counted.lines();
    if (s.ok() && !lines) s = absl::UnavailableError("cannot write predictions");
    return s;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  }
}

}  // namespace attune::worker::train
