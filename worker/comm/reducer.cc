#include "worker/comm/reducer.h"

#include <chrono>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/comm/torch_logging.h"

namespace attune::worker::comm {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  explicit ReadyHook(std::function<void()> f) : f_(std::move(f)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    f_();
    return outputs;
  }

 private:
  std::function<void()> f_;
};

}  // namespace

struct Reducer::Bucket {
  std::vector<size_t> params;
  at::Tensor flat;      // float32, the sum lands here
  at::Tensor wire;      // what travels (flat, or a half/bfloat16 copy)
  size_t pending = 0;
  bool launched = false;
  std::unique_ptr<Work> work;
};

Reducer::Reducer(std::vector<at::Tensor> trainable, Communicator& comm, ReducerOptions options)
    : params_(std::move(trainable)), comm_(comm), options_(std::move(options)) {
  slot_.resize(params_.size());
  ready_.assign(params_.size(), false);
  // Reverse registration order, filled up to the cap.
  std::unique_ptr<Bucket> cur;
  int64_t cur_bytes = 0;
  auto close = [&] {
    if (!cur) return;
    int64_t n = 0;
    for (size_t p : cur->params) n += params_[p].numel();
    // On the parameters' device: NCCL reduces CUDA buckets in place.
    cur->flat = torch::zeros({n}, torch::TensorOptions().dtype(torch::kFloat32).device(params_[cur->params[0]].device()));
    buckets_.push_back(std::move(cur));
    cur_bytes = 0;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const int64_t bytes = params_[i].numel() * 4;
    if (cur && cur_bytes + bytes > options_.bucket_cap_bytes) close();
    if (!cur) cur = std::make_unique<Bucket>();
    int64_t offset = 0;
    for (size_t p : cur->params) offset += params_[p].numel();
    slot_[i] = {buckets_.size(), offset};
    cur->params.push_back(i);
    cur_bytes += bytes;
  }
  close();
  const int wire_bytes = options_.compression == "none" ? 4 : 2;
  for (const auto& b : buckets_) stats_.bytes_per_step += b->flat.numel() * wire_bytes;
  stats_.buckets = static_cast<int64_t>(buckets_.size());
  // Hooks on the gradient accumulators (kept alive here, as DDP does).
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    acc->add_post_hook(std::make_unique<ReadyHook>([this, i] { MarkReady(i); }));
    accumulators_.push_back(std::move(acc));
  }
  LOG(INFO) << "reducer: " << params_.size() << " trainable tensors in " << buckets_.size() << " buckets, "
            << stats_.bytes_per_step << " bytes per step, compression " << options_.compression << ", overlap "
            << (options_.overlap ? "on" : "off");
}

Reducer::~Reducer() = default;

absl::Status Reducer::BroadcastFromRankZero(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  torch::NoGradGuard g;
  for (const auto& t : tensors) {
    at::Tensor c = t.detach().contiguous();
    if (auto s = BroadcastBlocking(comm, c, 0); !s.ok()) return s;
    if (!c.is_same(t)) t.detach().copy_(c);
  }
  return absl::OkStatus();
}

void Reducer::PrepareForBackward(bool sync) {
  sync_ = sync;
  if (!sync) return;
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b->pending = b->params.size();
    b->launched = false;
    b->work.reset();
  }
  launch_error_ = absl::OkStatus();
  first_launch_ = -1;
}

void Reducer::MarkReady(size_t i) {
  if (!sync_ || ready_[i]) return;
  ready_[i] = true;
  auto [bi, offset] = slot_[i];
  Bucket& b = *buckets_[bi];
  torch::NoGradGuard g;
  const at::Tensor& grad = params_[i].grad();
  at::Tensor dst = b.flat.narrow(0, offset, params_[i].numel());
  if (!grad.defined()) {
    dst.zero_();
  } else if (grad.data_ptr() != dst.data_ptr()) {
    dst.copy_(grad.reshape({-1}));
  }  // else: the gradient is a view of its bucket (after the first step), already in place
  if (--b.pending == 0 && options_.overlap) Launch(b);
}

void Reducer::Launch(Bucket& b) {
  if (b.launched) return;
  b.launched = true;
  if (first_launch_ < 0) first_launch_ = Now();
  if (options_.compression == "fp16") {
    b.wire = b.flat.to(torch::kFloat16);
  } else if (options_.compression == "bf16") {
    b.wire = b.flat.to(torch::kBFloat16);
  } else {
    b.wire = b.flat;
  }
  auto w = comm_.AllReduceSum(b.wire);
  if (!w.ok()) {
    if (launch_error_.ok()) launch_error_ = w.status();
    return;
  }
  b.work = std::move(*w);
}

absl::Status Reducer::FinishBackward() {
  if (!sync_) return absl::OkStatus();
  const double backward_end = Now();
  torch::NoGradGuard g;
  // Parameters that got no gradient this step: their slots are zero (or
  // their accumulated gradient, if any), so every rank launches every bucket.
  for (size_t i = 0; i < params_.size(); ++i) MarkReady(i);
  sync_ = false;
  for (auto& b : buckets_) Launch(*b);
  if (!launch_error_.ok()) return launch_error_;
  for (auto& b : buckets_) {
    absl::Status s = b->work->Wait(comm_.timeout());
    if (!s.ok()) return s;
  }
  const double done = Now();
  stats_.comm_seconds += done - first_launch_;
  stats_.exposed_seconds += done - backward_end;
  ++stats_.steps;
  for (auto& b : buckets_) {
    if (!b->wire.is_same(b->flat)) b->flat.copy_(b->wire);
    // Gradients become views of their bucket (as DDP's gradient_as_bucket_view):
    // no copy back now, and no copy in on later steps, since the optimizer
    // zeroes them in place and autograd accumulates into them in place.
    for (size_t i : b->params) {
      // detach(): shares the bucket's memory without being an autograd view, so
      // that the optimizer's zero_grad (which calls detach_()) accepts it.
      at::Tensor view = b->flat.narrow(0, slot_[i].second, params_[i].numel()).view(params_[i].sizes()).detach();
      if (!params_[i].grad().defined() || params_[i].grad().data_ptr() != view.data_ptr()) {
        params_[i].mutable_grad() = view;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace attune::worker::comm
