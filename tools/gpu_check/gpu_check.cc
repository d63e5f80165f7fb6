// attune-gpu-check: the checks scripts/gpu-check.sh runs on a GPU machine,
// built without the service (ATTUNE_SERVICE=OFF needs no gRPC or protobuf).
// Each prints one JSON object per line; the script gathers them.
//
//   attune-gpu-check nccl [--world_size W --rank R --port P] [--device_index D]
//       NCCL collectives against a CPU reference: allreduce (fp32, bf16,
//       int64; CUDA tensors and staged host tensors), broadcast, allgather,
//       barrier, and the Reducer's CUDA buckets against plain gradients.
//   attune-gpu-check two-ranks [--port P]
//       Starts `nccl` as 2 ranks on this machine's GPU(s), bounded in time,
//       and reports what NCCL says (it refuses two ranks on one device).
//   attune-gpu-check train --precision fp32|bf16 [--hidden 768 --layers 12
//       --heads 12 --seq 128 --batch 32 --steps 60 --device cuda]
//       Runs the real trainer (RunTraining) on synthetic rows and reports the
//       steady-state samples/s (wall time between steps, first 10 steps
//       excluded) and the final loss.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "worker/comm/communicator.h"
#include "worker/comm/reducer.h"
#include "worker/train/trainer.h"

extern char** environ;

ABSL_FLAG(int, world_size, 1, "nccl: ranks");
ABSL_FLAG(int, rank, 0, "nccl: this rank");
ABSL_FLAG(int, port, 29731, "nccl, two-ranks: the rendezvous port on 127.0.0.1");
ABSL_FLAG(int, device_index, -1, "nccl: the CUDA device (-1: rank modulo the visible devices)");
ABSL_FLAG(int, timeout_s, 60, "nccl: the collective timeout");
ABSL_FLAG(int64_t, hidden, 768, "train: hidden size (heads of 64 at the default)");
ABSL_FLAG(int64_t, layers, 12, "train: encoder layers");
ABSL_FLAG(int64_t, heads, 12, "train: attention heads");
ABSL_FLAG(int64_t, seq, 128, "train: sequence length");
ABSL_FLAG(int64_t, batch, 32, "train: batch size");
ABSL_FLAG(int64_t, steps, 60, "train: optimizer steps");
ABSL_FLAG(int64_t, vocab, 30522, "train: vocabulary size");
ABSL_FLAG(int64_t, threads, 4, "train: CPU threads (data, tokenizer)");
ABSL_FLAG(std::string, precision, "bf16", "train: fp32 or bf16");
ABSL_FLAG(std::string, device, "cuda", "train: cpu, cuda or cuda:N");
ABSL_FLAG(std::string, work, "/tmp/attune-gpu-check", "train: where the synthetic rows and outputs go");

namespace {

using attune::worker::comm::Communicator;
using attune::worker::comm::CommunicatorOptions;
using Json = nlohmann::json;

void Emit(const Json& j) {
  std::cout << j.dump() << std::endl;
}

// One collective check: `ok` and what was compared.
Json Check(const std::string& what, const absl::Status& s, const torch::Tensor& got, const torch::Tensor& want) {
  Json j{{"check", what}};
  if (!s.ok()) {
    j["ok"] = false;
    j["error"] = s.ToString();
    return j;
  }
  torch::Tensor g = got.to(torch::kCPU).to(torch::kFloat64), w = want.to(torch::kFloat64);
  const double max_diff = (g - w).abs().max().item<double>();
  j["ok"] = max_diff == 0.0;
  j["max_abs_diff"] = max_diff;
  j["elements"] = got.numel();
  return j;
}

int Nccl() {
  CommunicatorOptions o;
  o.world_size = absl::GetFlag(FLAGS_world_size);
  o.rank = absl::GetFlag(FLAGS_rank);
  o.master_port = absl::GetFlag(FLAGS_port);
  o.device_index = absl::GetFlag(FLAGS_device_index);
  o.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  o.job = "gpu-check";
  const auto t0 = std::chrono::steady_clock::now();
  auto comm = attune::worker::comm::CreateNcclCommunicator(o);
  if (!comm.ok()) {
    Emit({{"check", "nccl_init"}, {"rank", o.rank}, {"world_size", o.world_size}, {"ok", false},
          {"error", comm.status().ToString()}});
    return 1;
  }
  Communicator& c = **comm;
  Emit({{"check", "nccl_init"}, {"rank", o.rank}, {"world_size", o.world_size}, {"ok", true},
        {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}});
  const int W = o.world_size, R = o.rank;
  std::vector<std::string> places{"host"};
  const bool cuda = torch::cuda::is_available();
  if (cuda) places.push_back("cuda");
  int failed = 0;
  auto report = [&](Json j) {
    j["rank"] = R;
    j["world_size"] = W;
    if (!j["ok"].get<bool>()) ++failed;
    Emit(j);
  };
  const torch::Device dev = cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(o.device_index >= 0 ? o.device_index : R % std::max<int64_t>(1, torch::cuda::device_count()))) : torch::Device(torch::kCPU);
  for (const std::string& place : places) {
    const torch::Device where = place == "cuda" ? dev : torch::Device(torch::kCPU);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
      // Values exact in every dtype: (i mod 97) / 2 + rank; the sum over
      // ranks is W * base + W (W - 1) / 2.
      const int64_t n = int64_t{1} << 22;
      torch::Tensor base = torch::remainder(torch::arange(n, torch::kFloat64), 97);
      if (dtype != torch::kInt64) base = base / 2;
      torch::Tensor want = (base * W + W * (W - 1) / 2.0).to(dtype).to(torch::kFloat64);
      torch::Tensor t = (base + R).to(dtype).to(where);
      auto w = c.AllReduceSum(t);
      absl::Status s = w.ok() ? (*w)->Wait(c.timeout()) : w.status();
      report(Check(absl::StrCat("allreduce_", place, "_", c10::toString(dtype)), s, t, want));
    }
    torch::Tensor b = torch::full({1000}, static_cast<double>(R + 1), torch::TensorOptions().dtype(torch::kFloat32).device(where));
    auto bw = c.Broadcast(b, 0);
    absl::Status bs = bw.ok() ? (*bw)->Wait(c.timeout()) : bw.status();
    report(Check(absl::StrCat("broadcast_", place), bs, b, torch::full({1000}, 1.0)));
    std::vector<torch::Tensor> parts;
    torch::Tensor mine = torch::full({3, 5}, static_cast<double>(R), torch::TensorOptions().dtype(torch::kFloat32).device(where));
    absl::Status gs = c.AllGather(mine, &parts);
    torch::Tensor want_g = torch::cat([&] {
      std::vector<torch::Tensor> v;
      for (int r = 0; r < W; ++r) v.push_back(torch::full({3, 5}, static_cast<double>(r)));
      return v;
    }());
    report(Check(absl::StrCat("allgather_", place), gs, gs.ok() ? torch::cat(parts) : want_g, want_g));
  }
  absl::Status barrier = c.Barrier();
  report(Json{{"check", "barrier"}, {"ok", barrier.ok()}, {"error", barrier.ToString()}});
  if (cuda) {
    // The Reducer's buckets on the device: gradients after FinishBackward
    // equal W times one rank's (every rank computes the same batch).
    torch::manual_seed(0);
    torch::nn::Sequential net(torch::nn::Linear(256, 512), torch::nn::GELU(), torch::nn::Linear(512, 4));
    net->to(dev);
    torch::Tensor x = torch::randn({64, 256}).to(dev);
    std::vector<torch::Tensor> params = net->parameters();
    net->zero_grad();
    net->forward(x).square().sum().backward();
    std::vector<torch::Tensor> plain;
    for (auto& p : params) plain.push_back(p.grad().clone().cpu() * W);
    net->zero_grad();
    attune::worker::comm::ReducerOptions ro;
    ro.bucket_cap_bytes = 256 * 1024;  // several buckets
    attune::worker::comm::Reducer reducer(params, c, ro);
    reducer.PrepareForBackward(true);
    net->forward(x).square().sum().backward();
    absl::Status rs = reducer.FinishBackward();
    double worst = 0;
    for (size_t i = 0; rs.ok() && i < params.size(); ++i) {
      worst = std::max(worst, (params[i].grad().cpu() - plain[i]).abs().max().item<double>());
    }
    report(Json{{"check", "reducer_cuda_buckets"}, {"ok", rs.ok() && worst <= 1e-5}, {"max_abs_diff", worst},
                {"buckets", reducer.bucket_count()}, {"error", rs.ToString()}});
  }
  Emit({{"check", "nccl_summary"}, {"rank", R}, {"ok", failed == 0}, {"failed", failed}});
  return failed == 0 ? 0 : 1;
}

// Runs `nccl` as two ranks (child processes), each bounded by 120 s.
int TwoRanks(const char* self) {
  const std::string port = std::to_string(absl::GetFlag(FLAGS_port));
  std::vector<pid_t> kids;
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> args{self, "nccl", "--world_size", "2", "--rank", std::to_string(r), "--port", port,
                                  "--timeout_s", "60"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawn(&pid, self, nullptr, nullptr, argv.data(), environ) != 0) {
      Emit({{"check", "two_ranks"}, {"ok", false}, {"error", "cannot start a rank"}});
      return 1;
    }
    kids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int worst = 0;
  for (pid_t pid : kids) {
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        worst = 124;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (worst == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) worst = 1;
  }
  Emit({{"check", "two_ranks"}, {"ok", worst == 0}, {"exit", worst}});
  return worst == 0 ? 0 : 1;
}

class Clocked : public attune::worker::train::TrainerObserver {
 public:
  void OnStep(const attune::worker::train::StepEvent& e) override {
    at.push_back(std::chrono::steady_clock::now());
    losses.push_back(e.loss);
  }
  std::vector<std::chrono::steady_clock::time_point> at;
  std::vector<double> losses;
};

int Train() {
  const int64_t H = absl::GetFlag(FLAGS_hidden), L = absl::GetFlag(FLAGS_layers), heads = absl::GetFlag(FLAGS_heads);
  const int64_t seq = absl::GetFlag(FLAGS_seq), batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  const int64_t vocab = absl::GetFlag(FLAGS_vocab);
  const std::string precision = absl::GetFlag(FLAGS_precision), device = absl::GetFlag(FLAGS_device);
  const std::string work = absl::GetFlag(FLAGS_work);
  std::filesystem::create_directories(work);
  // Random 200-word rows, as bench/train_throughput.py writes them.
  std::mt19937 rng(0);
  auto write = [&](const std::string& name, int64_t rows) {
    std::ofstream out(work + "/" + name);
    out << "text,label\n";
    for (int64_t i = 0; i < rows; ++i) {
      for (int w = 0; w < 200; ++w) out << (w ? " " : "") << "w" << rng() % 7000;
      out << "," << i % 2 << "\n";
    }
  };
  write("train.csv", batch * (steps + 1) + 8);
  write("valid.csv", 64);
  attune::common::JobConfig c;
  c.name = absl::StrCat("gpu-check-", precision);
  c.has_model_config = true;
  c.model_config.hidden_size = H;
  c.model_config.num_hidden_layers = L;
  c.model_config.num_attention_heads = heads;
  c.model_config.intermediate_size = 4 * H;
  c.model_config.vocab_size = vocab;
  c.built_vocab_size = vocab;
  c.train_path = work + "/train.csv";
  c.validation_path = work + "/valid.csv";
  c.max_length = seq;
  c.epochs = 1;
  c.max_steps = steps;
  c.batch_size = batch;
  c.learning_rate = 1e-4;
  c.warmup_steps = 10;
  c.weight_decay = 0.01;
  c.threads = absl::GetFlag(FLAGS_threads);
  c.precision = precision;
  c.eval_baseline = false;
  c.gpus_per_rank = device == "cpu" ? 0 : 1;
  c.output_dir = absl::StrCat(work, "/out-", precision);
  c.checkpoint_overwrite = true;
  if (auto s = attune::common::ValidateJobConfig(c); !s.ok()) {
    Emit({{"check", "train"}, {"ok", false}, {"error", s.ToString()}});
    return 1;
  }
  attune::worker::train::ConfigureThreads(static_cast<int>(c.threads));
  attune::worker::train::TrainerOptions opts;
  opts.device = device;
  opts.resume = false;
  opts.log_every_steps = 1;
  Clocked clock;
  auto r = attune::worker::train::RunTraining(c, opts, &clock);
  if (!r.ok()) {
    Emit({{"check", "train"}, {"precision", precision}, {"ok", false}, {"error", r.status().ToString()}});
    return 1;
  }
  const size_t skip = std::min<size_t>(10, clock.at.size() > 2 ? clock.at.size() - 2 : 0);
  double sps = 0;
  if (clock.at.size() > skip + 1) {
    const double secs = std::chrono::duration<double>(clock.at.back() - clock.at[skip]).count();
    sps = static_cast<double>(batch) * static_cast<double>(clock.at.size() - 1 - skip) / secs;
  }
  // Model FLOPs per sample (training = 3x forward): the matrix products
  // 2 * seq * L * (4 H^2 + 2 H * 4H) and attention 4 * seq^2 * H * L.
  const double fwd = 2.0 * seq * L * (4.0 * H * H + 8.0 * H * H) + 4.0 * seq * seq * H * L;
  const double flops = 3.0 * fwd;
  Emit({{"check", "train"}, {"ok", true}, {"precision", precision}, {"device", device}, {"hidden", H}, {"layers", L},
        {"seq", seq}, {"batch", batch}, {"steps", r->steps}, {"samples_per_second", sps},
        {"model_tflops_per_second", sps * flops / 1e12}, {"mfu_vs_989_tflops", sps * flops / 989e12},
        {"first_loss", clock.losses.empty() ? 0.0 : clock.losses.front()},
        {"last_loss", clock.losses.empty() ? 0.0 : clock.losses.back()}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string cmd = args.size() > 1 ? args[1] : "";
  if (cmd == "nccl") return Nccl();
  if (cmd == "two-ranks") return TwoRanks("/proc/self/exe");
  if (cmd == "train") return Train();
  std::cerr << "usage: attune-gpu-check nccl|two-ranks|train [flags]  (see tools/gpu_check/gpu_check.cc)\n";
  return 2;
}
