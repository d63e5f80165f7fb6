#pragma once

// The training engine: data -> tokenizer -> BERT + method -> AdamW ->
// evaluation -> checkpoints -> export. Torch stays inside trainer.cc so that
// callers (the worker binary, the agent) compile without libtorch headers.

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint.h"
#include "common/job_config.h"
#include "worker/eval/metrics.h"
#include "worker/eval/report.h"
#include "worker/model/word_vectors.h"

namespace attune::worker::comm {
class Communicator;
}

namespace attune::worker::train {

struct StepEvent {
  int64_t step = 0, total_steps = 0;
  double epoch = 0;
  double loss = 0, learning_rate = 0;
  double samples_per_second = 0, tokens_per_second = 0;  // global, over the log window
  double step_seconds = 0;  // this step, this rank: the sum of the phases below
  // Where this rank's step went. backward includes allreduce that overlapped
  // it; allreduce is only the part that was not hidden (waiting after backward
  // for buckets, plus the loss reduction).
  double data_seconds = 0, forward_seconds = 0, backward_seconds = 0, allreduce_seconds = 0, optimizer_seconds = 0;
  int64_t samples = 0, tokens = 0;  // this rank's share of the step
  // Gradient reduction in this step (0 for one process): first bucket
  // launched to last bucket done, of it the part exposed after backward, and
  // the bytes each rank sent into the reduction.
  double reduce_seconds = 0, reduce_exposed_seconds = 0;
  int64_t reduce_bytes = 0;
  double last_collective_unix_seconds = 0;  // wall time the last collective completed (0: none)
};

// Receives progress. Called on the training thread; must not block for long.
class TrainerObserver {
 public:
  virtual ~TrainerObserver() = default;
  virtual void OnStep(const StepEvent&) {}
  virtual void OnEval(int64_t step, const eval::Metrics&) {}
  virtual void OnCheckpoint(int64_t step, const std::string& dir, double seconds) {}
  // Rank 0: the TF-IDF + logistic regression baseline, once fitted.
  virtual void OnBaseline(const eval::BaselineFigures&) {}
  // The loss or gradient norm of step `step` was NaN or infinite; training stops.
  virtual void OnNonFinite(int64_t step) {}
};

struct TrainerOptions {
  // Null for a single process. Otherwise rank and world size come from it,
  // and it must outlive RunTraining.
  comm::Communicator* communicator = nullptr;
  int64_t bucket_cap_bytes = 25 * 1000 * 1000;
  std::string gradient_compression = "none";  // none | fp16 | bf16
  bool overlap = true;
  bool resume = true;          // continue from the newest committed checkpoint
  bool eval_only = false;      // evaluate the model as loaded, train nothing
  int log_every_steps = 10;
  // Test hook: stop with kAborted right after this optimizer step (0: off), to
  // model a crash between checkpoints.
  int64_t abort_after_step = 0;
  // Set from a SIGTERM handler: every rank finishes the current optimizer
  // step, rank 0 writes a checkpoint, and RunTraining returns kCancelled. Ranks
  // agree on it through the per-step loss reduction, so none is left waiting.
  const std::atomic<bool>* stop_requested = nullptr;
  // The job attempt this training is (from the agent); empty when run by
  // hand. Rank 0 holds the output directory's lease for it (NOTE [generation
  // lease] in common/checkpoint.h) and stops, fenced, when a newer attempt
  // takes it.
  common::Owner owner;
  // The spec as given (its text), recorded in the HTML report.
  std::string spec_text;
  // Where this rank computes: "cpu", "cuda" or "cuda:N"; empty: a GPU when
  // the spec asks for workers.gpus_per_rank > 0, else the CPU (device.h).
  std::string device;
  // Where model.init_embeddings tables are installed (<dir>/<name>/).
  std::string embeddings_dir = "/usr/local/share/attune/embeddings";
};

struct TrainResult {
  eval::Metrics final_metrics;
  std::vector<std::string> label_names;
  int64_t steps = 0;
  int64_t best_step = -1;
  int64_t resumed_from_step = -1;
  std::string stop_reason;
  std::string model_dir;
  int64_t trainable_parameters = 0, total_parameters = 0;
  // Baselines on the evaluation set (rank 0 only): the task's trivial
  // predictor and, for classification with evaluation.baseline on, TF-IDF +
  // logistic regression.
  eval::BaselineFigures trivial_baseline;
  std::optional<eval::BaselineFigures> reference_baseline;
  // Distributed runs: the reducer's figures.
  double allreduce_hidden_fraction = 0;
  double allreduce_seconds_per_step = 0;
  int64_t allreduce_bytes_per_step = 0;
  double train_samples_per_second = 0;  // global, over the whole run
  // model.init_embeddings: how much of the vocabulary the vectors covered.
  std::optional<model::WordVectorCoverage> init_embeddings;
};

// Runs one training to the end. Errors: kInvalidArgument (bad data, spec or
// checkpoint), kNotFound (missing input), kFailedPrecondition (non-finite
// loss: retrying will not help), kAborted (interrupted).
absl::StatusOr<TrainResult> RunTraining(const common::JobConfig& config, const TrainerOptions& options,
                                        TrainerObserver* observer);

// Process-wide memory settings for training, called once by a binary's
// main(). NOTE [allocator churn]: every step allocates and frees the same
// multi-megabyte activations. With glibc's default mmap threshold those come
// from fresh mmap()s, and the page faults (expensive under a hypervisor) cost
// about half the step time on a BERT-mini. Keeping blocks up to 32 MiB on the
// heap, and not trimming it, removes them. Returns a line for the log.
std::string ConfigureAllocatorForTraining();

// Applies the per-rank thread settings: intra-op threads and OpenBLAS's own
// pool (found at run time). Returns a line describing what was set.
std::string ConfigureThreads(int threads);

}  // namespace attune::worker::train
