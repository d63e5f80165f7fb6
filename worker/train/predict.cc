#include "worker/train/predict.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/data/dataset.h"
#include "worker/model/bert.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"
#include "worker/train/trainer.h"

namespace attune::worker::train {
namespace {

absl::Status PredictImpl(const std::string& model_dir, const std::string& input, const PredictOptions& o,
                         std::ostream& out) {
  ConfigureThreads(o.threads);
  ATTUNE_ASSIGN_OR_RETURN(model::BertClassifier m, model::LoadHfModel(model_dir));
  ATTUNE_ASSIGN_OR_RETURN(text::Tokenizer tok, text::Tokenizer::FromDirectory(model_dir));
  // The model's HF problem_type decides the output: softmax and a label,
  // sigmoids and every label above 0.5, or a score.
  const std::unique_ptr<task::Task> task = task::TaskForProblemType(m->config.problem_type);
  data::ReaderOptions ro;
  ro.text_column = o.text_column;
  ro.label_column = "label";
  ro.require_label = false;
  ro.text_pair_column = o.text_pair_column;
  ro.require_text_pair = false;  // optional in prediction input
  ATTUNE_ASSIGN_OR_RETURN(auto records, data::ReadRecords(input, ro));
  const int max_len = o.max_length > 0 ? o.max_length
                                       : static_cast<int>(std::min<int64_t>(512, m->config.max_position_embeddings));
  torch::NoGradGuard g;
  for (size_t start = 0; start < records.size(); start += static_cast<size_t>(o.batch_size)) {
    size_t end = std::min(records.size(), start + static_cast<size_t>(o.batch_size));
    std::vector<text::Encoding> enc;
    size_t longest = 0;
    for (size_t i = start; i < end; ++i) {
      if (!records[i].text) {
        return absl::InvalidArgumentError(absl::StrCat(input, ":", records[i].line, ": missing text"));
      }
      const std::string* pair = records[i].text_pair ? &*records[i].text_pair : nullptr;
      enc.push_back(tok.Encode(*records[i].text, pair, max_len, false));
      longest = std::max(longest, enc.back().input_ids.size());
    }
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
    torch::Tensor logits = m(ids, types, mask).to(torch::kFloat64).contiguous();
    for (int64_t i = 0; i < b; ++i) {
      std::vector<double> l(logits[i].data_ptr<double>(), logits[i].data_ptr<double>() + logits.size(1));
      out << task->PredictLine(l, m->config.labels).dump() << "\n";
    }
  }
  out.flush();
  if (!out) return absl::UnavailableError("cannot write predictions");
  return absl::OkStatus();
}

}  // namespace

absl::Status Predict(const std::string& model_dir, const std::string& input, const PredictOptions& o,
                     std::ostream& out) {
  try {
    return PredictImpl(model_dir, input, o, out);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  }
}

}  // namespace attune::worker::train
