#pragma once

// The optimizer of a run: AdamW with decoupled weight decay over the
// parameters the method trains, biases and normalisation weights in a group
// of their own without decay (as Hugging Face's Trainer does; chosen by
// module kind: NOTE [no weight decay by kind] in worker/model/module_kinds.h).

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "common/job_config.h"
#include "worker/model/model.h"

namespace attune::worker::train {

struct OptimizerSetup {
  std::unique_ptr<torch::optim::AdamW> optimizer;
  // The trained parameters: the decayed group's, then the other's (gradient
  // clipping runs over these).
  std::vector<torch::Tensor> trainable;
  size_t decayed = 0;  // how many of `trainable` come first, in the decayed group
};

// From the spec's learning_rate, adam_beta1/2, adam_epsilon and weight_decay.
// Frozen parameters (requires_grad false) are left out.
OptimizerSetup MakeAdamW(model::Model& model, const common::JobConfig& c);
// AdamW over two groups, `decay` (the spec's weight_decay) and `no_decay`.
std::unique_ptr<torch::optim::AdamW> MakeAdamWGroups(std::vector<torch::Tensor> decay, std::vector<torch::Tensor> no_decay,
                                                     const common::JobConfig& c);

// Moves AdamW's state to each parameter's device (checkpoints load into host memory).
void PlaceStateWithParameters(torch::optim::AdamW& opt);

// Sets every parameter group's learning rate (the schedule's value for this step).
void SetLearningRate(torch::optim::AdamW& opt, double lr);

}  // namespace attune::worker::train
