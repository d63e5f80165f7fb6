#pragma once

// Evaluation of a model on a dataset, exact for any world size.

#include <cstdint>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/eval/metrics.h"
#include "worker/task/task.h"
#include "worker/train/precision.h"

namespace attune::worker::comm {
class Communicator;
}
namespace attune::worker::model {
class Model;
}

namespace attune::worker::train {

// Runs the model over `data` without padding rows or dropping any. With a
// communicator, rank r takes every world-th batch (so batch composition, and
// hence every logit, is the same for any world size); each example becomes
// the task's row of doubles (target and scores), the rows are gathered and put
// back in dataset order, and the per-batch loss sums are gathered and added
// in batch order, so that every rank computes the same metrics, bit for bit,
// whatever the world size.
// The model is left in training mode.
// With kBf16 the forward pass runs under autocast (NOTE [mixed precision]).
// The forward pass runs on `device` (the model's); rows, loss sums and the
// reductions are on the CPU.
// Evaluate's rows (the task's RowWidth per example, in dataset order) and
// summed loss, the same on every rank.
struct EvaluatedRows {
  std::vector<double> rows;
  double loss_sum = 0;
};
absl::StatusOr<EvaluatedRows> EvaluateRows(model::Model& m, const task::Task& task, int outputs,
                                           const std::vector<task::Encoded>& data, int64_t batch_size, int64_t pad_id,
                                           comm::Communicator* comm, Precision precision = Precision::kFp32,
                                           const c10::Device& device = c10::Device(c10::kCPU));

// Values computed for `items` items in batches of `batch_size` (batch k on
// rank k % world, `width` values per item, each rank's in its batches'
// order), gathered from every rank and put back in item order. Without a
// communicator (or with one rank) `local` is returned as it is.
absl::StatusOr<std::vector<double>> GatherInItemOrder(comm::Communicator* comm, const std::vector<double>& local,
                                                      size_t items, size_t batch_size, size_t width);

absl::StatusOr<eval::Metrics> Evaluate(model::Model& m, const task::Task& task, int outputs,
                                       const std::vector<task::Encoded>& data, int64_t batch_size, int64_t pad_id,
                                       comm::Communicator* comm, Precision precision = Precision::kFp32,
                                       const c10::Device& device = c10::Device(c10::kCPU));

}  // namespace attune::worker::train
