#include <chrono>
#include <thread>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/comm/communicator.h"
#include "worker/comm/kv_store.h"
#include "worker/comm/torch_logging.h"

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

// Waits for `w` until `deadline`; false past it. (c10d reads a wait of 0 ms
// as "no timeout": the group's whole timeout again, so never pass one.)
bool WaitUntil(c10d::Work& w, absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return false;
  return w.wait(Ms(std::max(left, absl::Milliseconds(1))));
}

// NOTE [ring reduce-scatter]: libtorch 1.13's ProcessGroupGloo has no usable
// reduce_scatter, so it is a ring over send/recv: the input is cut into
// `world` blocks; at step k (of world - 1) rank r sends its running sum of
// block (r - k - 1) mod world to rank r + 1 and adds what rank r - 1 sends of
// block (r - k - 2) mod world into its own. After the last step rank r holds
// the whole sum of block r. Each rank sends (world - 1) / world of the input.
// The first step starts at launch (so it overlaps whatever the caller does
// next, all of it with two ranks); Wait() drives the rest.
class RingReduceScatter : public Work {
 public:
  RingReduceScatter(c10d::ProcessGroupGloo& pg, const CommunicatorOptions& o, int tag, at::Tensor input,
                    at::Tensor output, const std::atomic<bool>* aborted)
      : pg_(pg), o_(o), tag_(tag), output_(std::move(output)), aborted_(aborted) {
    const int64_t n = output_.numel();
    for (int b = 0; b < o_.world_size; ++b) blocks_.push_back(input.narrow(0, b * n, n));
    incoming_ = torch::empty_like(output_);
  }

  // Starts step `k_`: the send to the right and the receive from the left.
  absl::Status Start() {
    const int w = o_.world_size, r = o_.rank;
    try {
      std::vector<at::Tensor> out{blocks_[static_cast<size_t>(((r - k_ - 1) % w + w) % w)]};
      std::vector<at::Tensor> in{incoming_};
      send_ = pg_.send(out, (r + 1) % w, tag_);
      recv_ = pg_.recv(in, (r - 1 + w) % w, tag_);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, "reduce_scatter", r, o_.job);
    }
  }

  absl::Status Wait(absl::Duration timeout) override {
    const int w = o_.world_size, r = o_.rank;
    const absl::Time deadline = absl::Now() + timeout;
    if (!started_.ok()) return started_;
    while (k_ < w - 1) {
      for (auto* work : {&send_, &recv_}) {
        if (aborted_->load()) return absl::AbortedError(absl::StrCat("job=", o_.job, " rank=", r, " reduce_scatter: aborted"));
        try {
          if (!WaitUntil(**work, deadline)) {
            return absl::DeadlineExceededError(absl::StrCat("job=", o_.job, " rank=", r, " reduce_scatter timed out"));
          }
        } catch (const std::exception& e) {
          return FromException(e, "reduce_scatter", r, o_.job);
        }
      }
      blocks_[static_cast<size_t>(((r - k_ - 2) % w + w) % w)].add_(incoming_);
      if (++k_ < w - 1) {
        if (absl::Status s = Start(); !s.ok()) return s;
      }
    }
    if (!done_) {
      if (output_.data_ptr() != blocks_[static_cast<size_t>(r)].data_ptr()) output_.copy_(blocks_[static_cast<size_t>(r)]);
      done_ = true;
    }
    return absl::OkStatus();
  }

  absl::Status started_;

 private:
  c10d::ProcessGroupGloo& pg_;
  const CommunicatorOptions& o_;
  const int tag_;
  std::vector<at::Tensor> blocks_;
  at::Tensor output_, incoming_;
  const std::atomic<bool>* aborted_;
  c10::intrusive_ptr<c10d::Work> send_, recv_;
  int k_ = 0;
  bool done_ = false;
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
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterSum(at::Tensor input, at::Tensor output) override {
    if (auto s = CheckReduceScatter(*this, input, output); !s.ok()) return s;
    if (!input.is_cpu()) return absl::InvalidArgumentError("gloo reduce_scatter: host tensors only");
    if (aborted_.load()) return absl::AbortedError(absl::StrCat("job=", o_.job, " rank=", o_.rank, " reduce_scatter: aborted"));
    if (o_.world_size == 1) {
      if (output.data_ptr() != input.data_ptr()) output.copy_(input);
      return std::unique_ptr<Work>(new RingReduceScatter(*pg_, o_, 0, input, output, &aborted_));
    }
    // Every rank issues reduce-scatters in the same order (NOTE [collective
    // order]), so their sequence numbers, the tags, agree.
    const int tag = static_cast<int>(ring_seq_++ % (1 << 30));
    auto work = std::make_unique<RingReduceScatter>(*pg_, o_, tag, input, output, &aborted_);
    work->started_ = work->Start();
    if (!work->started_.ok()) return work->started_;
    return std::unique_ptr<Work>(std::move(work));
  }
  // A ring over send/recv (NOTE [ring reduce-scatter], the other way round):
  // at step k rank r sends block (r - k) mod world to rank r + 1 and receives
  // block (r - k - 1) mod world from rank r - 1 into its place.
  absl::Status AllGatherInPlace(at::Tensor buffer) override {
    if (auto s = CheckAllGatherInPlace(*this, buffer); !s.ok()) return s;
    if (!buffer.is_cpu()) return absl::InvalidArgumentError("gloo allgather: host tensors only");
    const int w = o_.world_size, r = o_.rank;
    const int64_t n = buffer.numel() / w;
    const int tag = static_cast<int>(ring_seq_++ % (1 << 30));
    const absl::Time deadline = absl::Now() + o_.timeout;
    for (int k = 0; k < w - 1; ++k) {
      if (aborted_.load()) return absl::AbortedError(absl::StrCat("job=", o_.job, " rank=", r, " allgather: aborted"));
      try {
        std::vector<at::Tensor> out{buffer.narrow(0, ((r - k) % w + w) % w * n, n)};
        std::vector<at::Tensor> in{buffer.narrow(0, ((r - k - 1) % w + w) % w * n, n)};
        auto send = pg_->send(out, (r + 1) % w, tag);
        auto recv = pg_->recv(in, (r - 1 + w) % w, tag);
        for (auto* work : {&send, &recv}) {
          if (!WaitUntil(**work, deadline)) {
            return absl::DeadlineExceededError(absl::StrCat("job=", o_.job, " rank=", r, " allgather timed out"));
          }
        }
      } catch (const std::exception& e) {
        return FromException(e, "allgather", r, o_.job);
      }
    }
    return absl::OkStatus();
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
  int64_t ring_seq_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const CommunicatorOptions& o) {
  // Rendezvous (JoinRendezvous: rank 0's store on its host only, every rank
  // arrived), then ProcessGroupGloo exchanges addresses through the store
  // (prefixed by the job) and connects the mesh.
  auto joined = JoinRendezvous(o.job, o.rank, o.world_size, o.master_host, o.master_port, o.timeout,
                               o.rendezvous_secret);
  if (!joined.ok()) return joined.status();
  std::unique_ptr<KvServer> server = std::move(joined->server);
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<RendezvousStore>(std::move(joined->client), Ms(o.timeout));
  try {
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

}  // namespace attune::worker::comm
