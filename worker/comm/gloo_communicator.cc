#include <chrono>
#include <thread>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <glog/logging.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/comm/communicator.h"
#include "worker/comm/kv_store.h"

namespace attune::worker::comm {
namespace {

std::chrono::milliseconds Ms(absl::Duration d) { return std::chrono::milliseconds(absl::ToInt64Milliseconds(d)); }

std::string What(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// NOTE [exceptions at the adapter]: c10d and gloo throw (c10::Error,
// gloo::IoException, std::runtime_error); they stop here.
absl::Status FromException(const std::exception& e, const std::string& op, int rank, const std::string& job) {
  std::string msg = absl::StrCat("job=", job, " rank=", rank, " ", op, " failed: ", What(e));
  if (msg.find("imeout") != std::string::npos || msg.find("imed out") != std::string::npos) {
    return absl::DeadlineExceededError(msg);
  }
  if (msg.find("onnection") != std::string::npos || msg.find("eset by peer") != std::string::npos ||
      msg.find("losed") != std::string::npos || msg.find("Broken pipe") != std::string::npos) {
    return absl::UnavailableError(msg);
  }
  return absl::AbortedError(msg);
}

// The c10d::Store that ProcessGroupGloo exchanges its addresses through, over
// our KvStore (bound to rank 0's host) instead of c10d's TCPStore (which
// listens on every interface in libtorch 1.13). c10d expects exceptions; its
// callers here catch them (FromException).
class RendezvousStore : public c10d::Store {
 public:
  RendezvousStore(std::unique_ptr<KvClient> client, std::chrono::milliseconds timeout)
      : c10d::Store(timeout), client_(std::move(client)) {}

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    Ok(client_->Set(key, std::string(value.begin(), value.end())));
  }
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& current,
                                  const std::vector<uint8_t>& desired) override {
    return Bytes(Ok(client_->CompareSet(key, std::string(current.begin(), current.end()),
                                        std::string(desired.begin(), desired.end()))));
  }
  std::vector<uint8_t> get(const std::string& key) override {
    return Bytes(Ok(client_->WaitGet(key, absl::FromChrono(timeout_))));
  }
  int64_t add(const std::string& key, int64_t value) override { return Ok(client_->Add(key, value)); }
  bool deleteKey(const std::string& key) override { return Ok(client_->Delete(key)); }
  bool check(const std::vector<std::string>& keys) override { return Ok(client_->Check(keys)); }
  int64_t getNumKeys() override { return Ok(client_->NumKeys()); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    Ok(client_->Wait(keys, absl::FromChrono(timeout)));
  }

 private:
  static void Ok(const absl::Status& s) {
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  }
  template <typename T>
  static T Ok(absl::StatusOr<T> s) {
    if (!s.ok()) throw std::runtime_error(std::string(s.status().message()));
    return *std::move(s);
  }
  static std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

  std::unique_ptr<KvClient> client_;
};

class GlooWork : public Work {
 public:
  GlooWork(c10::intrusive_ptr<c10d::Work> w, std::string op, int rank, std::string job, const std::atomic<bool>* aborted)
      : w_(std::move(w)), op_(std::move(op)), rank_(rank), job_(std::move(job)), aborted_(aborted) {}
  absl::Status Wait(absl::Duration timeout) override {
    if (aborted_->load()) return absl::AbortedError(absl::StrCat("job=", job_, " rank=", rank_, " ", op_, ": aborted"));
    try {
      if (!w_->wait(Ms(timeout))) {
        return absl::DeadlineExceededError(absl::StrCat("job=", job_, " rank=", rank_, " ", op_, " timed out"));
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, op_, rank_, job_);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> w_;
  std::string op_;
  int rank_;
  std::string job_;
  const std::atomic<bool>* aborted_;
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(const CommunicatorOptions& o, std::unique_ptr<KvServer> server,
                   c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroupGloo> pg)
      : o_(o), server_(std::move(server)), store_(std::move(store)), pg_(std::move(pg)) {}

  int rank() const override { return o_.rank; }
  int world_size() const override { return o_.world_size; }
  std::string backend() const override { return "gloo"; }
  absl::Duration timeout() const override { return o_.timeout; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceSum(at::Tensor t) override {
    return Launch("allreduce", [&] {
      std::vector<at::Tensor> v{t};
      return pg_->allreduce(v, c10d::AllreduceOptions{});
    });
  }
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(at::Tensor t, int root) override {
    return Launch("broadcast", [&] {
      std::vector<at::Tensor> v{t};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      return pg_->broadcast(v, opts);
    });
  }
  absl::Status AllGather(const at::Tensor& input, std::vector<at::Tensor>* outputs) override {
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < o_.world_size; ++r) out[0].push_back(torch::empty_like(input));
    std::vector<at::Tensor> in{input};
    auto work = Launch("allgather", [&] { return pg_->allgather(out, in, c10d::AllgatherOptions{}); });
    if (!work.ok()) return work.status();
    absl::Status s = (*work)->Wait(o_.timeout);
    if (s.ok()) *outputs = out[0];
    return s;
  }
  absl::Status Barrier() override {
    auto work = Launch("barrier", [&] { return pg_->barrier(c10d::BarrierOptions{}); });
    if (!work.ok()) return work.status();
    return (*work)->Wait(o_.timeout);
  }
  void Abort() override {
    // ProcessGroupGloo has no abort in 1.13: waiters are released by the
    // group timeout; new operations and waits fail at once.
    aborted_.store(true);
  }

 private:
  template <typename F>
  absl::StatusOr<std::unique_ptr<Work>> Launch(const std::string& op, F f) {
    if (aborted_.load()) return absl::AbortedError(absl::StrCat("job=", o_.job, " rank=", o_.rank, " ", op, ": aborted"));
    try {
      VLOG(2) << "job=" << o_.job << " rank=" << o_.rank << " " << op;
      return std::unique_ptr<Work>(new GlooWork(f(), op, o_.rank, o_.job, &aborted_));
    } catch (const std::exception& e) {
      return FromException(e, op, o_.rank, o_.job);
    }
  }

  CommunicatorOptions o_;
  std::unique_ptr<KvServer> server_;  // rank 0 only; outlives the group and the store
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  std::atomic<bool> aborted_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const CommunicatorOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", o.rank, " is outside world size ", o.world_size));
  }
  if (o.master_port <= 0 || o.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous port ", o.master_port, " is not a valid port"));
  }
  // Rendezvous, in steps:
  //   1. rank 0 serves the store (KvServer) on master_host:master_port, that address only; every rank connects
  //      (retrying until the timeout, as rank 0 may not be up yet);
  //   2. every rank adds one to "attune/arrived" and polls it until all have arrived, bounded by the timeout,
  //      so a missing rank is reported with how many arrived;
  //   3. ProcessGroupGloo exchanges addresses through the store (prefixed by the job) and connects the mesh.
  std::unique_ptr<KvServer> server;
  if (o.rank == 0) {
    auto started = KvServer::Start(o.master_host, o.master_port);
    if (!started.ok()) {
      return absl::UnavailableError(absl::StrCat("job=", o.job, " rank=0 cannot serve the rendezvous store at ",
                                                 o.master_host, ":", o.master_port, ": ", started.status().message()));
    }
    server = *std::move(started);
  }
  auto client = KvClient::Connect(o.master_host, o.master_port, o.timeout);
  if (!client.ok()) {
    return absl::UnavailableError(absl::StrCat("job=", o.job, " rank=", o.rank, " cannot reach the rendezvous store at ",
                                               o.master_host, ":", o.master_port, ": ", client.status().message()));
  }
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<RendezvousStore>(*std::move(client), Ms(o.timeout));
  const auto deadline = absl::Now() + o.timeout;
  try {
    store->add("attune/arrived", 1);
    while (true) {
      int64_t arrived = store->add("attune/arrived", 0);
      if (arrived >= o.world_size) break;
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "job=", o.job, " rank=", o.rank, " rendezvous timed out after ", absl::FormatDuration(o.timeout), ": ",
            arrived, " of ", o.world_size, " ranks arrived at ", o.master_host, ":", o.master_port));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto opts = c10d::ProcessGroupGloo::Options::create(Ms(o.timeout));
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    if (o.master_host != "127.0.0.1" && o.master_host != "localhost") {
      opts->devices.back() = c10d::ProcessGroupGloo::createDefaultDevice();
    }
    opts->threads = 1;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("attune/gloo", store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, o.rank, o.world_size, opts);
    LOG(INFO) << "job=" << o.job << " rank=" << o.rank << " gloo group of " << o.world_size << " ready (timeout "
              << absl::FormatDuration(o.timeout) << ")";
    return std::unique_ptr<Communicator>(new GlooCommunicator(o, std::move(server), store, pg));
  } catch (const std::exception& e) {
    return FromException(e, "rendezvous", o.rank, o.job);
  }
}

absl::Status AllReduceSumBlocking(Communicator& c, at::Tensor t) {
  auto w = c.AllReduceSum(t);
  if (!w.ok()) return w.status();
  return (*w)->Wait(c.timeout());
}

absl::Status BroadcastBlocking(Communicator& c, at::Tensor t, int root) {
  auto w = c.Broadcast(t, root);
  if (!w.ok()) return w.status();
  return (*w)->Wait(c.timeout());
}

absl::StatusOr<at::Tensor> AllGatherVariable(Communicator& c, const at::Tensor& input) {
  // 1. gather lengths; 2. pad to the longest; 3. gather; 4. trim and concatenate.
  at::Tensor len = torch::tensor({input.size(0)}, torch::kInt64);
  std::vector<at::Tensor> lens;
  if (auto s = c.AllGather(len, &lens); !s.ok()) return s;
  int64_t longest = 0;
  for (const auto& l : lens) longest = std::max(longest, l.item<int64_t>());
  at::Tensor padded = torch::zeros({longest}, input.options());
  padded.slice(0, 0, input.size(0)).copy_(input);
  std::vector<at::Tensor> parts;
  if (auto s = c.AllGather(padded, &parts); !s.ok()) return s;
  std::vector<at::Tensor> trimmed;
  for (size_t r = 0; r < parts.size(); ++r) trimmed.push_back(parts[r].slice(0, 0, lens[r].item<int64_t>()));
  return torch::cat(trimmed);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const std::string& backend,
                                                                 const CommunicatorOptions& options) {
  if (backend == "gloo") return CreateGlooCommunicator(options);
  if (backend == "nccl") return CreateNcclCommunicator(options);
  return absl::InvalidArgumentError(absl::StrCat("workers.backend: '", backend, "' is not gloo or nccl"));
}

}  // namespace attune::worker::comm
