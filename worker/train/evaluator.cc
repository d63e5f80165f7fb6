#include "worker/train/evaluator.h"

#include <algorithm>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/comm/communicator.h"
#include "worker/model/bert.h"
#include "worker/train/device.h"

namespace attune::worker::train {

absl::StatusOr<eval::Metrics> Evaluate(model::BertClassifierImpl& m, const task::Task& task, int outputs,
                                       const std::vector<task::Encoded>& data, int64_t batch_size, int64_t pad_id,
                                       comm::Communicator* comm, Precision precision, const c10::Device& device) {
  torch::NoGradGuard g;
  m.eval();
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  const size_t width = static_cast<size_t>(task.RowWidth(outputs));
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
  auto sum_in_order = [](const std::vector<double>& losses) {
    double sum = 0;
    for (double l : losses) sum += l;
    return sum;
  };
  if (!comm || world == 1) return task.Compute(rows, outputs, sum_in_order(batch_losses));
  ATTUNE_ASSIGN_OR_RETURN(torch::Tensor all, comm::AllGatherVariable(*comm, torch::tensor(rows, torch::kFloat64)));
  ATTUNE_ASSIGN_OR_RETURN(torch::Tensor all_losses,
                          comm::AllGatherVariable(*comm, torch::tensor(batch_losses, torch::kFloat64)));
  all = all.contiguous();
  all_losses = all_losses.contiguous();
  const double* at = all.data_ptr<double>();
  const double* losses_at = all_losses.data_ptr<double>();
  // Rank-major order back to dataset order: batch k lives on rank k % world,
  // and each rank's rows (and losses) are its batches in order.
  const size_t n_batches = (data.size() + static_cast<size_t>(batch_size) - 1) / static_cast<size_t>(batch_size);
  if (static_cast<size_t>(all_losses.numel()) != n_batches) {
    return absl::InternalError(absl::StrCat("evaluation gathered ", all_losses.numel(), " batch losses for ",
                                            n_batches, " batches"));
  }
  std::vector<size_t> loss_start(static_cast<size_t>(world) + 1, 0);
  for (size_t k = 0; k < n_batches; ++k) ++loss_start[k % static_cast<size_t>(world) + 1];
  for (size_t r = 1; r <= static_cast<size_t>(world); ++r) loss_start[r] += loss_start[r - 1];
  std::vector<double> ordered_losses(n_batches);
  for (size_t k = 0; k < n_batches; ++k) {
    ordered_losses[k] = losses_at[loss_start[k % static_cast<size_t>(world)] + k / static_cast<size_t>(world)];
  }
  auto rows_in = [&](size_t k) {
    return std::min(data.size(), (k + 1) * static_cast<size_t>(batch_size)) - k * static_cast<size_t>(batch_size);
  };
  std::vector<size_t> rank_start(static_cast<size_t>(world) + 1, 0);
  for (size_t k = 0; k < n_batches; ++k) rank_start[k % static_cast<size_t>(world) + 1] += rows_in(k);
  for (size_t r = 1; r <= static_cast<size_t>(world); ++r) rank_start[r] += rank_start[r - 1];
  std::vector<size_t> taken(static_cast<size_t>(world), 0);
  std::vector<double> ordered;
  ordered.reserve(data.size() * width);
  for (size_t k = 0; k < n_batches; ++k) {
    const size_t r = k % static_cast<size_t>(world);
    const size_t first = rank_start[r] + taken[r];
    ordered.insert(ordered.end(), at + first * width, at + (first + rows_in(k)) * width);
    taken[r] += rows_in(k);
  }
  return task.Compute(ordered, outputs, sum_in_order(ordered_losses));
}

}  // namespace attune::worker::train
