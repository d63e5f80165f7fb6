#include "worker/train/sharded_optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/comm/torch_logging.h"
#include "worker/train/optimizer.h"

namespace attune::worker::train {
namespace {

// The key torch::optim keeps a parameter's state under.
std::string StateKey(const torch::Tensor& t) { return c10::guts::to_string(t.unsafeGetTensorImpl()); }

}  // namespace

absl::StatusOr<std::unique_ptr<ShardedAdamW>> ShardedAdamW::Create(const std::vector<torch::Tensor>& trainable,
                                                                   const std::vector<bool>& decays,
                                                                   comm::Reducer& reducer,
                                                                   comm::Communicator& comm,
                                                                   const common::JobConfig& c) {
  for (const auto& t : trainable) {
    if (!t.is_contiguous()) return absl::FailedPreconditionError("workers.sharding: a trained parameter is not contiguous");
  }
  std::unique_ptr<ShardedAdamW> s(new ShardedAdamW(trainable, reducer, comm));
  s->pieces_ = reducer.OwnedPieces();
  std::vector<torch::Tensor> decay, no_decay;
  for (const comm::Reducer::Piece& p : s->pieces_) {
    torch::Tensor view = trainable[p.param].detach().view({-1}).narrow(0, p.param_offset, p.length);
    view.mutable_grad() = reducer.shard_grad(p.bucket).narrow(0, p.shard_offset, p.length);
    (decays.at(p.param) ? decay : no_decay).push_back(view);
    s->views_.push_back(view);
    s->owned_ += p.length;
  }
  s->opt_ = MakeAdamWGroups(decay, no_decay, c);
  int64_t total = 0;
  for (const auto& t : trainable) total += t.numel();
  LOG(INFO) << absl::StrFormat("job=%s rank=%d sharding %s: AdamW state for %d of %d trained elements (%.1f%%)", c.name,
                               comm.rank(), c.sharding, s->owned_, total, 100.0 * s->owned_ / std::max<int64_t>(1, total));
  return s;
}

void ShardedAdamW::SetLearningRate(double lr) { train::SetLearningRate(*opt_, lr); }

absl::StatusOr<double> ShardedAdamW::ClipGradNorm(double max_norm) {
  torch::NoGradGuard g;
  double local = 0;
  for (size_t b = 0; b < reducer_.bucket_count(); ++b) {
    const double n = reducer_.shard_grad(b).norm().item<double>();  // no temporary the size of the part
    local += n * n;
  }
  torch::Tensor sum = torch::tensor(std::vector<double>{local}, torch::kFloat64);
  if (absl::Status s = comm::AllReduceSumBlocking(comm_, sum); !s.ok()) return s;
  const double norm = std::sqrt(sum.item<double>());
  VLOG(1) << "rank=" << comm_.rank() << " gradient norm " << norm;
  // As torch::nn::utils::clip_grad_norm_: scaled by max_norm / (norm + 1e-6) when that is below 1.
  const double coef = max_norm / (norm + 1e-6);
  if (max_norm > 0 && coef < 1) {
    for (size_t b = 0; b < reducer_.bucket_count(); ++b) reducer_.shard_grad(b).mul_(coef);
  }
  return norm;
}

absl::Status ShardedAdamW::Step() {
  opt_->step();
  reducer_.ZeroShardGradients();  // NOTE [sharded gradients]: they accumulate until a step
  return reducer_.GatherParameters();
}

absl::Status ShardedAdamW::ExportTo(torch::optim::AdamW& full) {
  // Every rank takes part whatever its own state (a rank that resumed nothing
  // still gathers); a parameter with no state anywhere is left out, as an
  // unsharded AdamW leaves out one it never stepped.
  torch::NoGradGuard g;
  const bool keep = comm_.rank() == 0;
  auto& state = opt_->state();
  // Each parameter's AdamW step: the largest any rank's pieces of it have
  // (0: no state anywhere, which an unsharded checkpoint leaves out too).
  torch::Tensor mine = torch::zeros({static_cast<int64_t>(trainable_.size())}, torch::kFloat64);
  auto mine_a = mine.accessor<double, 1>();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    auto it = state.find(StateKey(views_[k]));
    if (it == state.end()) continue;
    const double step = static_cast<double>(static_cast<const torch::optim::AdamWParamState&>(*it->second).step());
    mine_a[static_cast<int64_t>(pieces_[k].param)] = std::max(mine_a[static_cast<int64_t>(pieces_[k].param)], step);
  }
  std::vector<torch::Tensor> every;
  if (absl::Status s = comm_.AllGather(mine, &every); !s.ok()) return s;
  std::vector<int64_t> steps(trainable_.size(), 0);
  for (const auto& t : every) {
    for (size_t i = 0; i < steps.size(); ++i) steps[i] = std::max(steps[i], static_cast<int64_t>(t[static_cast<int64_t>(i)].item<double>()));
  }
  std::vector<std::vector<size_t>> by_bucket(reducer_.bucket_count());
  for (size_t k = 0; k < pieces_.size(); ++k) by_bucket[pieces_[k].bucket].push_back(k);
  // The whole state is built in host memory (8 bytes a parameter on rank 0
  // while the checkpoint is written), never on a GPU that fits only a part.
  std::vector<torch::Tensor> avg(keep ? trainable_.size() : 0), sq(keep ? trainable_.size() : 0);
  for (size_t i = 0; keep && i < trainable_.size(); ++i) {
    avg[i] = torch::zeros(trainable_[i].sizes(), torch::TensorOptions().dtype(trainable_[i].dtype()));
    sq[i] = torch::zeros_like(avg[i]);
  }
  for (bool second : {false, true}) {
    absl::Status s = reducer_.GatherBuckets(
        [&](size_t b, at::Tensor& part) {
          for (size_t k : by_bucket[b]) {
            auto it = state.find(StateKey(views_[k]));
            if (it == state.end()) continue;
            const auto& ps = static_cast<const torch::optim::AdamWParamState&>(*it->second);
            part.narrow(0, pieces_[k].shard_offset, pieces_[k].length).copy_(second ? ps.exp_avg_sq() : ps.exp_avg());
          }
        },
        [&](size_t i, int64_t offset, const at::Tensor& values) {
          if (keep) (second ? sq : avg)[i].view({-1}).narrow(0, offset, values.numel()).copy_(values);
        });
    if (!s.ok()) return s;
  }
  for (size_t i = 0; keep && i < trainable_.size(); ++i) {
    if (steps[i] == 0) continue;
    auto ps = std::make_unique<torch::optim::AdamWParamState>();
    ps->step(steps[i]);
    ps->exp_avg(avg[i]);
    ps->exp_avg_sq(sq[i]);
    full.state()[StateKey(trainable_[i])] = std::move(ps);
  }
  return absl::OkStatus();
}

void ShardedAdamW::ImportFrom(torch::optim::AdamW& full) {
  torch::NoGradGuard g;
  auto& from = full.state();
  auto& state = opt_->state();
  state.clear();
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const comm::Reducer::Piece& p = pieces_[k];
    auto it = from.find(StateKey(trainable_[p.param]));
    if (it == from.end()) continue;
    const auto& ps = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    const auto on = views_[k].device();
    auto mine = std::make_unique<torch::optim::AdamWParamState>();
    mine->step(ps.step());
    mine->exp_avg(ps.exp_avg().reshape({-1}).narrow(0, p.param_offset, p.length).to(on, /*non_blocking=*/false, /*copy=*/true));
    mine->exp_avg_sq(ps.exp_avg_sq().reshape({-1}).narrow(0, p.param_offset, p.length).to(on, false, true));
    state[StateKey(views_[k])] = std::move(mine);
  }
}

}  // namespace attune::worker::train
