#include "worker/comm/fake_communicator.h"

#include <chrono>
#include <limits>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace attune::worker::comm {

class FakeCommunicator : public Communicator {
 public:
  FakeCommunicator(FakeGroup& group, int rank) : g_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return g_.world_; }
  std::string backend() const override { return "fake"; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceSum(at::Tensor tensor) override {
    auto parts = g_.Meet(rank_, tensor, "allreduce");
    if (!parts.ok()) return parts.status();
    at::Tensor sum = torch::zeros_like((*parts)[0]);
    for (const auto& p : *parts) sum += p;  // rank order: the same sum on every rank
    tensor.copy_(sum);
    return std::unique_ptr<Work>(new Done());
  }
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(at::Tensor tensor, int root) override {
    auto parts = g_.Meet(rank_, tensor, "broadcast");
    if (!parts.ok()) return parts.status();
    tensor.copy_((*parts)[static_cast<size_t>(root)]);
    return std::unique_ptr<Work>(new Done());
  }
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterSum(at::Tensor input, at::Tensor output) override {
    if (auto s = CheckReduceScatter(*this, input, output); !s.ok()) return s;
    auto parts = g_.Meet(rank_, input, "reduce_scatter");
    if (!parts.ok()) return parts.status();
    const int64_t n = output.numel();
    at::Tensor sum = torch::zeros_like(output);
    for (const auto& p : *parts) sum += p.narrow(0, rank_ * n, n);  // rank order, as AllReduceSum
    // The other blocks are unspecified (a ring leaves partial sums there):
    // NaN, so that a caller that reads them shows it.
    if (input.is_floating_point()) {
      for (int q = 0; q < g_.world_; ++q) {
        if (q != rank_) input.narrow(0, q * n, n).fill_(std::numeric_limits<double>::quiet_NaN());
      }
    }
    output.copy_(sum);
    return std::unique_ptr<Work>(new Done());
  }
  absl::Status AllGatherInPlace(at::Tensor buffer) override {
    if (auto s = CheckAllGatherInPlace(*this, buffer); !s.ok()) return s;
    auto parts = g_.Meet(rank_, buffer, "allgather");
    if (!parts.ok()) return parts.status();
    const int64_t n = buffer.numel() / g_.world_;
    for (int q = 0; q < g_.world_; ++q) buffer.narrow(0, q * n, n).copy_((*parts)[static_cast<size_t>(q)].narrow(0, q * n, n));
    return absl::OkStatus();
  }
  absl::Status AllGather(const at::Tensor& input, std::vector<at::Tensor>* outputs) override {
    auto parts = g_.Meet(rank_, input, "allgather");
    if (!parts.ok()) return parts.status();
    *outputs = std::move(*parts);
    return absl::OkStatus();
  }
  absl::Status Barrier() override { return g_.Meet(rank_, torch::zeros({1}), "barrier").status(); }
  void Abort() override {}
  absl::Duration timeout() const override { return g_.timeout_; }

 private:
  struct Done : Work {
    absl::Status Wait(absl::Duration) override { return absl::OkStatus(); }
  };
  FakeGroup& g_;
  const int rank_;
};

FakeGroup::FakeGroup(int world_size, absl::Duration timeout)
    : world_(world_size), timeout_(timeout), parts_(static_cast<size_t>(world_size)) {}

std::unique_ptr<Communicator> FakeGroup::Rank(int rank) { return std::make_unique<FakeCommunicator>(*this, rank); }

absl::StatusOr<std::vector<at::Tensor>> FakeGroup::Meet(int rank, const at::Tensor& input, const char* op) {
  std::unique_lock<std::mutex> l(mu_);
  const int64_t round = round_;
  parts_[static_cast<size_t>(rank)] = input.detach().clone();
  if (++arrived_ == world_) {
    done_parts_ = std::move(parts_);
    parts_.assign(static_cast<size_t>(world_), at::Tensor());
    arrived_ = 0;
    ++round_;
    cv_.notify_all();
    return done_parts_;
  }
  const auto limit = std::chrono::microseconds(absl::ToInt64Microseconds(timeout_));
  if (!cv_.wait_for(l, limit, [&] { return round_ != round; })) {
    return absl::DeadlineExceededError(absl::StrCat(op, " on rank ", rank, ": the other ranks did not arrive"));
  }
  return done_parts_;
}

}  // namespace attune::worker::comm
