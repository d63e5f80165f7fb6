#include "worker/train/evaluator.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/model/model.h"
#include "worker/train/device.h"

namespace attune::worker::train {

absl::StatusOr<std::vector<double>> GatherInItemOrder(comm::Communicator* comm, const std::vector<double>& local,
                                                      size_t items, size_t batch_size, size_t width) {
  if (comm == nullptr || comm->world_size() == 1) return local;
  ATTUNE_ASSIGN_OR_RETURN(torch::Tensor gathered,
                          comm::AllGatherVariable(*comm, torch::tensor(local, torch::kFloat64)));
  gathered = gathered.contiguous();
  const size_t ranks = static_cast<size_t>(comm->world_size());
  const size_t n_batches = (items + batch_size - 1) / batch_size;
  const auto size = [&](size_t k) { return (std::min(items, (k + 1) * batch_size) - k * batch_size) * width; };
  // Rank-major order back to batch order: batch k lives on rank k % world,
  // and each rank's values are its batches' in order.
  std::vector<size_t> next(ranks + 1, 0);  // where each rank's next batch starts
  for (size_t k = 0; k < n_batches; ++k) next[k % ranks + 1] += size(k);
  for (size_t r = 1; r <= ranks; ++r) next[r] += next[r - 1];
  if (static_cast<size_t>(gathered.numel()) != next[ranks]) {
    return absl::InternalError(absl::StrCat("evaluation gathered ", gathered.numel(), " values where ", n_batches,
                                            " batches hold ", next[ranks]));
  }
  const double* at = gathered.data_ptr<double>();
  std::vector<double> out;
  out.reserve(next[ranks]);
  for (size_t k = 0; k < n_batches; ++k) {
    size_t& from = next[k % ranks];
    out.insert(out.end(), at + from, at + from + size(k));
    from += size(k);
  }
  return out;
}

absl::StatusOr<EvaluatedRows> EvaluateRows(model::Model& m, const task::Task& task, int outputs,
                                           const std::vector<task::Encoded>& data, int64_t batch_size, int64_t pad_id,
                                           comm::Communicator* comm, Precision precision, const c10::Device& device) {
  torch::NoGradGuard g;
  m.eval();
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  std::vector<double> rows;
  // One summed loss per batch, added up in batch order at the end: a sum per
  // rank followed by a sum over ranks would round differently for each world
  // size.
  std::vector<double> batch_losses;
  size_t batch_no = 0;
  for (size_t start = 0; start < data.size(); start += static_cast<size_t>(batch_size), ++batch_no) {
    if (static_cast<int>(batch_no % static_cast<size_t>(world)) != rank) continue;
    std::vector<int64_t> idx;
    for (size_t i = start; i < std::min(data.size(), start + static_cast<size_t>(batch_size)); ++i) {
      idx.push_back(static_cast<int64_t>(i));
    }
    task::CollateContext ctx;
    ctx.pad_id = pad_id;
    ctx.train = false;
    task::Batch b = task.Collate(data, idx, ctx, outputs);
    torch::Tensor logits;
    {
      AutocastScope autocast(precision, device.is_cuda());
      logits = task.Forward(m, OnDevice(b, device));
    }
    logits = logits.to(torch::kCPU).to(torch::kFloat64);
    batch_losses.push_back(task.SummedLoss(logits, b.targets).item<double>());
    task.AppendRows(logits, b, &rows);
  }
  m.train();
  const size_t n_batches = (data.size() + static_cast<size_t>(batch_size) - 1) / static_cast<size_t>(batch_size);
  EvaluatedRows out;
  ATTUNE_ASSIGN_OR_RETURN(out.rows, GatherInItemOrder(comm, rows, data.size(), static_cast<size_t>(batch_size),
                                                      static_cast<size_t>(task.RowWidth(outputs))));
  ATTUNE_ASSIGN_OR_RETURN(const std::vector<double> losses, GatherInItemOrder(comm, batch_losses, n_batches, 1, 1));
  out.loss_sum = std::accumulate(losses.begin(), losses.end(), 0.0);
  return out;
}

absl::StatusOr<eval::Metrics> Evaluate(model::Model& m, const task::Task& task, int outputs,
                                       const std::vector<task::Encoded>& data, int64_t batch_size, int64_t pad_id,
                                       comm::Communicator* comm, Precision precision, const c10::Device& device) {
  ATTUNE_ASSIGN_OR_RETURN(EvaluatedRows r,
                          EvaluateRows(m, task, outputs, data, batch_size, pad_id, comm, precision, device));
  return task.Compute(r.rows, outputs, r.loss_sum);
}

}  // namespace attune::worker::train
