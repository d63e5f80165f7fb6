// attune: the command-line client.
//
//   attune predict --model DIR --input FILE.{jsonl,csv} [--output FILE]

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "worker/train/predict.h"
#include "worker/train/trainer.h"

ABSL_FLAG(std::string, model, "", "exported model directory (config.json, model.safetensors, vocab.txt)");
ABSL_FLAG(std::string, input, "", "records to classify: CSV or JSONL with a text column");
ABSL_FLAG(std::string, output, "", "where to write JSON lines (default: standard output)");
ABSL_FLAG(std::string, text_column, "text", "column holding the text");
ABSL_FLAG(std::string, text_pair_column, "text_pair", "column holding the second text of a pair, if present");
ABSL_FLAG(int, batch_size, 32, "examples per forward pass");
ABSL_FLAG(int, max_length, 0, "truncate to this many tokens (0: the model's limit, at most 512)");
ABSL_FLAG(int, threads, 1, "intra-op and BLAS threads");

namespace {

constexpr char kUsage[] =
    "usage: attune predict --model DIR --input FILE.{jsonl,csv} [--output FILE]";

int Predict() {
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_input).empty()) {
    std::cerr << "attune predict: --model and --input are required\n" << kUsage << "\n";
    return 2;
  }
  attune::worker::train::PredictOptions o;
  o.text_column = absl::GetFlag(FLAGS_text_column);
  o.text_pair_column = absl::GetFlag(FLAGS_text_pair_column);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.max_length = absl::GetFlag(FLAGS_max_length);
  o.threads = absl::GetFlag(FLAGS_threads);
  absl::Status s;
  if (absl::GetFlag(FLAGS_output).empty()) {
    s = attune::worker::train::Predict(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_input), o, std::cout);
  } else {
    std::ofstream out(absl::GetFlag(FLAGS_output));
    if (!out) {
      std::cerr << "attune predict: cannot write " << absl::GetFlag(FLAGS_output) << "\n";
      return 1;
    }
    s = attune::worker::train::Predict(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_input), o, out);
  }
  if (!s.ok()) {
    std::cerr << "attune predict: " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  const std::string allocator = attune::worker::train::ConfigureAllocatorForTraining();
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  std::string command = argv[1];
  std::vector<char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) rest.push_back(argv[i]);
  absl::ParseCommandLine(static_cast<int>(rest.size()), rest.data());
  if (command == "predict") {
    VLOG(1) << allocator;
    return Predict();
  }
  std::cerr << "attune: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
