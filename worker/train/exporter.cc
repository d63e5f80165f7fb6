#include "worker/train/exporter.h"

#include <algorithm>

#include "common/files.h"
#include "common/status_macros.h"
#include "worker/model/hf_checkpoint.h"

namespace attune::worker::train {

absl::Status ExportRun(model::Model& model, const text::Tokenizer& tok, const common::JobConfig& c,
                       const common::Owner& owner, const std::string& model_dir, eval::ReportInput report) {
  ATTUNE_RETURN_IF_ERROR(common::CheckLease(c.output_dir, owner));
  model.set_train_max_length(c.max_length);  // attune predict truncates as training did
  ATTUNE_RETURN_IF_ERROR(model::SaveHfModel(model, model_dir, c.merge_lora, c.ShownText(model_dir)));
  ATTUNE_RETURN_IF_ERROR(tok.Save(model_dir, std::min<int64_t>(512, model.max_positions())));
  for (const std::string* path : {&c.train_path, &c.validation_path}) {
    if (path->empty()) continue;
    if (auto sha = common::Sha256OfFile(*path); sha.ok()) report.sha256[c.ShownPath(*path)] = *sha;
  }
  if (auto sha = common::Sha256OfFile(model_dir + "/model.safetensors"); sha.ok()) {
    report.sha256["the exported model.safetensors"] = *sha;
  }
  ATTUNE_RETURN_IF_ERROR(common::CheckLease(c.output_dir, owner));
  ATTUNE_RETURN_IF_ERROR(common::WriteFileAtomic(c.output_dir + "/eval_report.json", eval::ReportJson(report)));
  ATTUNE_RETURN_IF_ERROR(common::WriteFileAtomic(c.output_dir + "/eval_report.html", eval::ReportHtml(report)));
  return absl::OkStatus();
}

}  // namespace attune::worker::train
