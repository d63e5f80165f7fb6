#pragma once

// The training engine of one rank, in phases (NOTE [engine phases]):
//   Setup()     device, checkpoints, task, data, tokenizer, model and method,
//               AdamW, a resumed state, every rank starting from rank 0's weights;
//   Step()      one optimizer step, with the evaluation, checkpoint and stop
//               that fall on it, and the end of an epoch when the step ends one;
//   Evaluate()  the validation set now, recorded as this step's evaluation;
//   Finish()    the last evaluation, the baselines, the export, the final barrier.
// RunTraining (trainer.h) is Setup, Step until Done, Finish; tests drive the
// phases in-process, several ranks on comm::FakeGroup. One Engine per rank,
// used from one thread. Libtorch's exceptions stop at these methods: each
// returns a Status.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "worker/comm/communicator.h"
#include "worker/comm/reducer.h"
#include "worker/data/dataset.h"
#include "worker/eval/metrics.h"
#include "worker/model/model.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"
#include "worker/train/answer_eval.h"
#include "worker/train/checkpointer.h"
#include "worker/train/loop_state.h"
#include "worker/train/precision.h"
#include "worker/train/schedule.h"
#include "worker/train/trainer.h"

namespace attune::worker::train {

class ShardedAdamW;  // worker/train/sharded_optimizer.h

// The data of a run: loaded, cleaned, labelled and split.
struct PreparedData {
  std::vector<data::Example> train, validation;
  data::LabelMap labels;
  std::string report_json;  // data_report.json
};

class Engine {
 public:
  // `o` and `obs` (may be null) must outlive the engine.
  Engine(const common::JobConfig& c, const TrainerOptions& o, TrainerObserver* obs);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  absl::Status Setup();
  // True once training is over: the schedule's last step, early stopping,
  // the last epoch, or evaluation only. Then Finish.
  bool Done() const;
  // kCancelled after a stop request (every rank stops at the same step; rank
  // 0 has committed a checkpoint of it), kFailedPrecondition on a non-finite
  // loss or gradient norm, kAborted from the test hook.
  absl::Status Step();
  absl::StatusOr<eval::Metrics> Evaluate();
  absl::StatusOr<TrainResult> Finish();

  const LoopState& state() const { return s_; }
  int64_t total_steps() const { return total_; }
  // Null before Setup.
  model::Model* model() { return model_.get(); }

 private:
  using Clock = std::chrono::steady_clock;

  absl::Status DoSetup();
  absl::Status DoStep();
  absl::StatusOr<TrainResult> DoFinish();
  absl::Status OpenEpoch();
  absl::Status EndEpoch();
  absl::Status EvaluateAt(double epoch);
  // evaluation.generate and .multiple_choice into `m` (answer_eval.h).
  absl::Status EvaluateAnswersInto(eval::Metrics* m);
  absl::Status WriteCheckpoint(const LoopState& s);
  double EpochFraction() const;
  bool StopRequested() const { return o_.stop_requested != nullptr && o_.stop_requested->load(); }

  common::JobConfig c_;  // a copy: label order may be taken from the checkpoint
  const TrainerOptions& o_;
  TrainerObserver* obs_;
  comm::Communicator* comm_;
  const int rank_, world_;
  bool set_up_ = false;

  Precision precision_ = Precision::kFp32;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<task::Task> task_;
  PreparedData data_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  int outputs_ = 0;
  int64_t loss_units_ = 0;
  std::vector<task::Encoded> train_, val_;
  model::ModelPtr model_;  // NOTE [model interface]
  model::ParameterCounts counts_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  std::vector<torch::Tensor> trainable_;  // what gradient clipping covers
  std::unique_ptr<data::EpochSampler> sampler_;
  std::unique_ptr<comm::Reducer> reducer_;
  std::unique_ptr<ShardedAdamW> sharded_;  // workers.sharding: optimizer, on 2+ ranks; opt_ then only carries checkpoints

  // The schedule.
  int64_t accum_ = 1, steps_per_epoch_ = 0, total_ = 0, warmup_ = 0;
  bool es_on_ = false;
  std::optional<EarlyStopping> stopper_;
  int64_t mask_id_ = -1;

  // Where the run is.
  LoopState s_;
  ParamSnapshot best_;  // the best evaluation's weights, on every rank (early stopping)
  std::optional<eval::Metrics> latest_;  // this run's last evaluation, at s_.last_eval_step
  AnswerEvalSet answers_;                // evaluation.generate, evaluation.multiple_choice
  eval::AnswerSummary answer_summary_;   // of the last evaluation that answered
  std::string stop_reason_ = "completed";
  bool stop_ = false;
  bool epoch_open_ = false;  // the sampler is inside s_.sampler.epoch
  Clock::time_point run_start_, window_start_;
  int64_t start_step_ = 0, samples_seen_ = 0;
  double window_loss_ = 0;
  int64_t window_n_ = 0, window_samples_ = 0, window_tokens_ = 0;
  TrainResult result_;
};

}  // namespace attune::worker::train
