#pragma once

// A Task owns what differs between learning problems that share the BERT
// encoder: how labels are read, the head's outputs, the label tensor, the
// loss, the evaluation rows and metrics, the trivial baseline and the
// prediction line. The engine (worker/train), the encoder and PEFT
// (worker/model) and the communicator stay task-agnostic.
//
// Implemented: sequence_classification, multi_label_classification and
// sequence_regression (one head: pooler + linear, with HF's problem_type).
// Tasks are immutable after MakeTask, so thread-safe.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/task_catalog.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"

namespace attune::worker::task {

// One tokenised example with its label in every form a task may use.
struct Encoded {
  std::vector<int64_t> ids, types;
  int label = -1;           // sequence_classification
  std::vector<int> labels;  // multi_label_classification: class ids
  double value = 0;         // sequence_regression
};

// A trivial predictor's figures on the evaluation set, so that every report
// says what the model must beat.
struct Baseline {
  std::string description;
  std::map<std::string, double> metrics;
};

class Task {
 public:
  virtual ~Task() = default;

  virtual const common::TaskInfo& info() const = 0;
  const std::string& name() const { return info().name; }

  // Data. What a label is, and whether a label map fits the task (kInvalidArgument naming `source` if not).
  virtual data::LabelKind label_kind() const = 0;
  virtual absl::Status CheckLabels(const data::LabelMap& labels, const std::string& source) const = 0;

  // Head. Outputs (HF num_labels) and their id2label names; HF problem_type.
  virtual std::vector<std::string> OutputNames(const data::LabelMap& labels) const = 0;
  virtual std::string problem_type() const = 0;

  // Training. The label tensor of `batch` for a head of `outputs` outputs,
  // and the loss summed over the batch. The engine divides the summed loss by
  // the step's examples times LossUnitsPerExample(), which every rank knows
  // without a collective, so that accumulation equals a larger batch exactly.
  virtual at::Tensor Targets(const std::vector<const Encoded*>& batch, int outputs) const = 0;
  virtual at::Tensor SummedLoss(const at::Tensor& logits, const at::Tensor& targets) const = 0;
  virtual int64_t LossUnitsPerExample(int outputs) const { return 1; }

  // Evaluation. Each example becomes RowWidth() doubles (its target and the
  // model's scores), so that rows gathered from every rank in dataset order
  // give the same metrics for any world size.
  virtual int RowWidth(int outputs) const = 0;
  virtual void AppendRows(const at::Tensor& logits, const at::Tensor& targets, std::vector<double>* rows) const = 0;
  virtual eval::Metrics Compute(const std::vector<double>& rows, int outputs, double loss_sum) const = 0;
  virtual Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                                   int outputs) const = 0;

  // Prediction. One output line for one example's logits.
  virtual nlohmann::json PredictLine(const std::vector<double>& logits, const std::vector<std::string>& names) const = 0;
};

// The task named `name` (empty: sequence_classification), or null.
std::unique_ptr<Task> MakeTask(const std::string& name);

// The task of an exported model, from its HF problem_type.
std::unique_ptr<Task> TaskForProblemType(const std::string& problem_type);

}  // namespace attune::worker::task
