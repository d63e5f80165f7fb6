#include "coordinator/sweep/sweep_manager.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <random>

#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/spec_path.h"
#include "coordinator/sweep/planner.h"
#include "coordinator/sweep/report.h"

namespace attune::coordinator::sweep {
namespace {

using nlohmann::json;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// NOTE [sweeps]: the labels and idempotency key that tie a job to its trial.
constexpr char kSweepLabel[] = "attune.dev/sweep";
constexpr char kTrialLabel[] = "attune.dev/trial";

std::string TrialKey(const std::string& sweep_id, int64_t index) {
  return absl::StrCat("sweep:", sweep_id, ":trial:", index);
}

// The values probed at submit for one parameter: every choice (at most 50),
// or a range's two ends.
std::vector<std::string> ProbeValues(const ParamDomain& p) {
  std::vector<std::string> out;
  switch (p.kind) {
    case ParamDomain::Kind::kChoice:
      for (size_t i = 0; i < p.choices.size() && i < 50; ++i) out.push_back(p.choices[i]);
      break;
    case ParamDomain::Kind::kIntRange:
      out = {std::to_string(static_cast<int64_t>(p.low)), std::to_string(static_cast<int64_t>(p.high))};
      break;
    default:
      out = {json(p.low).dump(), json(p.high).dump()};
  }
  return out;
}

bool Better(double a, double b, bool maximize) { return maximize ? a > b : a < b; }


}  // namespace

absl::StatusOr<std::string> SweepManager::TrialSpec(const SweepRecord& s, int64_t index,
                                                    const std::map<std::string, std::string>& params) {
  auto with_params = common::SetSpecPaths(s.config.base_spec_json, params);
  if (!with_params.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parameters.", with_params.status().message()));
  }
  json spec = json::parse(*with_params);
  spec["name"] = absl::StrCat(s.config.name.substr(0, 100), "-t", index);
  spec["output_dir"] = absl::StrCat(s.config.output_dir, "/trial-", index);
  spec["labels"][kSweepLabel] = s.id;
  spec["labels"][kTrialLabel] = std::to_string(index);
  if (s.config.early_stopping.type == EarlyStopConfig::Type::kAsha) {
    spec["hyperparameters"]["max_steps"] = s.config.early_stopping.max_steps;
  }
  return spec.dump();
}

absl::Status SweepManager::Recover() {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& row : store_.Sweeps()) {
    // A row the coordinator cannot trust stops it, naming the row, rather
    // than running a sweep from it (NOTE as for jobs rows in job_store.cc).
    auto s = SweepFromJson(row.body);
    absl::Status st = s.ok() ? ValidateSweepConfig(s->config) : s.status();
    if (st.ok() && s->id != row.id) st = absl::DataLossError(absl::StrCat("its body names sweep '", s->id, "'"));
    if (st.ok() && static_cast<int64_t>(s->trials.size()) > TrialCount(s->config)) {
      st = absl::DataLossError(absl::StrCat(s->trials.size(), " trials, more than its ", TrialCount(s->config)));
    }
    if (!st.ok()) {
      return absl::DataLossError(absl::StrCat("state file: sweeps row id '", row.id.substr(0, 128), "': ",
                                              st.message(), " (the file is left as it is; repair or remove the row)"));
    }
    sweeps_[s->id] = *s;
  }
  LOG(INFO) << "recovered " << sweeps_.size() << " sweeps";
  return absl::OkStatus();
}

absl::StatusOr<SweepRecord> SweepManager::Submit(SweepConfig config, const std::string& spec_json,
                                                 const std::string& key, const Submitter& who) {
  std::sort(config.params.begin(), config.params.end(),
            [](const ParamDomain& a, const ParamDomain& b) { return a.path < b.path; });
  for (size_t i = 1; i < config.params.size(); ++i) {
    if (config.params[i].path == config.params[i - 1].path) {
      return absl::InvalidArgumentError(absl::StrCat("parameters.", config.params[i].path, ": named twice"));
    }
  }
  if (auto st = ValidateSweepConfig(config); !st.ok()) return st;
  std::lock_guard<std::mutex> submit_lock(submit_mu_);
  SweepRecord s;
  s.config = config;
  s.spec_json = spec_json;
  s.idempotency_key = key;
  s.owner = who.name;
  s.owner_admin = who.admin;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, other] : sweeps_) {
      if (!key.empty() && other.idempotency_key == key && other.owner == who.name) return other;
      if (!IsTerminal(other.state) && other.config.output_dir == config.output_dir) {
        return absl::FailedPreconditionError(absl::StrCat("spec.output_dir: ", config.output_dir,
                                                          " is in use by sweep ", id, " (", SweepStateName(other.state),
                                                          ")"));
      }
      s.seq = std::max(s.seq, other.seq);
    }
  }
  ++s.seq;
  thread_local std::mt19937_64 rng(std::random_device{}());
  s.id = absl::StrFormat("s-%06d-%04x", s.seq, static_cast<int>(rng() & 0xffff));
  // Probes, validated like a submitted spec: each parameter alone at each of
  // its choices and ends (so an error names the parameter), then all of them
  // together at their first values.
  std::map<std::string, std::string> together;
  for (const auto& p : config.params) {
    const std::vector<std::string> values = ProbeValues(p);
    together[p.path] = values[0];
    for (const std::string& v : values) {
      auto spec = TrialSpec(s, 0, {{p.path, v}});
      if (!spec.ok()) return spec.status();
      if (auto st = jobs_.Validate(*spec, who); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat("parameters.", p.path, " = ", v, ": ", st.message()));
      }
    }
  }
  auto spec = TrialSpec(s, 0, together);
  if (!spec.ok()) return spec.status();
  if (auto st = jobs_.Validate(*spec, who); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("parameters (together): ", st.message()));
  }
  {
    // Another sweep's trials there would make every trial refuse to start
    // (a job does not resume another job's checkpoints).
    std::error_code ec;
    if (std::filesystem::exists(config.output_dir + "/trial-0", ec)) {
      return absl::FailedPreconditionError(absl::StrCat("spec.output_dir: ", config.output_dir,
                                                        " already holds a sweep's trials (trial-0/); choose a new "
                                                        "directory or remove that one"));
    }
  }
  s.state = SweepState::kRunning;
  s.created_ms = s.updated_ms = NowMs();
  s.message = absl::StrCat(TrialCount(config), " trials, ", config.parallel_trials, " at a time");
  std::lock_guard<std::mutex> l(mu_);
  s.version = 1;
  if (auto st = store_.PutSweep(s.id, s.seq, SweepToJson(s)); !st.ok()) return st;
  sweeps_[s.id] = s;
  cv_.notify_all();
  LOG(INFO) << "sweep=" << s.id << " submitted: " << config.name << ", " << TrialCount(config) << " trials";
  return s;
}

absl::StatusOr<SweepRecord> SweepManager::Get(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sweeps_.find(id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", id, " not found"));
  return it->second;
}

std::vector<SweepRecord> SweepManager::List() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SweepRecord> out;
  for (const auto& [id, s] : sweeps_) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const SweepRecord& a, const SweepRecord& b) { return a.seq < b.seq; });
  return out;
}

absl::StatusOr<SweepRecord> SweepManager::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sweeps_.find(id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", id, " not found"));
  SweepRecord& s = it->second;
  if (IsTerminal(s.state)) {
    return absl::FailedPreconditionError(absl::StrCat("sweep ", id, " is already ", SweepStateName(s.state)));
  }
  if (!s.cancel_requested) {
    s.cancel_requested = true;
    s.state = SweepState::kCancelling;
    s.message = "cancel requested";
    ++s.version;
    s.updated_ms = NowMs();
    if (auto st = store_.PutSweep(s.id, s.seq, SweepToJson(s)); !st.ok()) return st;
    cv_.notify_all();
  }
  return s;
}

absl::StatusOr<SweepRecord> SweepManager::WaitChange(const std::string& id, int64_t after, absl::Duration wait) {
  std::unique_lock<std::mutex> l(mu_);
  auto ready = [&] {
    auto it = sweeps_.find(id);
    return it == sweeps_.end() || it->second.version > after;
  };
  cv_.wait_for(l, absl::ToChronoMilliseconds(wait), ready);
  auto it = sweeps_.find(id);
  if (it == sweeps_.end()) return absl::NotFoundError(absl::StrCat("sweep ", id, " not found"));
  return it->second;
}

absl::Status SweepManager::Store(SweepRecord& s) {
  std::lock_guard<std::mutex> l(mu_);
  const SweepRecord& current = sweeps_[s.id];
  // A cancel may have arrived while the tick worked on its copy.
  if (current.cancel_requested && !s.cancel_requested) {
    s.cancel_requested = true;
    if (!IsTerminal(s.state)) s.state = SweepState::kCancelling;
  }
  s.version = std::max(s.version, current.version) + 1;
  s.updated_ms = NowMs();
  absl::Status st = store_.PutSweep(s.id, s.seq, SweepToJson(s));
  if (!st.ok()) {
    LOG(WARNING) << "sweep=" << s.id << " not stored: " << st;
    return st;
  }
  sweeps_[s.id] = s;
  cv_.notify_all();
  return st;
}

bool SweepManager::Refresh(SweepRecord& s) {
  bool changed = false;
  for (auto& t : s.trials) {
    if (t.job_id.empty()) continue;
    if (t.terminal && cursor_.count(t.job_id)) continue;  // read to its end already
    auto job = jobs_.Get(t.job_id);
    if (!job.ok()) {
      if (!t.terminal) {
        t.terminal = true;
        t.state = JobState::kFailed;
        t.message = std::string(job.status().message());
        changed = true;
      }
      continue;
    }
    int64_t& cursor = cursor_[t.job_id];
    for (const Event& e : jobs_.Events(t.job_id, cursor)) {
      cursor = e.index + 1;
      if (e.type != EventType::kEvaluation) continue;
      auto m = e.eval.metrics.find(s.config.objective);
      if (m == e.eval.metrics.end()) continue;
      auto [it, inserted] = t.curve.emplace(e.eval.step, m->second);
      if (inserted || it->second != m->second) changed = true;
      it->second = m->second;
    }
    int64_t steps = std::max<int64_t>({t.steps, job->progress.step, job->last_checkpoint_step,
                                       t.curve.empty() ? 0 : t.curve.rbegin()->first});
    if (steps != t.steps || job->state != t.state) changed = true;
    t.steps = steps;
    t.state = job->state;
    if (job->state == JobState::kSucceeded && t.stopped_early) {
      // It reached its end before the stop did: a completed trial after all.
      t.stopped_early = false;
      t.message = "completed before its early stop took effect (" + t.stopped_reason + ")";
      t.stopped_reason.clear();
    }
    if (job->state == JobState::kSucceeded && !t.has_final) {
      auto m = job->last_eval.metrics.find(s.config.objective);
      if (m != job->last_eval.metrics.end()) {
        t.has_final = true;
        t.final_objective = m->second;
      }
      changed = true;
    }
    if (IsTerminal(job->state) && !t.terminal) {
      t.terminal = true;
      if (job->state != JobState::kSucceeded) t.message = job->message;
      changed = true;
    }
  }
  // The best completed trial so far.
  int64_t best = -1;
  double best_value = 0;
  for (const auto& t : s.trials) {
    if (t.has_final && (best < 0 || Better(t.final_objective, best_value, s.config.maximize))) {
      best = t.index;
      best_value = t.final_objective;
    }
  }
  if (best != s.best_trial || best_value != s.best_objective) {
    s.best_trial = best;
    s.best_objective = best_value;
    changed = true;
  }
  return changed;
}

bool SweepManager::Advance(SweepRecord& s) {
  bool changed = Refresh(s);
  if (s.cancel_requested) {
    for (const auto& t : s.trials) {
      if (!t.terminal && !t.job_id.empty() && t.state != JobState::kCancelling) {
        if (auto st = jobs_.Cancel(t.job_id); !st.ok()) LOG(WARNING) << "sweep=" << s.id << " " << st;
      }
    }
  }
  // A trial stored without its job (a coordinator killed between steps 3's
  // two stores) is submitted again with its key: the same job comes back.
  for (auto& t : s.trials) {
    if (!t.terminal && t.job_id.empty() && s.cancel_requested) {
      t.terminal = true;
      t.state = JobState::kCancelled;
      t.message = "the sweep was cancelled before this trial was submitted";
      changed = true;
    } else if (!t.terminal && t.job_id.empty()) {
      auto spec = TrialSpec(s, t.index, t.params);
      auto id = spec.ok() ? jobs_.Submit(*spec, TrialKey(s.id, t.index), Submitter{s.owner, s.owner_admin}) : spec.status();
      if (id.ok()) {
        t.job_id = *id;
      } else if (absl::IsResourceExhausted(id.status())) {
        continue;  // the owner's queue is full: again on a later tick
      } else {
        t.terminal = true;
        t.state = JobState::kFailed;
        t.message = std::string(id.status().message());
      }
      changed = true;
      Store(s).IgnoreError();
    }
  }
  const Plan plan = PlanSweep(s.config, s.trials, s.cancel_requested);
  for (const RungRecord& r : plan.record) {
    s.trials[static_cast<size_t>(r.trial)].rungs[r.rung_step] = r.value;
    changed = true;
  }
  if (!plan.stop.empty()) {
    for (const StopDecision& d : plan.stop) {
      TrialRecord& t = s.trials[static_cast<size_t>(d.trial)];
      t.stopped_early = true;
      t.stopped_reason = d.reason;
      LOG(INFO) << "sweep=" << s.id << " trial " << d.trial << " stopped early: " << d.reason;
    }
    Store(s).IgnoreError();  // the decision is durable before the job is cancelled
    changed = false;
    for (const StopDecision& d : plan.stop) {
      const TrialRecord& t = s.trials[static_cast<size_t>(d.trial)];
      if (t.job_id.empty()) continue;
      if (auto st = jobs_.Cancel(t.job_id); !st.ok()) LOG(WARNING) << "sweep=" << s.id << " " << st;
    }
  }
  for (int64_t index : plan.start) {
    TrialRecord t;
    t.index = index;
    t.params = TrialParameters(s.config, index);
    s.trials.push_back(t);
    if (!Store(s).ok()) {  // not durable: not submitted; the next tick plans it again
      s.trials.pop_back();
      return false;
    }
    TrialRecord& stored = s.trials.back();
    auto spec = TrialSpec(s, index, stored.params);
    auto id = spec.ok() ? jobs_.Submit(*spec, TrialKey(s.id, index), Submitter{s.owner, s.owner_admin}) : spec.status();
    if (id.ok()) {
      stored.job_id = *id;
      LOG(INFO) << "sweep=" << s.id << " trial " << index << " is job " << *id;
    } else if (absl::IsResourceExhausted(id.status())) {
      // The owner's queue is full (per-owner limits): stored without its
      // job, the trial is submitted again on a later tick.
      LOG(INFO) << "sweep=" << s.id << " trial " << index << " waits: " << id.status();
    } else {
      // A value the probes at submit did not cover (a combination): the trial
      // fails with the reason; the sweep goes on.
      stored.terminal = true;
      stored.state = JobState::kFailed;
      stored.message = std::string(id.status().message());
      LOG(WARNING) << "sweep=" << s.id << " trial " << index << " not submitted: " << id.status();
    }
    changed = true;
  }
  if (plan.finished && !IsTerminal(s.state)) {
    Finish(s);
    changed = true;
  }
  return changed;
}

void SweepManager::Finish(SweepRecord& s) {
  const bool inside = options_.data_root.empty() || common::ResolvesInside(s.config.output_dir, options_.data_root);
  const bool have_dir = inside && common::MakeDirs(s.config.output_dir).ok();
  if (s.best_trial >= 0) {
    s.state = s.cancel_requested ? SweepState::kCancelled : SweepState::kSucceeded;
    s.message = absl::StrFormat("best trial %d: %s %.4f", s.best_trial, s.config.objective, s.best_objective);
    // <output_dir>/best -> trial-<n>, replaced atomically.
    const std::string link = s.config.output_dir + "/best", tmp = link + ".tmp";
    ::unlink(tmp.c_str());
    if (!have_dir || ::symlink(absl::StrCat("trial-", s.best_trial).c_str(), tmp.c_str()) != 0 ||
        std::rename(tmp.c_str(), link.c_str()) != 0) {
      absl::StrAppend(&s.message, "; ", link, " could not be written");
      ::unlink(tmp.c_str());
    }
  } else {
    s.state = s.cancel_requested ? SweepState::kCancelled : SweepState::kFailed;
    s.message = s.cancel_requested ? "cancelled before any trial completed" : "no trial completed";
  }
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"sweep_report.json", SweepReportJson(s)},
                                   {"sweep_report.html", SweepReportHtml(s)}}) {
    const std::string path = s.config.output_dir + "/" + name;
    if (!have_dir || !common::WriteFileAtomic(path, text).ok()) {
      absl::StrAppend(&s.message, "; ", path, " could not be written");
    }
  }
  if (!inside) absl::StrAppend(&s.message, " (", s.config.output_dir, " no longer resolves inside the data root)");
  LOG(INFO) << "sweep=" << s.id << " " << SweepStateName(s.state) << ": " << s.message;
}

void SweepManager::Tick() {
  std::vector<SweepRecord> live;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, s] : sweeps_) {
      if (!IsTerminal(s.state)) live.push_back(s);
    }
  }
  for (SweepRecord& s : live) {
    if (Advance(s)) Store(s).IgnoreError();
  }
}

}  // namespace attune::coordinator::sweep
