// The sweep planner from tables (parameters, ASHA, median stopping, trial
// starts), config validation, and the SweepManager over a fake TrialJobs and
// a real SQLite store: keys, recovery without lost or duplicated trials,
// failed trials, cancel, the best link and the report.

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/testing/status_matchers.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_store.h"
#include "coordinator/sweep/planner.h"
#include "coordinator/sweep/report.h"
#include "coordinator/sweep/sweep_manager.h"

namespace attune::coordinator::sweep {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;
using nlohmann::json;

ParamDomain Choice(const std::string& path, std::vector<std::string> v) {
  ParamDomain d;
  d.path = path;
  d.kind = ParamDomain::Kind::kChoice;
  d.choices = std::move(v);
  return d;
}
ParamDomain Range(const std::string& path, ParamDomain::Kind kind, double lo, double hi) {
  ParamDomain d;
  d.path = path;
  d.kind = kind;
  d.low = lo;
  d.high = hi;
  return d;
}

SweepConfig Config() {
  SweepConfig c;
  c.name = "s";
  c.base_spec_json = R"({"name":"base","hyperparameters":{"learning_rate":0.001},"output_dir":"/o"})";
  c.output_dir = "/o";
  c.params = {Range("hyperparameters.learning_rate", ParamDomain::Kind::kLogUniform, 1e-5, 1e-2),
              Choice("method.type", {"\"full\"", "\"lora\""})};
  c.objective = "roc_auc";
  c.seed = 3;
  c.max_trials = 6;
  c.parallel_trials = 2;
  return c;
}

TrialRecord Trial(int64_t i, std::map<int64_t, double> curve, bool terminal = false) {
  TrialRecord t;
  t.index = i;
  t.job_id = absl::StrCat("j", i);
  t.curve = std::move(curve);
  t.terminal = terminal;
  t.state = terminal ? JobState::kSucceeded : JobState::kRunning;
  return t;
}

TEST(TrialParametersTest, AFunctionOfSeedAndIndexInsideEachDomain) {
  SweepConfig c = Config();
  c.params.push_back(Range("hyperparameters.warmup_ratio", ParamDomain::Kind::kUniform, 0.0, 0.2));
  c.params.push_back(Range("method.lora.rank", ParamDomain::Kind::kIntRange, 4, 32));
  std::sort(c.params.begin(), c.params.end(), [](auto& a, auto& b) { return a.path < b.path; });
  std::set<std::string> methods;
  std::set<int64_t> ranks;
  double lo = 1, hi = 0;
  for (int64_t i = 0; i < 200; ++i) {
    auto p = TrialParameters(c, i);
    EXPECT_EQ(p, TrialParameters(c, i));  // reproducible
    const double lr = std::stod(p["hyperparameters.learning_rate"]);
    EXPECT_GE(lr, 1e-5);
    EXPECT_LT(lr, 1e-2);
    lo = std::min(lo, lr);
    hi = std::max(hi, lr);
    const double w = std::stod(p["hyperparameters.warmup_ratio"]);
    EXPECT_GE(w, 0.0);
    EXPECT_LT(w, 0.2);
    const int64_t r = std::stoll(p["method.lora.rank"]);
    EXPECT_GE(r, 4);
    EXPECT_LE(r, 32);
    EXPECT_EQ(p["method.lora.rank"], std::to_string(r));  // an integer literal
    ranks.insert(r);
    methods.insert(p["method.type"]);
  }
  // Log-uniform: spread over all three decades.
  EXPECT_LT(lo, 2e-5);
  EXPECT_GT(hi, 5e-3);
  EXPECT_EQ(methods, (std::set<std::string>{"\"full\"", "\"lora\""}));
  EXPECT_EQ(ranks.size(), 29u);  // every rank of [4, 32] drawn in 200 tries
  SweepConfig other = c;
  other.seed = 4;
  EXPECT_NE(TrialParameters(c, 0), TrialParameters(other, 0));
}

TEST(TrialParametersTest, GridVisitsEveryPointOnceLastParameterFastest) {
  SweepConfig c = Config();
  c.algorithm = "grid";
  c.params = {Choice("a.x", {"1", "2", "3"}), Range("b.y", ParamDomain::Kind::kIntRange, 0, 1)};
  EXPECT_EQ(GridSize(c), 6);
  c.max_trials = 0;
  EXPECT_EQ(TrialCount(c), 6);
  std::set<std::map<std::string, std::string>> seen;
  for (int64_t i = 0; i < 6; ++i) seen.insert(TrialParameters(c, i));
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(TrialParameters(c, 0), (std::map<std::string, std::string>{{"a.x", "1"}, {"b.y", "0"}}));
  EXPECT_EQ(TrialParameters(c, 1), (std::map<std::string, std::string>{{"a.x", "1"}, {"b.y", "1"}}));
  EXPECT_EQ(TrialParameters(c, 2), (std::map<std::string, std::string>{{"a.x", "2"}, {"b.y", "0"}}));
  c.max_trials = 4;
  EXPECT_EQ(TrialCount(c), 4);
}

TEST(ValidateSweepConfigTest, NamesEachBadField) {
  EXPECT_THAT(ValidateSweepConfig(Config()), IsOk());
  SweepConfig c = Config();
  c.objective = "bleu";
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "objective.metric: 'bleu'"));
  c = Config();
  c.params.push_back(Range("hyperparameters.weight_decay", ParamDomain::Kind::kLogUniform, 0, 1));
  EXPECT_THAT(ValidateSweepConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "parameters.hyperparameters.weight_decay: log_uniform"));
  c = Config();
  c.params.push_back(Choice("output_dir", {"\"/x\""}));
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "parameters.output_dir"));
  c = Config();
  c.params.push_back(Choice("Hyper..params", {"1"}));
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "not a spec path"));
  c = Config();
  c.algorithm = "grid";
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "algorithm.type: grid needs"));
  c = Config();
  c.max_trials = 0;
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "max_trials"));
  c = Config();
  c.early_stopping.type = EarlyStopConfig::Type::kAsha;
  c.early_stopping.grace_steps = 10;
  c.early_stopping.reduction_factor = 2;
  c.early_stopping.max_steps = 5;
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "early_stopping.max_steps"));
  c.early_stopping.max_steps = 40;
  EXPECT_THAT(ValidateSweepConfig(c), IsOk());
  EXPECT_EQ(AshaRungs(c.early_stopping), (std::vector<int64_t>{10, 20}));
  c.params.push_back(Range("hyperparameters.max_steps", ParamDomain::Kind::kIntRange, 10, 20));
  EXPECT_THAT(ValidateSweepConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "parameters.hyperparameters.max_steps"));
}

struct AshaCase {
  std::string name;
  bool maximize;
  int64_t reduction_factor;
  std::vector<TrialRecord> trials;
  std::vector<int64_t> want_stopped;
  std::vector<std::pair<int64_t, int64_t>> want_recorded;  // (trial, rung)
};

class AshaTableTest : public ::testing::TestWithParam<AshaCase> {};

TEST_P(AshaTableTest, StopsBelowTheRungsQuantile) {
  const AshaCase& a = GetParam();
  SweepConfig c = Config();
  c.maximize = a.maximize;
  c.max_trials = static_cast<int64_t>(a.trials.size());
  c.early_stopping.type = EarlyStopConfig::Type::kAsha;
  c.early_stopping.grace_steps = 10;
  c.early_stopping.reduction_factor = a.reduction_factor;
  c.early_stopping.max_steps = 40;  // rungs 10 and 20 (rf 2), or 10 (rf 4)
  Plan p = PlanSweep(c, a.trials, false);
  std::vector<int64_t> stopped;
  for (const auto& s : p.stop) {
    stopped.push_back(s.trial);
    EXPECT_NE(s.reason.find("asha: roc_auc"), std::string::npos) << s.reason;
  }
  EXPECT_EQ(stopped, a.want_stopped);
  std::vector<std::pair<int64_t, int64_t>> recorded;
  for (const auto& r : p.record) recorded.push_back({r.trial, r.rung_step});
  EXPECT_EQ(recorded, a.want_recorded);
}

TrialRecord WithRungs(TrialRecord t, std::map<int64_t, double> rungs) {
  t.rungs = std::move(rungs);
  return t;
}

INSTANTIATE_TEST_SUITE_P(
    Rungs, AshaTableTest,
    ::testing::Values(
        // The first trial at a rung has nobody to lose to.
        AshaCase{"first_at_rung_goes_on", true, 2, {Trial(0, {{10, 0.5}})}, {}, {{0, 10}}},
        // Median of {0.6} is 0.6: 0.5 is below it, 0.7 is not.
        AshaCase{"below_the_median_stops",
                 true, 2,
                 {WithRungs(Trial(0, {{10, 0.6}}), {{10, 0.6}}), Trial(1, {{10, 0.5}}), Trial(2, {{10, 0.7}})},
                 {1}, {{1, 10}, {2, 10}}},
        // The trial's first evaluation at or after the rung counts (step 12 for rung 10).
        AshaCase{"first_evaluation_past_the_rung",
                 true, 2,
                 {WithRungs(Trial(0, {{10, 0.6}}), {{10, 0.6}}), Trial(1, {{5, 0.9}, {12, 0.55}})},
                 {1}, {{1, 10}}},
        // rf 4: the 75th percentile of {0.1 .. 0.5} is 0.4 (numpy, linear).
        AshaCase{"quantile_of_reduction_factor",
                 true, 4,
                 {WithRungs(Trial(0, {{10, 0.1}}, true), {{10, 0.1}}), WithRungs(Trial(1, {{10, 0.2}}, true), {{10, 0.2}}),
                  WithRungs(Trial(2, {{10, 0.3}}, true), {{10, 0.3}}), WithRungs(Trial(3, {{10, 0.4}}, true), {{10, 0.4}}),
                  WithRungs(Trial(4, {{10, 0.5}}, true), {{10, 0.5}}), Trial(5, {{10, 0.39}}), Trial(6, {{10, 0.4}})},
                 {5}, {{5, 10}, {6, 10}}},
        // min: lower is better (loss).
        AshaCase{"minimised_objective",
                 false, 2,
                 {WithRungs(Trial(0, {{10, 0.3}}), {{10, 0.3}}), Trial(1, {{10, 0.4}}), Trial(2, {{10, 0.2}})},
                 {1}, {{1, 10}, {2, 10}}},
        // A trial that passed rung 10 is judged again at rung 20; ended trials are
        // recorded but never stopped.
        AshaCase{"second_rung_and_ended_trials",
                 true, 2,
                 {WithRungs(Trial(0, {{10, 0.6}, {20, 0.8}}, true), {{10, 0.6}}),
                  WithRungs(Trial(1, {{10, 0.7}, {20, 0.75}}), {{10, 0.7}})},
                 {1}, {{0, 20}, {1, 20}}},
        // Trials are taken in index order within one plan: 1 is recorded
        // before 2 compares.
        AshaCase{"order_within_a_plan", true, 2, {Trial(0, {}), Trial(1, {{10, 0.5}}), Trial(2, {{10, 0.4}})}, {2},
                 {{1, 10}, {2, 10}}}),
    [](const auto& info) { return info.param.name; });

TEST(MedianStoppingTest, StopsABestWorseThanTheCompletedTrialsRunningAverages) {
  SweepConfig c = Config();
  c.max_trials = 5;
  c.parallel_trials = 5;
  c.early_stopping.type = EarlyStopConfig::Type::kMedian;
  c.early_stopping.min_trials = 3;
  std::vector<TrialRecord> t;
  // Completed trials' running averages up to step 20: 0.55, 0.65, 0.75 -> median 0.65.
  for (double base : {0.5, 0.6, 0.7}) {
    TrialRecord r = Trial(static_cast<int64_t>(t.size()), {{10, base}, {20, base + 0.1}, {30, base + 0.2}}, true);
    r.has_final = true;
    r.final_objective = base + 0.2;
    t.push_back(r);
  }
  t.push_back(Trial(3, {{10, 0.62}, {20, 0.64}}));  // best 0.64 < 0.65: stopped
  t.push_back(Trial(4, {{10, 0.66}, {20, 0.6}}));   // best 0.66 >= 0.65: goes on
  Plan p = PlanSweep(c, t, false);
  ASSERT_EQ(p.stop.size(), 1u);
  EXPECT_EQ(p.stop[0].trial, 3);
  EXPECT_NE(p.stop[0].reason.find("median 0.6500"), std::string::npos) << p.stop[0].reason;
  // Fewer completed trials than min_trials: nobody is stopped.
  c.early_stopping.min_trials = 4;
  EXPECT_TRUE(PlanSweep(c, t, false).stop.empty());
}

TEST(PlanStartsTest, AtMostParallelTrialsLiveAndMaxTrialsInAll) {
  SweepConfig c = Config();  // 6 trials, 2 at a time
  EXPECT_EQ(PlanSweep(c, {}, false).start, (std::vector<int64_t>{0, 1}));
  std::vector<TrialRecord> t = {Trial(0, {}, true), Trial(1, {})};
  EXPECT_EQ(PlanSweep(c, t, false).start, (std::vector<int64_t>{2}));
  t[1].stopped_early = true;  // stopping, not yet ended: still holds its gang
  EXPECT_EQ(PlanSweep(c, t, false).start, (std::vector<int64_t>{2}));
  for (int64_t i = 2; i < 6; ++i) t.push_back(Trial(i, {}, true));
  t[1].terminal = true;
  Plan done = PlanSweep(c, t, false);
  EXPECT_TRUE(done.start.empty());
  EXPECT_TRUE(done.finished);
  // Cancelled: nothing new; finished when the live ones end.
  std::vector<TrialRecord> two = {Trial(0, {}, true), Trial(1, {})};
  EXPECT_TRUE(PlanSweep(c, two, true).start.empty());
  EXPECT_FALSE(PlanSweep(c, two, true).finished);
  two[1].terminal = true;
  EXPECT_TRUE(PlanSweep(c, two, true).finished);
}

// TrialJobs in memory: jobs by id, one per idempotency key.
class FakeTrialJobs : public TrialJobs {
 public:
  absl::StatusOr<std::string> Submit(const std::string& spec_json, const std::string& key,
                                     const Submitter& who) override {
    if (auto s = Validate(spec_json, who); !s.ok()) return s;
    if (by_key.count(key)) return by_key[key];
    const std::string id = absl::StrCat("job-", jobs.size());
    Job j;
    j.id = id;
    j.spec_json = spec_json;
    j.state = JobState::kQueued;
    jobs[id] = j;
    by_key[key] = id;
    ++submits;
    return id;
  }
  absl::Status Validate(const std::string& spec_json, const Submitter&) override {
    json j = json::parse(spec_json);
    if (j["hyperparameters"].value("learning_rate", 0.0) > 0.5) {
      return absl::InvalidArgumentError("hyperparameters.learning_rate: must be <= 0.5");
    }
    return absl::OkStatus();
  }
  absl::StatusOr<Job> Get(const std::string& id) override {
    if (!jobs.count(id)) return absl::NotFoundError(id);
    return jobs[id];
  }
  std::vector<Event> Events(const std::string& id, int64_t from) override {
    std::vector<Event> out;
    for (const Event& e : events[id]) {
      if (e.index >= from) out.push_back(e);
    }
    return out;
  }
  absl::Status Cancel(const std::string& id) override {
    cancelled.insert(id);
    if (!IsTerminal(jobs[id].state)) jobs[id].state = JobState::kCancelled;
    return absl::OkStatus();
  }
  void Eval(const std::string& id, int64_t step, double auc) {
    Event e;
    e.index = static_cast<int64_t>(events[id].size());
    e.type = EventType::kEvaluation;
    e.eval.step = step;
    e.eval.metrics = {{"roc_auc", auc}, {"loss", 1 - auc}};
    events[id].push_back(e);
    jobs[id].state = JobState::kRunning;
    jobs[id].progress.step = step;
    jobs[id].last_eval = e.eval;
  }
  void Succeed(const std::string& id) { jobs[id].state = JobState::kSucceeded; }

  std::map<std::string, Job> jobs;
  std::map<std::string, std::string> by_key;
  std::map<std::string, std::vector<Event>> events;
  std::set<std::string> cancelled;
  int submits = 0;
};

class SweepManagerTest : public ::testing::Test {
 protected:
  SweepManagerTest() : dir_(fs::temp_directory_path() / ("attune_sweep_" + std::to_string(::getpid()))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~SweepManagerTest() override { fs::remove_all(dir_); }
  SweepConfig Asha() {
    SweepConfig c = Config();
    c.output_dir = (dir_ / "out").string();
    c.max_trials = 4;
    c.early_stopping.type = EarlyStopConfig::Type::kAsha;
    c.early_stopping.grace_steps = 10;
    c.early_stopping.reduction_factor = 2;
    c.early_stopping.max_steps = 40;
    return c;
  }
  fs::path dir_;
};

TEST_F(SweepManagerTest, RunsTrialsAsLabelledJobsStopsTheWeakAndLinksTheBest) {
  auto store = JobStore::Open((dir_ / "state.db").string());
  ASSERT_THAT(store.status(), IsOk());
  FakeTrialJobs jobs;
  SweepManager m(**store, jobs);
  auto s = m.Submit(Asha(), "{}", "key-1");
  ASSERT_THAT(s.status(), IsOk());
  EXPECT_EQ(m.Submit(Asha(), "{}", "key-1")->id, s->id);  // the same key: the same sweep
  m.Tick();
  ASSERT_EQ(jobs.jobs.size(), 2u);  // parallel_trials
  const Job& j0 = jobs.jobs["job-0"];
  json spec = json::parse(j0.spec_json);
  EXPECT_EQ(spec["labels"]["attune.dev/sweep"], s->id);
  EXPECT_EQ(spec["labels"]["attune.dev/trial"], "0");
  EXPECT_EQ(spec["output_dir"], (dir_ / "out/trial-0").string());
  EXPECT_EQ(spec["hyperparameters"]["max_steps"], 40);
  auto want = TrialParameters(m.Get(s->id)->config, 0);
  EXPECT_EQ(spec["hyperparameters"]["learning_rate"].dump(), want["hyperparameters.learning_rate"]);
  EXPECT_EQ(spec["method"]["type"].dump(), want["method.type"]);
  // Trial 0 reaches rung 10 first; trial 1 is below it there and is stopped.
  jobs.Eval("job-0", 10, 0.8);
  m.Tick();
  jobs.Eval("job-1", 10, 0.6);
  m.Tick();
  EXPECT_TRUE(jobs.cancelled.count("job-1"));
  auto got = m.Get(s->id);
  EXPECT_TRUE(got->trials[1].stopped_early);
  EXPECT_NE(got->trials[1].stopped_reason.find("rung 0"), std::string::npos);
  m.Tick();  // trial 1 has ended: trial 2 takes its slot
  ASSERT_EQ(jobs.jobs.size(), 3u);
  jobs.Eval("job-0", 40, 0.9);
  jobs.Succeed("job-0");
  jobs.Eval("job-2", 10, 0.85);
  jobs.Eval("job-2", 40, 0.95);
  jobs.Succeed("job-2");
  m.Tick();
  m.Tick();
  jobs.Eval("job-3", 10, 0.5);  // below the rung's median: stopped
  m.Tick();
  m.Tick();
  got = m.Get(s->id);
  ASSERT_EQ(got->state, SweepState::kSucceeded) << got->message;
  EXPECT_EQ(got->trials.size(), 4u);
  EXPECT_EQ(got->best_trial, 2);
  EXPECT_DOUBLE_EQ(got->best_objective, 0.95);
  EXPECT_EQ(fs::read_symlink(dir_ / "out/best"), "trial-2");
  json report = json::parse(*common::ReadFile((dir_ / "out/sweep_report.json").string(), 1 << 20));
  EXPECT_EQ(report["best"]["trial"], 2);
  EXPECT_EQ(report["trials"].size(), 4u);
  EXPECT_EQ(report["trials"][1]["stopped_early"], true);
  EXPECT_EQ(report["trials"][2]["curve"].size(), 2u);
  EXPECT_EQ(report["trial_steps"], 40 + 10 + 40 + 10);
  const std::string html = *common::ReadFile((dir_ / "out/sweep_report.html").string(), 1 << 20);
  EXPECT_NE(html.find("<polyline class='trial' data-trial='2'"), std::string::npos);
  EXPECT_NE(html.find("STOPPED_EARLY"), std::string::npos);
}

TEST_F(SweepManagerTest, ARestartLosesAndDuplicatesNoTrial) {
  FakeTrialJobs jobs;  // the job manager's jobs survive (they are in the store)
  std::string id;
  {
    auto store = JobStore::Open((dir_ / "state.db").string());
    SweepManager m(**store, jobs);
    id = m.Submit(Asha(), "{}", "")->id;
    m.Tick();
    ASSERT_EQ(jobs.submits, 2);
  }
  {
    // A coordinator killed after storing trial 2 but before submitting it:
    // simulated by storing the record with a trial that has no job yet.
    auto store = JobStore::Open((dir_ / "state.db").string());
    SweepManager m(**store, jobs);
    ASSERT_THAT(m.Recover(), IsOk());
    SweepRecord s = *m.Get(id);
    TrialRecord pending;
    pending.index = 2;
    pending.params = TrialParameters(s.config, 2);
    s.trials.push_back(pending);
    ASSERT_THAT((*store)->PutSweep(s.id, s.seq, SweepToJson(s)), IsOk());
    // ...and it had in fact submitted it before dying.
    jobs.Submit(*SweepManager::TrialSpec(s, 2, pending.params), absl::StrCat("sweep:", id, ":trial:2"), {}).IgnoreError();
  }
  auto store = JobStore::Open((dir_ / "state.db").string());
  SweepManager m(**store, jobs);
  ASSERT_THAT(m.Recover(), IsOk());
  for (int round = 0; round < 10; ++round) {
    m.Tick();
    for (auto& [jid, j] : jobs.jobs) {
      if (!IsTerminal(j.state)) {
        jobs.Eval(jid, 40, 0.7);
        jobs.Succeed(jid);
      }
    }
  }
  auto s = m.Get(id);
  ASSERT_EQ(s->state, SweepState::kSucceeded) << s->message;
  EXPECT_EQ(s->trials.size(), 4u);
  EXPECT_EQ(jobs.jobs.size(), 4u);  // none lost, none run twice
  std::set<std::string> ids;
  for (const auto& t : s->trials) ids.insert(t.job_id);
  EXPECT_EQ(ids.size(), 4u);
}

// A sweeps row is input from outside the coordinator (an operator's edit, a
// disk fault): a field it cannot trust stops the recovery, naming the row and
// the field, instead of being indexed or cast blindly.
TEST_F(SweepManagerTest, ASweepsRowItCannotTrustIsNamedAtRecovery) {
  FakeTrialJobs jobs;
  std::string id;
  SweepRecord good;
  {
    auto store = JobStore::Open((dir_ / "state.db").string());
    SweepManager m(**store, jobs);
    id = m.Submit(Asha(), "{}", "")->id;
    m.Tick();
    good = *m.Get(id);
  }
  ASSERT_EQ(good.trials.size(), 2u);
  const json row = json::parse(SweepToJson(good));
  auto recover_with = [&](const std::function<void(json&)>& edit) {
    json j = row;
    edit(j);
    auto store = JobStore::Open((dir_ / "state.db").string());
    EXPECT_THAT((*store)->PutSweep(id, good.seq, j.dump()), IsOk());
    SweepManager m(**store, jobs);
    return m.Recover();
  };
  EXPECT_THAT(recover_with([](json&) {}), IsOk());
  const std::string named = "sweeps row id '" + id + "': ";
  EXPECT_THAT(recover_with([](json& j) { j["best_trial"] = 7; }),
              StatusIs(absl::StatusCode::kDataLoss, named + "best_trial 7 is not one of its 2 trials"));
  EXPECT_THAT(recover_with([](json& j) { j["config"]["max_trials"] = 1e300; }),
              StatusIs(absl::StatusCode::kDataLoss, "max_trials is not an integer"));
  EXPECT_THAT(recover_with([](json& j) { j["state"] = 42; }),
              StatusIs(absl::StatusCode::kDataLoss, "state 42 is out of range"));
  EXPECT_THAT(recover_with([](json& j) { j["trials"][1]["index"] = 0; }),
              StatusIs(absl::StatusCode::kDataLoss, "trial at position 1 has index 0"));
  EXPECT_THAT(recover_with([](json& j) { j["config"]["parallel_trials"] = 0; }),
              StatusIs(absl::StatusCode::kDataLoss, "parallel_trials: must be 1 to 256"));
  EXPECT_THAT(recover_with([](json& j) { j["id"] = "other"; }),
              StatusIs(absl::StatusCode::kDataLoss, "its body names sweep 'other'"));
  EXPECT_THAT(recover_with([](json& j) { j["config"]["early_stopping"]["type"] = -1; }),
              StatusIs(absl::StatusCode::kDataLoss, "type -1 is out of range"));
}

TEST_F(SweepManagerTest, BadValuesAreRefusedAtSubmitAndFailedTrialsDoNotFailTheSweep) {
  auto store = JobStore::Open((dir_ / "state.db").string());
  FakeTrialJobs jobs;
  SweepManager m(**store, jobs);
  SweepConfig bad = Asha();
  bad.params[0] = Range("hyperparameters.learning_rate", ParamDomain::Kind::kUniform, 0.1, 0.9);
  EXPECT_THAT(m.Submit(bad, "{}", "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "parameters.hyperparameters.learning_rate = 0.9"));
  EXPECT_TRUE(m.List().empty());
  // Every trial fails: the sweep fails, naming why.
  SweepConfig c = Asha();
  c.early_stopping.type = EarlyStopConfig::Type::kNone;
  auto s = m.Submit(c, "{}", "");
  ASSERT_THAT(s.status(), IsOk());
  EXPECT_THAT(m.Submit(c, "{}", "").status(), StatusIs(absl::StatusCode::kFailedPrecondition, "in use by sweep"));
  for (int round = 0; round < 6; ++round) {
    m.Tick();
    for (auto& [jid, j] : jobs.jobs) {
      if (!IsTerminal(j.state)) {
        j.state = JobState::kFailed;
        j.message = "rank 0 exited with code 1";
      }
    }
  }
  auto got = m.Get(s->id);
  EXPECT_EQ(got->state, SweepState::kFailed);
  EXPECT_EQ(got->message, "no trial completed");
  EXPECT_EQ(got->trials[0].message, "rank 0 exited with code 1");
}

TEST_F(SweepManagerTest, CancelStopsLiveTrialsAndStartsNoMore) {
  auto store = JobStore::Open((dir_ / "state.db").string());
  FakeTrialJobs jobs;
  SweepManager m(**store, jobs);
  auto s = m.Submit(Asha(), "{}", "");
  m.Tick();
  ASSERT_THAT(m.Cancel(s->id).status(), IsOk());
  m.Tick();
  m.Tick();
  EXPECT_EQ(jobs.cancelled, (std::set<std::string>{"job-0", "job-1"}));
  EXPECT_EQ(jobs.jobs.size(), 2u);
  EXPECT_EQ(m.Get(s->id)->state, SweepState::kCancelled);
  EXPECT_THAT(m.Cancel(s->id).status(), StatusIs(absl::StatusCode::kFailedPrecondition, "already"));
}

TEST_F(SweepManagerTest, ReportsAreNotWrittenThroughAnOutputDirSwappedOutOfTheDataRoot) {
  auto store = JobStore::Open((dir_ / "state.db").string());
  FakeTrialJobs jobs;
  fs::create_directories(dir_ / "root");
  fs::create_directories(dir_ / "elsewhere");
  SweepManager m(**store, jobs, {(dir_ / "root").string()});
  SweepConfig c = Asha();
  c.output_dir = (dir_ / "root/out").string();
  c.max_trials = 1;
  auto s = m.Submit(c, "{}", "");
  ASSERT_THAT(s.status(), IsOk());
  m.Tick();
  // After submit, out becomes a symlink to a directory outside the root.
  fs::create_symlink(dir_ / "elsewhere", dir_ / "root/out");
  jobs.Eval("job-0", 40, 0.9);
  jobs.Succeed("job-0");
  m.Tick();
  m.Tick();
  auto got = m.Get(s->id);
  ASSERT_EQ(got->state, SweepState::kSucceeded);
  EXPECT_NE(got->message.find("no longer resolves inside the data root"), std::string::npos) << got->message;
  EXPECT_TRUE(fs::is_empty(dir_ / "elsewhere"));
  // And a directory that holds another sweep's trials is refused at submit.
  fs::create_directories(dir_ / "root/used/trial-0");
  c.output_dir = (dir_ / "root/used").string();
  EXPECT_THAT(m.Submit(c, "{}", "").status(), StatusIs(absl::StatusCode::kFailedPrecondition, "already holds a sweep's trials"));
}

// A spec compiler for the real JobManager without protobuf: the few fields
// this test sets (the real one is the rpc layer's, exercised end to end by
// the service tests).
absl::StatusOr<common::JobConfig> CompileForTest(const std::string& spec_json, std::string* canonical) {
  json j = json::parse(spec_json);
  common::JobConfig c;
  c.name = j["name"];
  c.output_dir = j["output_dir"];
  c.train_path = j["data"]["train"];
  c.validation_split = 0.5;
  c.has_model_config = true;
  c.priority = j.value("priority", 0);
  const json labels = j.value("labels", json::object());
  for (const auto& [k, v] : labels.items()) c.labels[k] = v.get<std::string>();
  *canonical = j.dump();
  return c;
}

// NOTE [fair sharing]: a sweep holds at most parallel_trials live trials, and
// its trials queue like any job: a higher-priority job goes first, and a job
// submitted while a trial runs goes before the sweep's next trial.
TEST_F(SweepManagerTest, ASweepHoldsAtMostItsParallelTrialsAndOtherJobsAreNotStarved) {
  auto store = JobStore::Open((dir_ / "state.db").string());
  ASSERT_THAT(store.status(), IsOk());
  common::WriteFileAtomic((dir_ / "train.csv").string(), "text,label\na,x\nb,y\n").IgnoreError();
  JobManager jobs(**store, ManagerOptions());
  jobs.Register({"w1", "127.0.0.1", 1, 0, 1234, {}});
  JobManagerTrialJobs trial_jobs(jobs, CompileForTest);
  SweepManager sweeps(**store, trial_jobs);
  SweepConfig c = Config();
  c.base_spec_json = json{{"name", "base"}, {"output_dir", (dir_ / "out").string()},
                          {"data", {{"train", (dir_ / "train.csv").string()}}}}.dump();
  c.output_dir = (dir_ / "out").string();
  c.max_trials = 3;
  auto s = sweeps.Submit(c, "{}", "");
  ASSERT_THAT(s.status(), IsOk());
  auto live_trials = [&] {
    int n = 0;
    auto all = jobs.List({});
    for (const auto& j : all->first) n += j.config.labels.count("attune.dev/sweep") && !IsTerminal(j.state);
    return n;
  };
  auto finish = [&](const std::string& id) {
    auto j = jobs.Get(id);
    jobs.Heartbeat("w1", {{id, j->generation, 0, true, 0, {}, ""}});
    jobs.Heartbeat("w1", {{id, j->generation, 0, false, 0, {}, ""}});
    ASSERT_EQ(jobs.Get(id)->state, JobState::kSucceeded);
  };
  sweeps.Tick();
  jobs.Tick();
  EXPECT_EQ(live_trials(), 2);
  const std::string t0 = sweeps.Get(s->id)->trials[0].job_id, t1 = sweeps.Get(s->id)->trials[1].job_id;
  EXPECT_EQ(jobs.Get(t0)->state, JobState::kScheduled);  // the one worker holds trial 0
  EXPECT_EQ(jobs.Get(t1)->state, JobState::kQueued);
  // A higher-priority job submitted now goes before the queued trial.
  std::string canonical;
  common::JobConfig urgent = *CompileForTest(c.base_spec_json, &canonical);
  urgent.name = "urgent";
  urgent.output_dir = (dir_ / "urgent").string();
  urgent.priority = 5;
  auto u = jobs.Submit(urgent, "{}", "");
  ASSERT_THAT(u.status(), IsOk());
  finish(t0);
  sweeps.Tick();  // trial 0 ended: trial 2 is submitted, still 2 live
  EXPECT_EQ(live_trials(), 2);
  jobs.Tick();
  EXPECT_EQ(jobs.Get(u->id)->state, JobState::kScheduled);
  EXPECT_EQ(jobs.Get(t1)->state, JobState::kQueued);
  // An ordinary job of the sweep's priority, submitted after trial 2, waits
  // behind trials 1 and 2 in submission order; one submitted before trial 2
  // would have gone first.
  common::JobConfig later = urgent;
  later.name = "later";
  later.output_dir = (dir_ / "later").string();
  later.priority = 0;
  auto l = jobs.Submit(later, "{}", "");
  finish(u->id);
  jobs.Tick();
  EXPECT_EQ(jobs.Get(t1)->state, JobState::kScheduled);
  finish(t1);
  sweeps.Tick();
  jobs.Tick();
  const std::string t2 = sweeps.Get(s->id)->trials[2].job_id;
  EXPECT_EQ(jobs.Get(t2)->state, JobState::kScheduled);
  EXPECT_EQ(jobs.Get(l->id)->state, JobState::kQueued);
  EXPECT_LE(live_trials(), 2);
  EXPECT_EQ(sweeps.Get(s->id)->trials.size(), 3u);
}

}  // namespace
}  // namespace attune::coordinator::sweep
