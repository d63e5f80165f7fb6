#pragma once

// The sweep planner: pure and deterministic, like Schedule(). Given a sweep's
// config and its trials so far, it says which trials to start, which to stop
// early, and what ASHA records at its rungs. The SweepManager applies it.
//
// Planning protocol (one call per coordinator tick):
//   1. ASHA: for every trial, in index order, and every rung it has reached
//      (an evaluation at or after grace_steps * reduction_factor^k, below
//      max_steps) but not yet recorded: compare its objective there with the
//      values recorded at that rung so far (Ray Tune's AsyncHyperBand): a live
//      trial below the (1 - 1/reduction_factor) quantile of them is stopped.
//      Then its value is recorded, so later trials compare against it.
//   2. Median (Katib's medianstop): once min_trials trials completed, a live
//      trial whose best objective at its latest evaluation step is worse
//      than the median of the completed trials' running averages up to that
//      step is stopped.
//   3. Trials are started in index order while fewer than parallel_trials
//      are live and fewer than max_trials exist (none once cancelled).
//   4. The sweep is finished when every trial it will ever have has ended.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/sweep/types.h"

namespace attune::coordinator::sweep {

// Trial `index`'s parameters (path -> JSON literal): a function of the
// config's parameters, algorithm and seed and of `index` alone, so a sweep
// resubmitted with the same seed tries the same points in the same order.
std::map<std::string, std::string> TrialParameters(const SweepConfig& c, int64_t index);

// The number of points of a grid over `c.params` (choices and int ranges);
// -1 when a parameter is continuous.
int64_t GridSize(const SweepConfig& c);

// How many trials the sweep runs in all.
int64_t TrialCount(const SweepConfig& c);

// The ASHA rungs, in steps, ascending.
std::vector<int64_t> AshaRungs(const EarlyStopConfig& e);

// Structural checks of a sweep config (not of the trial specs, which the job
// manager validates). kInvalidArgument names each bad field.
absl::Status ValidateSweepConfig(const SweepConfig& c);

struct RungRecord {
  int64_t trial = 0;
  int64_t rung_step = 0;
  double value = 0;
};

struct StopDecision {
  int64_t trial = 0;
  std::string reason;
};

struct Plan {
  std::vector<int64_t> start;      // trial indices to submit now, ascending
  std::vector<RungRecord> record;  // ASHA values to record, in decision order
  std::vector<StopDecision> stop;
  bool finished = false;
};

// `trials` are indexed 0..n-1 (trials[i].index == i). `cancelled`: start
// nothing more; finished once every trial has ended.
Plan PlanSweep(const SweepConfig& c, const std::vector<TrialRecord>& trials, bool cancelled);

}  // namespace attune::coordinator::sweep
