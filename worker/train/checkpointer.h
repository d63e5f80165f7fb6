#pragma once

// A training run's checkpoints: committing one (weights, optimizer, RNG, loop
// state, and the best evaluation's weights when they are not this step's)
// under the output directory's lease, and resuming from the newest committed
// checkpoint that loads (NOTE [resume]). The files and their manifest are
// common/checkpoint.h's; this adds what they hold.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/checkpoint.h"
#include "worker/model/model.h"
#include "worker/train/loop_state.h"

namespace attune::worker::train {

// Named copies of a model's parameters (NOTE [best weights in memory]).
using ParamSnapshot = std::vector<std::pair<std::string, torch::Tensor>>;
ParamSnapshot SnapshotParams(model::Model& m);
absl::Status RestoreParams(model::Model& m, const ParamSnapshot& snap);
// Writes named tensors (a snapshot, or a model's live parameters) as safetensors.
absl::Status SaveTensors(const ParamSnapshot& tensors, const std::string& path);

struct CheckpointerOptions {
  std::string output_dir;  // checkpoints go to <output_dir>/checkpoints
  int keep_last = 2;
  common::Owner owner;      // the attempt writing (NOTE [generation lease]); empty by hand
  std::string resume_from;  // checkpoint.resume_from: another output_dir a new job may start from
  bool overwrite = false;   // checkpoint.overwrite: discard another job's checkpoints
  std::string job_name;     // for logs
  int rank = 0;
  // Staged path -> the spec's (JobConfig::staged_inputs): logs name the user's paths.
  std::map<std::string, std::string> shown_paths;
};

// What a run's weights mean; a checkpoint of another meaning is refused.
struct WeightsMeaning {
  std::vector<std::string> labels;  // the head's outputs
  std::string vocab_fingerprint;
};

// FNV-1a over the vocabulary, one token per line: the fingerprint recorded in checkpoints.
std::string VocabularyFingerprint(const std::vector<std::string>& vocab);

class Checkpointer {
 public:
  explicit Checkpointer(CheckpointerOptions options);

  // Creates <output_dir>/checkpoints.
  absl::Status Prepare() const;

  // Rank 0: writes and commits the checkpoint of step `s.step`, carrying
  // `best` as best.safetensors when s.best_step is an earlier step. Refused
  // (kFailedPrecondition, nothing written) when a newer attempt holds the
  // lease; on any failure the temporary directory is removed. Returns the
  // committed directory.
  absl::StatusOr<std::string> Write(const LoopState& s, model::Model& model, torch::optim::Optimizer& opt,
                                    const ParamSnapshot& best) const;

  // Loads the newest committed checkpoint that verifies and loads into the
  // model, the optimizer, the default CPU generator and `*s` (and the best
  // weights into `*best`); an older one when a newer one's files fail to load
  // (kDataLoss). Returns false when there is nothing to resume. A checkpoint
  // of another job is refused unless checkpoint.resume_from or .overwrite say
  // otherwise (NOTE [owned outputs]); one of another label map or vocabulary
  // is refused with both named.
  absl::StatusOr<bool> Resume(const WeightsMeaning& meaning, model::Model& model,
                              torch::optim::Optimizer& opt, LoopState* s, ParamSnapshot* best) const;

  const std::string& root() const { return root_; }
  // Where rank 0 keeps a copy of the best weights for people (best/model.safetensors).
  const std::string& best_path() const { return best_path_; }

 private:
  absl::Status ResumeFrom(const std::string& dir, const WeightsMeaning& meaning, model::Model& model,
                          torch::optim::Optimizer& opt, LoopState* s, ParamSnapshot* best) const;

  CheckpointerOptions o_;
  std::string root_, best_path_;
};

}  // namespace attune::worker::train
