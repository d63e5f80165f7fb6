#include "worker/train/exporter.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "worker/model/hf_checkpoint.h"

namespace attune::worker::train {

namespace {

// A decoder export's generation_config.json: the base model's (so that its
// end-of-turn ids still stop generation), else the tokenizer's BOS and EOS.
absl::Status WriteGenerationConfig(const text::Tokenizer& tok, const common::JobConfig& c, const std::string& dir) {
  nlohmann::json j = nlohmann::json::object();
  if (!c.model_path.empty()) {
    auto text = common::ReadFile(c.model_path + "/generation_config.json", 1 << 20);
    if (text.ok()) {
      j = nlohmann::json::parse(*text, nullptr, false);
      if (!j.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(c.ShownPath(c.model_path), "/generation_config.json: not a JSON object"));
      }
    } else if (!absl::IsNotFound(text.status())) {
      return text.status();
    }
  }
  if (!j.contains("bos_token_id") && tok.special().cls >= 0) j["bos_token_id"] = tok.special().cls;
  if (!j.contains("eos_token_id") && tok.special().sep >= 0) j["eos_token_id"] = tok.special().sep;
  return common::WriteFileAtomic(dir + "/generation_config.json", j.dump(2) + "\n");
}

}  // namespace

absl::Status ExportRun(model::Model& model, const text::Tokenizer& tok, const common::JobConfig& c,
                       const common::Owner& owner, const std::string& model_dir, eval::ReportInput report) {
  ATTUNE_RETURN_IF_ERROR(common::CheckLease(c.output_dir, owner));
  model.set_train_max_length(c.max_length);  // attune predict truncates as training did
  ATTUNE_RETURN_IF_ERROR(model::SaveHfModel(model, model_dir, c.merge_lora, c.ShownText(model_dir)));
  ATTUNE_RETURN_IF_ERROR(tok.Save(model_dir, std::min<int64_t>(512, model.max_positions())));
  if (model.head() == model::Head::kCausalLm) ATTUNE_RETURN_IF_ERROR(WriteGenerationConfig(tok, c, model_dir));
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
