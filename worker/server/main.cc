// attune-worker: runs trainer ranks.
//
//   attune-worker train --spec FILE                       one process
//   attune-worker train --spec FILE --nproc N             N local ranks (a launcher, like torchrun)
//   attune-worker train --spec FILE --rank R --world_size N --rendezvous HOST:PORT [--backend gloo|nccl]
//   attune-worker agent --coordinator HOST:PORT [--worker-id ID] [--cpus N]
//
// Writes the output directory that the spec names: model/,
// eval_report.{json,html} and data_report.json (rank 0).

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/checkpoint.h"
#include "common/task_catalog.h"
#include "common/trainer_exit.h"
#include "common/files.h"
#include "common/confine.h"
#include "common/flags_compat.h"
#include "common/secret.h"
#include "common/spec_path.h"
#include "common/rpc/tls.h"
#include "common/prometheus/prometheus_metrics.h"
#include "worker/agent/agent.h"
#include "worker/agent/rpc/grpc_coordinator_client.h"
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <atomic>
#include <fstream>
#include "common/rpc/job_spec.h"
#include "worker/comm/communicator.h"
#include "worker/eval/report.h"
#include "worker/train/trainer.h"

ABSL_FLAG(std::string, spec, "", "job spec file (YAML or JSON)");
ABSL_FLAG(bool, resume, true, "continue from the newest committed checkpoint in the output directory");
ABSL_FLAG(std::string, output_dir, "", "override the spec's output_dir");
ABSL_FLAG(int, threads, 0, "override hyperparameters.threads (intra-op and BLAS threads)");
ABSL_FLAG(int64_t, abort_after_step, 0, "testing: exit with an error right after this step");
ABSL_FLAG(std::string, metrics_listen, "", "agent: serve Prometheus metrics at http://HOST:PORT/metrics");
ABSL_FLAG(int, events_fd, -1, "write progress, evaluation and checkpoint events as JSON lines to this fd");
ABSL_FLAG(std::string, coordinator, "", "agent: the coordinator's HOST:PORT");
ABSL_FLAG(std::string, worker_id, "", "agent: this worker's id (default: host name and pid)");
ABSL_FLAG(int, cpus, 0, "agent: CPU cores to offer (default: all)");
ABSL_FLAG(int, gpus, 0, "agent: GPUs to offer");
ABSL_FLAG(std::string, host, "127.0.0.1", "agent: the address other ranks reach this worker at");
ABSL_FLAG(int, rendezvous_port, 0, "agent: port for rank 0's store when this worker hosts it (default: a free one)");
ABSL_FLAG(std::string, token_file, "", "agent: file holding the worker bearer token");
ABSL_FLAG(std::string, tls_ca, "", "agent: PEM CA of the coordinator's certificate: connect with TLS");
ABSL_FLAG(std::string, tls_cert, "", "agent: PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "agent: PEM private key for --tls-cert");
ABSL_FLAG(int, stop_grace_s, 10,
          "agent: after SIGTERM, how long a trainer may take to finish its step and checkpoint before SIGKILL");
ABSL_FLAG(std::string, work_dir, "", "agent: where assignment specs are written (default: a temp dir)");
ABSL_FLAG(std::string, data_root, "",
          "open every input (data files, vocab, model files) beneath this directory, when it is opened: a link out "
          "of it, a FIFO or a device is refused; the agent passes it to its trainers");
ABSL_FLAG(bool, unconfined, false,
          "agent: run jobs without a --data-root: their files are opened wherever their paths lead (links followed), "
          "as the agent's user may; FIFOs and devices are still refused. An agent needs one of the two.");
ABSL_FLAG(std::string, embeddings_dir, "",
          "where model.init_embeddings tables are installed (default: $ATTUNE_EMBEDDINGS_DIR, else "
          "/usr/local/share/attune/embeddings); the agent passes it to its trainers");
ABSL_FLAG(int, coordinator_lease_s, 7,
          "agent: stop the trainers after this long without an answered heartbeat (0: never); keep it below the "
          "coordinator's --heartbeat-timeout-s (10)");
ABSL_FLAG(int, progress_timeout_s, 300,
          "agent: kill a stepping trainer that sends no step and no heartbeat for max(this, 20 x its median step time)");
ABSL_FLAG(std::string, device, "",
          "cpu, cuda or cuda:N (default: a GPU when the spec's workers.gpus_per_rank > 0, else the CPU)");
ABSL_FLAG(bool, eval_only, false, "evaluate the spec's model on its validation data without training");
ABSL_FLAG(int, rank, 0, "this process's rank");
ABSL_FLAG(std::string, job_id, "", "agent-launched trainers: the job this attempt belongs to (for the output lease)");
ABSL_FLAG(int64_t, generation, 0, "agent-launched trainers: the attempt's generation (for the output lease)");
ABSL_FLAG(int, world_size, 1, "number of ranks");
ABSL_FLAG(std::string, rendezvous, "", "HOST:PORT of rank 0's store (required with --world_size > 1)");
ABSL_FLAG(std::string, backend, "", "gloo or nccl (default: the spec's workers.backend)");
ABSL_FLAG(int, nproc, 0, "launch this many local ranks of this command and supervise them");
ABSL_FLAG(int, collective_timeout_s, 60, "rendezvous and collective timeout, seconds");
ABSL_FLAG(int64_t, bucket_cap_mb, 25, "gradient bucket size cap, MB");
ABSL_FLAG(std::string, gradient_compression, "none", "none, fp16 or bf16");
ABSL_FLAG(std::string, overlap, "auto",
          "on: launch bucket allreduces from autograd hooks during backward; off: after backward; "
          "auto: off for gloo (measured faster on CPUs, see docs/benchmarks.md), on for nccl");

namespace {

// Writes trainer events as JSON lines for the agent. Progress goes out at
// most twice a second; each progress event carries every step's figures since
// the previous one (durations for histograms, sums for counters), so that the
// agent's counters and histograms count every step.
class EventWriter : public attune::worker::train::TrainerObserver {
 public:
  // NOTE [a hung agent]: the events pipe is made non-blocking. A write waits
  // at most 2 s for an agent that stopped reading (a hung or stopped node);
  // then, until the pipe drains, lines are dropped (whole lines, never part
  // of one). So neither the training loop nor the lease watchdog, which sends
  // the heartbeat from its own thread, ever blocks on the pipe: a fenced
  // trainer still sees the newer lease and stops itself.
  EventWriter(int fd, std::string precision) : fd_(fd), precision_(std::move(precision)) {
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  ~EventWriter() override { Flush(); }

  void OnStep(const attune::worker::train::StepEvent& e) override {
    last_event_ = e;
    ++steps_;
    samples_ += e.samples;
    tokens_ += e.tokens;
    step_seconds_.push_back(e.step_seconds);
    phases_[0] += e.data_seconds;
    phases_[1] += e.forward_seconds;
    phases_[2] += e.backward_seconds;
    phases_[3] += e.allreduce_seconds;
    phases_[4] += e.optimizer_seconds;
    if (e.last_collective_unix_seconds > 0) {
      reduce_seconds_.push_back(e.reduce_seconds);
      reduce_exposed_ += e.reduce_exposed_seconds;
      reduce_bytes_ += e.reduce_bytes;
      reduce_total_ += e.reduce_seconds;
      reduce_total_exposed_ += e.reduce_exposed_seconds;
    }
    auto now = std::chrono::steady_clock::now();
    if (e.step != e.total_steps && now - last_ < std::chrono::milliseconds(500) && step_seconds_.size() < 2000) return;
    last_ = now;
    Flush();
  }
  void OnEval(int64_t step, const attune::worker::eval::Metrics& m) override {
    Write({{"type", "eval"}, {"step", step}, {"metrics", m.Named()}});
  }
  void OnBaseline(const attune::worker::eval::BaselineFigures& b) override {
    Write({{"type", "baseline"}, {"method", b.method}, {"metrics", b.metrics}});
  }
  void OnCheckpoint(int64_t step, const std::string& dir, double seconds) override {
    Write({{"type", "checkpoint"}, {"step", step}, {"dir", dir}, {"seconds", seconds}, {"unix_seconds", UnixNow()}});
  }

  void OnNonFinite(int64_t step) override { Write({{"type", "nonfinite"}, {"step", step}}); }
  // The trainer's heartbeat to its agent (NOTE [progress watchdog]): sent by a
  // thread of its own, so it stops only when the whole process does.
  void Alive() {
    std::unique_lock<std::mutex> l(write_mu_, std::try_to_lock);
    if (l.owns_lock()) WriteLocked("{\"type\":\"alive\"}\n", std::chrono::milliseconds(0));
  }
  // Why the training failed, for the job's message (the agent relays it).
  void OnFailure(const absl::Status& s) {
    Write({{"type", "error"}, {"code", absl::StatusCodeToString(s.code())}, {"message", std::string(s.message())}});
  }

  // Sends the steps not yet reported.
  void Flush() {
    if (steps_ == 0) return;
    const auto& e = last_event_;
    nlohmann::json j = {{"type", "progress"}, {"step", e.step}, {"total", e.total_steps}, {"epoch", e.epoch},
                        {"loss", e.loss}, {"lr", e.learning_rate}, {"sps", e.samples_per_second},
                        {"tps", e.tokens_per_second}, {"steps", steps_}, {"samples", samples_}, {"tokens", tokens_},
                        {"precision", precision_},
                        {"step_seconds", step_seconds_},
                        {"phases", {{"data", phases_[0]}, {"forward", phases_[1]}, {"backward", phases_[2]},
                                    {"allreduce", phases_[3]}, {"optimizer", phases_[4]}}}};
    if (!reduce_seconds_.empty()) {
      j["reduce_seconds"] = reduce_seconds_;
      j["reduce_exposed"] = reduce_exposed_;
      j["reduce_bytes"] = reduce_bytes_;
      j["reduce_total_seconds"] = reduce_total_;
      j["reduce_total_exposed_seconds"] = reduce_total_exposed_;
      j["collective_ts"] = e.last_collective_unix_seconds;
    }
    Write(j);
    steps_ = samples_ = tokens_ = reduce_bytes_ = 0;
    step_seconds_.clear();
    reduce_seconds_.clear();
    reduce_exposed_ = 0;
    for (double& p : phases_) p = 0;
  }

 private:
  static double UnixNow() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
  void Write(const nlohmann::json& j) {
    std::lock_guard<std::mutex> l(write_mu_);  // whole lines: the alive thread writes too
    WriteLocked(j.dump() + "\n", stalled_ ? std::chrono::milliseconds(0) : std::chrono::milliseconds(2000));
  }
  // Queues `line` behind what is pending (up to 4 MiB; beyond, it is dropped)
  // and writes what the pipe takes, waiting at most `wait` for room.
  void WriteLocked(const std::string& line, std::chrono::milliseconds wait) {
    if (pending_.size() + line.size() <= (4u << 20)) pending_ += line;
    const auto until = std::chrono::steady_clock::now() + wait;
    while (!pending_.empty()) {
      const ssize_t n = ::write(fd_, pending_.data(), pending_.size());
      if (n > 0) {
        pending_.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
        continue;
      }
      pending_.clear();  // the agent is gone (EPIPE): nothing will read it
      break;
    }
    stalled_ = !pending_.empty();
  }
  std::mutex write_mu_;
  std::string pending_;  // bytes not yet taken by the pipe; always whole lines but for a written prefix
  bool stalled_ = false;
  int fd_;
  std::string precision_;
  std::chrono::steady_clock::time_point last_{};
  attune::worker::train::StepEvent last_event_;
  int64_t steps_ = 0, samples_ = 0, tokens_ = 0, reduce_bytes_ = 0;
  std::vector<double> step_seconds_, reduce_seconds_;
  double phases_[5] = {0, 0, 0, 0, 0};
  double reduce_exposed_ = 0, reduce_total_ = 0, reduce_total_exposed_ = 0;
};

int FreePort();
std::atomic<bool> g_stop{false};
std::vector<std::string> g_sets;  // --set PATH=VALUE overrides of the spec
void OnSignal(int) { g_stop.store(true); }

int RunAgent(const char* self) {
  if (absl::GetFlag(FLAGS_coordinator).empty()) {
    std::cerr << "attune-worker agent: --coordinator is required\n";
    return 2;
  }
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  attune::worker::agent::AgentOptions o;
  o.info.worker_id = absl::GetFlag(FLAGS_worker_id).empty() ? absl::StrCat(host, "-", ::getpid())
                                                            : absl::GetFlag(FLAGS_worker_id);
  o.info.host = absl::GetFlag(FLAGS_host);
  o.info.cpus = absl::GetFlag(FLAGS_cpus) > 0 ? absl::GetFlag(FLAGS_cpus)
                                              : static_cast<int>(std::thread::hardware_concurrency());
  o.info.gpus = absl::GetFlag(FLAGS_gpus);
  // NOTE [GPU allocation] (agent.h): the devices offered, from this agent's
  // own CUDA_VISIBLE_DEVICES when set.
  std::vector<std::string> visible;
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v != nullptr) {
    visible = absl::StrSplit(v, ',', absl::SkipEmpty());
  }
  if (!visible.empty() && static_cast<int>(visible.size()) < o.info.gpus) {
    std::cerr << "attune-worker agent: --gpus " << o.info.gpus << " but CUDA_VISIBLE_DEVICES names only "
              << visible.size() << "\n";
    return 2;
  }
  for (int i = 0; i < o.info.gpus; ++i) {
    o.gpu_ids.push_back(visible.empty() ? std::to_string(i) : visible[static_cast<size_t>(i)]);
  }
  o.info.rendezvous_port = absl::GetFlag(FLAGS_rendezvous_port) > 0 ? absl::GetFlag(FLAGS_rendezvous_port) : FreePort();
  char exe[4096] = {0};
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  o.stop_grace = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_stop_grace_s)));
  o.progress_timeout = absl::Seconds(std::max(1, absl::GetFlag(FLAGS_progress_timeout_s)));
  o.coordinator_lease = absl::Seconds(std::max(0, absl::GetFlag(FLAGS_coordinator_lease_s)));
  o.trainer_binary = n > 0 ? std::string(exe, static_cast<size_t>(n)) : self;
  o.work_dir = absl::GetFlag(FLAGS_work_dir).empty() ? absl::StrCat("/tmp/attune-agent-", o.info.worker_id)
                                                     : absl::GetFlag(FLAGS_work_dir);
  o.data_root = absl::GetFlag(FLAGS_data_root);
  // NOTE [confined by default]: an agent runs other people's jobs, so it opens
  // their files beneath a data root unless its operator says otherwise.
  if (o.data_root.empty() == !absl::GetFlag(FLAGS_unconfined)) {
    std::cerr << "attune-worker agent: "
              << (o.data_root.empty() ? "give --data-root DIR (jobs' files must lie beneath it; a link out of it, a "
                                        "FIFO or a device is refused) or, to confine nothing, --unconfined\n"
                                      : "--data-root and --unconfined contradict each other; give one\n");
    return 2;
  }
  if (o.data_root.empty()) {
    LOG(WARNING) << "agent " << o.info.worker_id << " is unconfined (--unconfined): jobs may read any file this user "
                 << "can, through any path";
  }
  o.embeddings_dir = absl::GetFlag(FLAGS_embeddings_dir);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  // NOTE [agent lease]: a restarted coordinator must be reached well within
  // the lease. gRPC's own reconnect backoff grows to minutes (and was seen
  // at 6 s, past a 7 s lease); keep the channel's retries at most 1 s apart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto creds = attune::common::MakeChannelCredentials(
      {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca)});
  if (!creds.ok()) {
    std::cerr << "attune-worker agent: " << creds.status() << "\n";
    return 2;
  }
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_coordinator), *creds, args);
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    auto t = attune::common::ReadTokenFile(absl::GetFlag(FLAGS_token_file));
    if (!t.ok()) {
      std::cerr << "attune-worker agent: " << t.status() << "\n";
      return 2;
    }
    token = *t;
  }
  attune::worker::agent::GrpcCoordinatorClient client(channel, absl::Seconds(5), token);
  auto metrics = attune::common::PrometheusMetrics::ServeIfSet(absl::GetFlag(FLAGS_metrics_listen));
  if (!metrics.ok()) {
    std::cerr << "attune-worker agent: " << metrics.status() << "\n";
    return 1;
  }
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    LOG(INFO) << "metrics at http://" << absl::GetFlag(FLAGS_metrics_listen) << "/metrics";
  }
  (*metrics)->SetGauge("attune_build_info", "always 1; labels give the build", {{"version", ATTUNE_VERSION},
                    {"component", "worker"}}, 1);
  attune::worker::agent::Agent agent(client, o, **metrics);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  LOG(INFO) << "agent " << o.info.worker_id << ": " << o.info.cpus << " cpus, coordinator "
            << absl::GetFlag(FLAGS_coordinator) << ", rendezvous port " << o.info.rendezvous_port;
  agent.Run(g_stop);
  return 0;
}

constexpr char kUsage[] =
    "usage: attune-worker train --spec FILE [--set PATH=VALUE ...] [--output_dir DIR] [--threads N] [--noresume]\n"
    "       [--nproc N | --rank R --world_size N --rendezvous HOST:PORT] [--backend gloo|nccl]\n"
    "usage: attune-worker agent --coordinator HOST:PORT [--worker-id ID] [--cpus N] [--metrics-listen HOST:PORT]";

// A free TCP port on loopback for a local rendezvous.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// The local launcher: fork+exec N copies of this command with ranks 0..N-1.
// 1. pick a free loopback port for rank 0's store;
// 2. start every rank; 3. wait; when one fails, SIGTERM the others, then
//    SIGKILL after the collective timeout; 4. exit with the first failure.
int Launch(int argc, char** argv, int nproc) {
  const int port = FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> args;
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--nproc", 0) == 0) {
        if (a == "--nproc") ++i;
        continue;
      }
      args.push_back(a);
    }
    args.push_back(absl::StrCat("--rank=", r));
    args.push_back(absl::StrCat("--world_size=", nproc));
    args.push_back(absl::StrCat("--rendezvous=127.0.0.1:", port));
    pid_t pid = ::fork();
    if (pid == 0) {
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      ::execv("/proc/self/exe", cargs.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  int first_failure = 0;
  size_t alive = pids.size();
  auto kill_deadline = std::chrono::steady_clock::time_point::max();
  // SIGTERM or Ctrl-C to the launcher reaches every rank: they finish the
  // step, checkpoint and exit 143.
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  bool forwarded = false;
  while (alive > 0) {
    if (g_stop.load() && !forwarded) {
      forwarded = true;
      LOG(INFO) << "launcher: stopping every rank after its current step";
      for (pid_t p : pids) ::kill(p, SIGTERM);
    }
    int status = 0;
    pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      --alive;
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && first_failure == 0) {
        first_failure = code;
        LOG(ERROR) << "launcher: a rank (pid " << done << ") exited with " << code << "; stopping the others";
        for (pid_t p : pids) ::kill(p, SIGTERM);
        kill_deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(absl::GetFlag(FLAGS_collective_timeout_s) + 5);
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > kill_deadline) {
      for (pid_t p : pids) ::kill(p, SIGKILL);
      kill_deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return first_failure;
}

// Stages every input of `c` beneath `root` and points `c` at the staged
// paths; pins output_dir (created beneath the root) and
// checkpoint.resume_from the same way. An empty root confines nothing, but
// FIFOs and devices are still refused and the paths still pinned.
absl::Status StageJobFiles(const std::string& root, attune::common::StagedInputs& staged,
                           attune::common::JobConfig* c) {
  for (auto [field, path] : {std::pair<const char*, std::string*>{"data.train", &c->train_path},
                             {"data.validation", &c->validation_path},
                             {"model.vocab", &c->vocab_path},
                             {"model.tokenizer", &c->tokenizer_path},
                             {"evaluation.multiple_choice", &c->eval_multiple_choice_path},
                             {"model.path", &c->model_path}}) {
    if (path->empty()) continue;
    auto at = staged.Stage(root, *path, field);
    if (!at.ok()) return at.status();
    c->staged_inputs[*at] = *path;
    *path = *at;
  }
  const bool confined = !root.empty();
  for (auto [field, path, create] : {std::tuple<const char*, std::string*, bool>{"output_dir", &c->output_dir, true},
                                     {"checkpoint.resume_from", &c->checkpoint_resume_from, false}}) {
    if (path->empty()) continue;
    auto at = staged.PinDirectory(root, *path, field, create, /*no_links_inside=*/confined);
    if (!at.ok()) return at.status();
    c->staged_inputs[*at] = *path;
    *path = *at;
  }
  return absl::OkStatus();
}

int Train() {
  using attune::common::LoadJobConfig;
  auto config = LoadJobConfig(absl::GetFlag(FLAGS_spec), g_sets);
  if (!config.ok()) {
    std::cerr << "attune-worker: " << config.status() << "\n";
    return 2;
  }
  if (!absl::GetFlag(FLAGS_output_dir).empty()) config->output_dir = absl::GetFlag(FLAGS_output_dir);
  if (absl::GetFlag(FLAGS_threads) > 0) config->threads = absl::GetFlag(FLAGS_threads);
  // NOTE [open-time confinement]: every input is opened now (beneath the data
  // root, when there is one) and read through those descriptors
  // (StagedInputs), and the output directory is written through its own; a
  // check at submit alone left a window for a link swapped in later.
  std::unique_ptr<attune::common::StagedInputs> staged;
  {
    char tmpl[] = "/tmp/attune-inputs-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::cerr << "attune-worker: cannot create a staging directory in /tmp\n";
      return attune::common::kExitTransient;
    }
    staged = std::make_unique<attune::common::StagedInputs>(tmpl);
    if (auto s = StageJobFiles(absl::GetFlag(FLAGS_data_root), *staged, &*config); !s.ok()) {
      std::cerr << "attune-worker: " << s << "\n";
      if (absl::GetFlag(FLAGS_events_fd) >= 0) EventWriter(absl::GetFlag(FLAGS_events_fd), config->precision).OnFailure(s);
      return attune::common::ExitCodeForStatus(s);
    }
  }
  const int world = absl::GetFlag(FLAGS_world_size), rank = absl::GetFlag(FLAGS_rank);
  // --device cuda:N pins NCCL to that device too (else rank modulo the visible devices, as the trainer's "cuda").
  int device_index = -1;
  if (const std::string d = absl::GetFlag(FLAGS_device); d.rfind("cuda:", 0) == 0 && !absl::SimpleAtoi(d.substr(5), &device_index)) {
    device_index = -1;
  }
  std::unique_ptr<attune::worker::comm::Communicator> communicator;
  attune::worker::train::TrainerOptions options;
  if (world > 1) {
    std::vector<std::string> hp = absl::StrSplit(absl::GetFlag(FLAGS_rendezvous), ':');
    int port = 0;
    if (hp.size() != 2 || !absl::SimpleAtoi(hp[1], &port)) {
      std::cerr << "attune-worker: --rendezvous must be HOST:PORT with --world_size > 1\n";
      return 2;
    }
    attune::worker::comm::CommunicatorOptions co;
    co.rank = rank;
    co.world_size = world;
    co.master_host = hp[0];
    co.master_port = port;
    co.timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout_s));
    co.job = config->name;
    co.device_index = device_index;
    // From the agent (NOTE [rendezvous secret]; checked at start); ranks started by hand may set it too.
    if (const char* secret = std::getenv("ATTUNE_RENDEZVOUS_SECRET"); secret != nullptr) co.rendezvous_secret = secret;
    std::string backend = absl::GetFlag(FLAGS_backend).empty() ? config->backend : absl::GetFlag(FLAGS_backend);
    const std::string compression = absl::GetFlag(FLAGS_gradient_compression);
    if (compression != "none" && compression != "fp16" && compression != "bf16") {
      std::cerr << "attune-worker: --gradient_compression must be none, fp16 or bf16\n";
      return 2;
    }
    if (compression == "bf16" && backend == "gloo") {
      std::cerr << "attune-worker: Gloo cannot reduce bfloat16; use --gradient_compression=fp16 with gloo\n";
      return 2;
    }
    auto c = attune::worker::comm::CreateCommunicator(backend, co);
    if (!c.ok()) {
      std::cerr << "attune-worker: " << c.status() << "\n";
      return attune::common::ExitCodeForStatus(c.status());
    }
    communicator = std::move(*c);
    LOG(INFO) << "rank " << rank << " joined a " << backend << " group of " << world << " at "
              << absl::GetFlag(FLAGS_rendezvous)
              << (co.rendezvous_secret.empty() ? "; its store admits any peer (no ATTUNE_RENDEZVOUS_SECRET)"
                                               : "; its store admits only this generation's ranks (rendezvous secret)");
    options.communicator = communicator.get();
    options.bucket_cap_bytes = absl::GetFlag(FLAGS_bucket_cap_mb) * 1000 * 1000;
    options.gradient_compression = absl::GetFlag(FLAGS_gradient_compression);
    const std::string overlap = absl::GetFlag(FLAGS_overlap);
    options.overlap = overlap == "on" || (overlap == "auto" && backend == "nccl");
  } else if (absl::GetFlag(FLAGS_backend) == "nccl") {
    attune::worker::comm::CommunicatorOptions co;
    co.job = config->name;
    co.device_index = device_index;
    if (auto s = attune::worker::comm::CheckNcclBackend(co); !s.ok()) {
      std::cerr << "attune-worker: " << s << "\n";
      return 65;
    }
  }
  options.resume = absl::GetFlag(FLAGS_resume);
  if (!absl::GetFlag(FLAGS_embeddings_dir).empty()) {
    options.embeddings_dir = absl::GetFlag(FLAGS_embeddings_dir);
  } else if (const char* env = std::getenv("ATTUNE_EMBEDDINGS_DIR"); env != nullptr && *env != '\0') {
    options.embeddings_dir = env;
  }
  if (auto text = attune::common::ReadFile(absl::GetFlag(FLAGS_spec), 1 << 20); text.ok()) options.spec_text = *text;
  if (!absl::GetFlag(FLAGS_job_id).empty()) options.owner = {absl::GetFlag(FLAGS_job_id), absl::GetFlag(FLAGS_generation)};
  options.eval_only = absl::GetFlag(FLAGS_eval_only);
  options.device = absl::GetFlag(FLAGS_device);
  options.abort_after_step = absl::GetFlag(FLAGS_abort_after_step);
  std::unique_ptr<EventWriter> events;
  if (absl::GetFlag(FLAGS_events_fd) >= 0) {
    events = std::make_unique<EventWriter>(absl::GetFlag(FLAGS_events_fd), config->precision);
  }
  // SIGTERM (Kubernetes, the agent stopping a task): finish the step, checkpoint, exit 143.
  options.stop_requested = &g_stop;
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  // NOTE [generation lease]: besides the trainer's own checks, a watchdog
  // ends the process as soon as a newer attempt takes the output directory,
  // even while training is blocked (on a log pipe its hung agent no longer
  // reads, say). It writes nothing: the commit protocol leaves no partial
  // checkpoint behind a process that ends at any point.
  std::atomic<bool> finished{false};
  std::thread lease_watch;
  // The same thread sends the trainer's heartbeat to its agent every second.
  if (!options.owner.empty() || events) {
    lease_watch = std::thread([&finished, dir = config->output_dir, owner = options.owner, w = events.get()] {
      while (!finished.load()) {
        for (int i = 0; i < 10 && !finished.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (finished.load()) break;
        if (!owner.empty() && !attune::common::CheckLease(dir, owner).ok()) ::_exit(attune::common::kExitFenced);
        if (w) w->Alive();
      }
    });
  }
  auto result = attune::worker::train::RunTraining(*config, options, events.get());
  finished.store(true);
  if (lease_watch.joinable()) lease_watch.join();
  if (events) events->Flush();
  if (!result.ok()) {
    absl::Status failed = result.status();
    {  // name the user's paths, not the staged ones
      absl::Status named(failed.code(), staged->Unstage(std::string(failed.message())));
      failed.ForEachPayload([&named](absl::string_view url, const absl::Cord& payload) { named.SetPayload(url, payload); });
      failed = named;
    }
    LOG(ERROR) << "job=" << config->name << " failed: " << failed;
    std::cerr << "attune-worker: " << failed << "\n";
    if (events && !absl::IsCancelled(failed)) events->OnFailure(failed);
    return attune::common::ExitCodeForStatus(failed);
  }
  if (rank != 0) return 0;
  if (world > 1) {
    std::cout << absl::StrFormat("\nranks: %d; train samples/s (global): %.1f; allreduce: %d bytes/step, "
                                 "%.2f ms/step, %.0f%% hidden behind backward\n",
                                 world, result->train_samples_per_second, result->allreduce_bytes_per_step,
                                 1000 * result->allreduce_seconds_per_step, 100 * result->allreduce_hidden_fraction);
  } else {
    std::cout << absl::StrFormat("\ntrain samples/s: %.1f\n", result->train_samples_per_second);
  }
  std::cout << "\n" << attune::worker::eval::ReportTable(result->final_metrics, result->label_names);
  const auto named = result->final_metrics.Named();
  std::cout << "\n";
  for (const auto* b : {result->reference_baseline ? &*result->reference_baseline : nullptr, &result->trivial_baseline}) {
    if (b) std::cout << attune::common::BaselineLine(config->task, b->method, named, b->metrics) << "\n";
  }
  const std::string out = staged->Unstage(config->output_dir);
  std::cout << absl::StrCat("stopped: ", result->stop_reason, " after ", result->steps, " steps",
                            "\nmodel:   ", staged->Unstage(result->model_dir), "\nreports: ", out,
                            "/eval_report.json, ", out, "/eval_report.html, ", out, "/data_report.json\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // NOTE [SIGPIPE]: Gloo writes to its peers' sockets with writev(), which
  // raises SIGPIPE when a peer has died; by default that killed a surviving
  // rank on the spot (exit 141, nothing logged) instead of failing its
  // collective with the peer's name. Ignored, the write fails with EPIPE and
  // the collective reports it. Trainers the agent starts inherit this.
  signal(SIGPIPE, SIG_IGN);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  if (attune::common::WantsHelp(argc, argv)) {
    std::cout << kUsage << "\n"
              << "examples:\n"
                 "  attune-worker train --spec examples/fine_foods.yaml --nproc 2\n"
                 "  attune-worker train --spec examples/fine_foods.yaml --set hyperparameters.max_steps=100\n"
                 "  attune-worker agent --coordinator 127.0.0.1:50051 --cpus 1 --metrics-listen 127.0.0.1:9465\n"
              << attune::common::FlagsHelp();
    return 0;
  }
  std::string command = argv[1];
  std::vector<char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) rest.push_back(argv[i]);
  g_sets = attune::common::TakeSetFlags(&rest);  // --set PATH=VALUE, repeatable
  std::vector<std::string> storage;
  auto args = attune::common::DashesToUnderscores(static_cast<int>(rest.size()), rest.data(), &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (std::string bad = attune::common::CheckFlagRanges(
          {{"threads", 0, 256}, {"world_size", 1, 1024}, {"rank", 0, 1023}, {"nproc", 0, 64},
           {"bucket_cap_mb", 1, 1024}, {"collective_timeout_s", 1, 86400}, {"cpus", 0, 4096}, {"gpus", 0, 64},
           {"rendezvous_port", 0, 65535}, {"stop_grace_s", 0, 3600}, {"coordinator_lease_s", 0, 3600},
           {"progress_timeout_s", 1, 86400}, {"events_fd", -1, 1 << 20}, {"abort_after_step", 0, INT64_MAX}});
      !bad.empty()) {
    std::cerr << "attune-worker: " << bad << "\n";
    return 2;
  }
  if (std::string bad = attune::common::CheckListenFlag("metrics_listen", true); !bad.empty()) {
    std::cerr << "attune-worker: " << bad << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_rank) >= absl::GetFlag(FLAGS_world_size)) {
    std::cerr << "attune-worker: --rank must be < --world_size\n";
    return 2;
  }
  if (const char* secret = std::getenv("ATTUNE_RENDEZVOUS_SECRET");
      secret != nullptr && *secret != '\0' && !attune::common::IsWellFormedSecret(secret)) {
    std::cerr << "attune-worker: ATTUNE_RENDEZVOUS_SECRET must be 32 to 128 lowercase hex digits\n";
    return 2;
  }
  if (command == "agent") return RunAgent(argv[0]);
  if (command == "train") {
    LOG(INFO) << attune::worker::train::ConfigureAllocatorForTraining();
    if (absl::GetFlag(FLAGS_spec).empty()) {
      std::cerr << "attune-worker train: --spec is required\n" << kUsage << "\n";
      return 2;
    }
    if (absl::GetFlag(FLAGS_nproc) > 1) return Launch(argc, argv, absl::GetFlag(FLAGS_nproc));
    return Train();
  }
  std::cerr << "attune-worker: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
