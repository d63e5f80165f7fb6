#include "worker/train/evaluator.h"

#include <algorithm>

#include <torch/torch.h>

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
  double loss_sum = 0;
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
    loss_sum += task.SummedLoss(logits, b.targets).item<double>();
    task.AppendRows(logits, b, &rows);
  }
  m.train();
  if (!comm || world == 1) return task.Compute(rows, outputs, loss_sum);
  torch::Tensor sum = torch::tensor(std::vector<double>{loss_sum}, torch::kFloat64);
  ATTUNE_RETURN_IF_ERROR(comm::AllReduceSumBlocking(*comm, sum));
  ATTUNE_ASSIGN_OR_RETURN(torch::Tensor all, comm::AllGatherVariable(*comm, torch::tensor(rows, torch::kFloat64)));
  all = all.contiguous();
  const double* at = all.data_ptr<double>();
  // Rank-major order back to dataset order: batch k lives on rank k % world,
  // and each rank's rows are its batches in order.
  const size_t n_batches = (data.size() + static_cast<size_t>(batch_size) - 1) / static_cast<size_t>(batch_size);
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
  return task.Compute(ordered, outputs, sum.item<double>());
}

}  // namespace attune::worker::train
