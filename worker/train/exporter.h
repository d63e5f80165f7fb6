#pragma once

// The end of a run, on rank 0: the exported model directory (Hugging Face
// layout and the tokenizer, with the training max_length that attune predict
// truncates to), then eval_report.json and eval_report.html, which record the
// SHA-256 of the data files and of the exported weights. Nothing is written
// once a newer attempt of the job holds the output directory's lease.

#include <string>

#include "absl/status/status.h"
#include "common/checkpoint.h"
#include "common/job_config.h"
#include "worker/eval/report.h"
#include "worker/model/model.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::train {

// Writes `model_dir` (merged or unmerged LoRA as the spec says) and the two
// reports in `c.output_dir`. `report` is completed with the files' SHA-256.
absl::Status ExportRun(model::Model& model, const text::Tokenizer& tok, const common::JobConfig& c,
                       const common::Owner& owner, const std::string& model_dir, eval::ReportInput report);

}  // namespace attune::worker::train
