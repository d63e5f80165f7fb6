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

// NOTE [sharded gradients]: buckets travelling at once before the oldest is
// waited for (its staging buffer is then freed).
constexpr size_t kInFlightBuckets = 2;

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
  std::vector<std::pair<size_t, size_t>> members;  // (parameter, its segment) in this bucket
  at::Tensor flat;      // float32, the sum lands here (shard_gradients: only while it travels)
  int64_t numel = 0;    // flat's elements (padded when sharded)
  int64_t used = 0;     // of which the parameters' (the rest is padding)
  at::Tensor wire;      // what travels (flat, or a half/bfloat16 copy)
  int64_t part = 0;     // sharded: the elements of each rank's part
  at::Tensor shard, shard_wire;  // sharded: this rank's part of the sum (float32; as it travels)
  size_t pending = 0;
  bool launched = false;
  std::unique_ptr<Work> work;
};

Reducer::Reducer(std::vector<at::Tensor> trainable, Communicator& comm, ReducerOptions options)
    : params_(std::move(trainable)), comm_(comm), options_(std::move(options)) {
  segments_.resize(params_.size());
  ready_.assign(params_.size(), false);
  // Reverse registration order, filled up to the cap.
  std::unique_ptr<Bucket> cur;
  int64_t cur_bytes = 0;
  auto close = [&] {
    if (!cur) return;
    int64_t n = cur->used;
    const auto on =
        torch::TensorOptions().dtype(torch::kFloat32).device(params_[cur->members.front().first].device());
    if (options_.shard) {
      // NOTE [sharded buckets]: padded with zeros that stay zero.
      const int64_t world = comm_.world_size();
      cur->part = (n + world - 1) / world;
      n = cur->part * world;
    }
    cur->numel = n;
    if (options_.shard_gradients) {
      // NOTE [sharded gradients]: the part is a buffer of its own; the
      // bucket is made when its first gradient arrives.
      cur->shard = torch::zeros({cur->part}, on);
    } else {
      // On the parameters' device: NCCL reduces CUDA buckets in place.
      cur->flat = torch::zeros({n}, on);
      if (options_.shard) {
        // The rank's part of the sum lands in its own block of the bucket (the
        // in-place form of a reduce-scatter): no memory beyond the bucket.
        cur->shard = cur->flat.narrow(0, comm_.rank() * cur->part, cur->part);
        cur->shard_wire = cur->shard;
      }
    }
    buckets_.push_back(std::move(cur));
    cur_bytes = 0;
  };
  auto add = [&](size_t i, int64_t param_offset, int64_t length) {
    segments_[i].push_back({buckets_.size(), cur->used, param_offset, length});
    cur->members.emplace_back(i, segments_[i].size() - 1);
    cur->used += length;
  };
  const int64_t cap_elems = std::max<int64_t>(1, options_.bucket_cap_bytes / 4);
  for (size_t i = params_.size(); i-- > 0;) {
    const int64_t numel = params_[i].numel();
    if (!options_.shard_gradients) {
      const int64_t bytes = numel * 4;
      if (cur && cur_bytes + bytes > options_.bucket_cap_bytes) close();
      if (!cur) cur = std::make_unique<Bucket>();
      add(i, 0, numel);
      cur_bytes += bytes;
      continue;
    }
    // NOTE [sharded gradients]: a parameter larger than the cap spans
    // buckets, so that no staging buffer is larger than the cap.
    for (int64_t done = 0; done < numel;) {
      if (cur && cur->used >= cap_elems) close();
      if (!cur) cur = std::make_unique<Bucket>();
      const int64_t take = std::min(numel - done, cap_elems - cur->used);
      add(i, done, take);
      done += take;
    }
  }
  close();
  if (options_.shard && !options_.shard_gradients) {
    // Gradients are views of their bucket from the first backward on (later
    // ones become views in FinishBackward): autograd accumulates into them,
    // so the first step does not hold a second copy of every gradient.
    // (Sharded only: unsharded AdamW skips a parameter until it first has a
    // gradient, and its first step stays as a single rank's.)
    for (size_t i = 0; i < params_.size(); ++i) {
      if (params_[i].grad().defined()) continue;
      const Segment& seg = segments_[i].front();
      params_[i].mutable_grad() =
          buckets_[seg.bucket]->flat.narrow(0, seg.offset, params_[i].numel()).view(params_[i].sizes()).detach();
    }
  }
  const int wire_bytes = options_.compression == "none" ? 4 : 2;
  for (const auto& b : buckets_) stats_.bytes_per_step += b->numel * wire_bytes;
  stats_.buckets = static_cast<int64_t>(buckets_.size());
  // Hooks on the gradient accumulators (kept alive here, as DDP does).
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    acc->add_post_hook(std::make_unique<ReadyHook>([this, i] { MarkReady(i); }));
    accumulators_.push_back(std::move(acc));
  }
  LOG(INFO) << "reducer: " << params_.size() << " trainable tensors in " << buckets_.size() << " buckets, "
            << stats_.bytes_per_step << " bytes per step, compression " << options_.compression << ", overlap "
            << (options_.overlap ? "on" : "off")
            << (options_.shard_gradients ? ", sharded gradients (reduce-scatter into each rank's part)"
                : options_.shard         ? ", sharded (reduce-scatter)"
                                         : "");
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
  sync_ = sync || options_.shard_gradients;
  if (!sync_) return;
  for (Bucket* b : in_flight_) {  // left by a failed step
    b->flat = b->wire = b->shard_wire = at::Tensor();
    b->work.reset();
  }
  in_flight_.clear();
  next_launch_ = 0;
  std::fill(ready_.begin(), ready_.end(), false);
  for (auto& b : buckets_) {
    b->pending = b->members.size();
    b->launched = false;
    b->work.reset();
  }
  launch_error_ = absl::OkStatus();
  first_launch_ = -1;
}

void Reducer::MarkReady(size_t i) {
  if (!sync_ || ready_[i]) return;
  ready_[i] = true;
  torch::NoGradGuard g;
  const at::Tensor& grad = params_[i].grad();
  for (const Segment& seg : segments_[i]) {
    Bucket& b = *buckets_[seg.bucket];
    if (options_.shard_gradients && !b.flat.defined()) {
      b.flat = torch::empty({b.numel}, b.shard.options());
      if (b.numel > b.used) b.flat.narrow(0, b.used, b.numel - b.used).zero_();
    }
    at::Tensor dst = b.flat.narrow(0, seg.offset, seg.length);
    if (!grad.defined()) {
      dst.zero_();
    } else if (grad.data_ptr() != dst.data_ptr()) {
      dst.copy_(grad.reshape({-1}).narrow(0, seg.param_offset, seg.length));
    }  // else: the gradient is a view of its bucket (after the first step), already in place
    // Launched before the next segment's bucket is made (NOTE [sharded
    // gradients]: a large parameter's buckets do not all exist at once), in
    // bucket order on every rank whatever order the hooks fire in (the
    // ranks' collectives must pair up; a rank with no rows marks its
    // parameters in index order), as DDP does.
    if (--b.pending == 0 && options_.overlap) {
      while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) Launch(*buckets_[next_launch_++]);
    }
  }
  // NOTE [sharded gradients]: the buckets hold it now.
  if (options_.shard_gradients) params_[i].mutable_grad() = at::Tensor();
}

void Reducer::Launch(Bucket& b) {
  if (b.launched) return;
  b.launched = true;
  if (!launch_error_.ok()) {
    // A collective failed: launch nothing more (each would wait out its own
    // timeout); FinishBackward reports the first error.
    if (options_.shard_gradients) b.flat = at::Tensor();
    return;
  }
  if (first_launch_ < 0) first_launch_ = Now();
  if (options_.compression == "fp16") {
    b.wire = b.flat.to(torch::kFloat16);
  } else if (options_.compression == "bf16") {
    b.wire = b.flat.to(torch::kBFloat16);
  } else {
    b.wire = b.flat;
  }
  if (options_.shard) b.shard_wire = b.wire.narrow(0, comm_.rank() * b.part, b.part);
  auto w = options_.shard ? comm_.ReduceScatterSum(b.wire, b.shard_wire) : comm_.AllReduceSum(b.wire);
  if (!w.ok()) {
    if (launch_error_.ok()) launch_error_ = w.status();
    return;
  }
  b.work = std::move(*w);
  if (!options_.shard_gradients) return;
  if (!b.wire.is_same(b.flat)) b.flat = at::Tensor();  // a compressed copy travels
  in_flight_.push_back(&b);
  while (in_flight_.size() > kInFlightBuckets && launch_error_.ok()) {
    absl::Status s = Retire(*in_flight_.front());
    in_flight_.erase(in_flight_.begin());
    if (!s.ok()) launch_error_ = s;
  }
}

absl::Status Reducer::Retire(Bucket& b) {
  if (b.work) {
    if (absl::Status s = b.work->Wait(comm_.timeout()); !s.ok()) return s;
    b.shard.add_(b.shard_wire);
  }
  b.flat = b.wire = b.shard_wire = at::Tensor();
  b.work.reset();
  return absl::OkStatus();
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
  if (options_.shard_gradients) {
    for (Bucket* b : in_flight_) {
      if (absl::Status s = Retire(*b); !s.ok()) return s;
    }
    in_flight_.clear();
  } else {
    for (auto& b : buckets_) {
      absl::Status s = b->work->Wait(comm_.timeout());
      if (!s.ok()) return s;
    }
  }
  const double done = Now();
  stats_.comm_seconds += done - first_launch_;
  stats_.exposed_seconds += done - backward_end;
  ++stats_.steps;
  if (options_.shard_gradients) return absl::OkStatus();  // the parts are summed; no gradient views
  for (auto& b : buckets_) {
    if (options_.shard) {
      if (b->shard_wire.data_ptr() != b->shard.data_ptr()) b->shard.copy_(b->shard_wire);
    } else if (!b->wire.is_same(b->flat)) {
      b->flat.copy_(b->wire);
    }
    // Gradients become views of their bucket (as DDP's gradient_as_bucket_view):
    // no copy back now, and no copy in on later steps, since the optimizer
    // zeroes them in place and autograd accumulates into them in place.
    for (const auto& [i, k] : b->members) {
      // detach(): shares the bucket's memory without being an autograd view, so
      // that the optimizer's zero_grad (which calls detach_()) accepts it.
      const Segment& seg = segments_[i][k];  // the whole parameter (only sharded gradients split one)
      at::Tensor view = b->flat.narrow(0, seg.offset, params_[i].numel()).view(params_[i].sizes()).detach();
      if (!params_[i].grad().defined() || params_[i].grad().data_ptr() != view.data_ptr()) {
        params_[i].mutable_grad() = view;
      }
    }
  }
  return absl::OkStatus();
}

std::vector<Reducer::Piece> Reducer::OwnedPieces() const {
  std::vector<Piece> out;
  if (!options_.shard) return out;
  const int64_t r = comm_.rank();
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = *buckets_[bi];
    const int64_t begin = r * b.part, end = begin + b.part;
    for (const auto& [i, k] : b.members) {
      const Segment& seg = segments_[i][k];
      const int64_t lo = std::max(seg.offset, begin), hi = std::min(seg.offset + seg.length, end);
      if (lo < hi) out.push_back({i, bi, seg.param_offset + (lo - seg.offset), lo - begin, hi - lo});
    }
  }
  return out;
}

const at::Tensor& Reducer::shard_grad(size_t bucket) const { return buckets_.at(bucket)->shard; }

void Reducer::ZeroShardGradients() {
  torch::NoGradGuard g;
  for (auto& b : buckets_) {
    if (b->shard.defined()) b->shard.zero_();
  }
}

absl::Status Reducer::GatherBuckets(const std::function<void(size_t, at::Tensor&)>& fill,
                                    const std::function<void(size_t, int64_t, const at::Tensor&)>& use) {
  torch::NoGradGuard g;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = *buckets_[bi];
    at::Tensor part = torch::zeros({b.part}, b.shard.options());
    fill(bi, part);
    std::vector<at::Tensor> parts;
    if (absl::Status s = comm_.AllGather(part, &parts); !s.ok()) return s;
    part = at::Tensor();
    const at::Tensor whole = torch::cat(parts);
    parts.clear();
    for (const auto& [i, k] : b.members) {
      const Segment& seg = segments_[i][k];
      use(i, seg.param_offset, whole.narrow(0, seg.offset, seg.length));
    }
  }
  return absl::OkStatus();
}

absl::Status Reducer::GatherParameters() {
  // Into the bucket's own buffer (its gradients are spent once the optimizer
  // has stepped; the next step zeroes them): no memory beyond it.
  torch::NoGradGuard g;
  std::vector<std::vector<Piece>> owned(buckets_.size());
  for (const Piece& p : OwnedPieces()) owned[p.bucket].push_back(p);
  const int64_t r = comm_.rank();
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = *buckets_[bi];
    // NOTE [sharded gradients]: a buffer of one bucket at a time.
    at::Tensor whole = options_.shard_gradients ? torch::empty({b.numel}, b.shard.options()) : b.flat;
    at::Tensor mine = whole.narrow(0, r * b.part, b.part);
    mine.zero_();  // the padding, if this block has any, stays zero
    for (const Piece& p : owned[bi]) {
      mine.narrow(0, p.shard_offset, p.length).copy_(params_[p.param].detach().reshape({-1}).narrow(0, p.param_offset, p.length));
    }
    if (absl::Status s = comm_.AllGatherInPlace(whole); !s.ok()) return s;
    for (const auto& [i, k] : b.members) {
      const Segment& seg = segments_[i][k];
      params_[i].detach().view({-1}).narrow(0, seg.param_offset, seg.length).copy_(whole.narrow(0, seg.offset, seg.length));
    }
  }
  return absl::OkStatus();
}

}  // namespace attune::worker::comm
