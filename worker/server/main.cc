// attune-worker: runs trainer ranks.
//
//   attune-worker train --spec FILE [--no_resume]
//
// Runs one training in this process and writes the output directory that
// the spec names: model/, eval_report.{json,html} and data_report.json.

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/job_spec.h"
#include "worker/eval/report.h"
#include "worker/train/trainer.h"

ABSL_FLAG(std::string, spec, "", "job spec file (YAML or JSON)");
ABSL_FLAG(bool, resume, true, "continue from the newest committed checkpoint in the output directory");
ABSL_FLAG(std::string, output_dir, "", "override the spec's output_dir");
ABSL_FLAG(int, threads, 0, "override hyperparameters.threads (intra-op and BLAS threads)");
ABSL_FLAG(int64_t, abort_after_step, 0, "testing: exit with an error right after this step");

namespace {

constexpr char kUsage[] =
    "usage: attune-worker train --spec FILE [--output_dir DIR] [--threads N] [--noresume]";

int Train() {
  using attune::common::LoadJobConfig;
  auto config = LoadJobConfig(absl::GetFlag(FLAGS_spec));
  if (!config.ok()) {
    std::cerr << "attune-worker: " << config.status() << "\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_output_dir).empty()) config->output_dir = absl::GetFlag(FLAGS_output_dir);
  if (absl::GetFlag(FLAGS_threads) > 0) config->threads = absl::GetFlag(FLAGS_threads);
  if (config->world_size != 1) {
    LOG(WARNING) << "workers.count is " << config->world_size
                 << "; `attune-worker train` runs a single process, so this run uses one rank";
  }
  attune::worker::train::TrainerOptions options;
  options.resume = absl::GetFlag(FLAGS_resume);
  options.abort_after_step = absl::GetFlag(FLAGS_abort_after_step);
  auto result = attune::worker::train::RunTraining(*config, options, nullptr);
  if (!result.ok()) {
    LOG(ERROR) << "job=" << config->name << " failed: " << result.status();
    std::cerr << "attune-worker: " << result.status() << "\n";
    return absl::IsInvalidArgument(result.status()) || absl::IsNotFound(result.status()) ? 65 : 1;
  }
  std::cout << "\n" << attune::worker::eval::ReportTable(result->final_metrics, result->label_names);
  std::cout << absl::StrCat("\nmajority-class baseline accuracy: ", result->baseline_accuracy,
                            "\nstopped: ", result->stop_reason, " after ", result->steps, " steps",
                            "\nmodel:   ", result->model_dir,
                            "\nreports: ", config->output_dir, "/eval_report.json, ", config->output_dir,
                            "/eval_report.html, ", config->output_dir, "/data_report.json\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  const std::string allocator = attune::worker::train::ConfigureAllocatorForTraining();
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cerr << kUsage << "\n";
    return argc < 2 ? 2 : 0;
  }
  std::string command = argv[1];
  std::vector<char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) rest.push_back(argv[i]);
  absl::ParseCommandLine(static_cast<int>(rest.size()), rest.data());
  if (command == "train") {
    LOG(INFO) << allocator;
    if (absl::GetFlag(FLAGS_spec).empty()) {
      std::cerr << "attune-worker train: --spec is required\n" << kUsage << "\n";
      return 2;
    }
    return Train();
  }
  std::cerr << "attune-worker: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
