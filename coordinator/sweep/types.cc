#include "coordinator/sweep/types.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/json_fields.h"

namespace attune::coordinator::sweep {
namespace {

using common::JsonEnumAt;
using common::JsonInt;
using common::JsonIntAt;
using common::JsonToInt;
using nlohmann::json;

json CurveJson(const std::map<int64_t, double>& m) {
  json a = json::array();
  for (const auto& [k, v] : m) a.push_back({k, v});
  return a;
}
std::map<int64_t, double> CurveFrom(const json& a) {
  std::map<int64_t, double> m;
  if (!a.is_array()) return m;
  for (const auto& p : a) {
    int64_t step = 0;
    if (p.is_array() && p.size() == 2 && JsonToInt(p[0], &step) && p[1].is_number()) m[step] = p[1].get<double>();
  }
  return m;
}

}  // namespace

std::string SweepToJson(const SweepRecord& s) {
  const SweepConfig& c = s.config;
  json params = json::array();
  for (const auto& p : c.params) {
    params.push_back({{"path", p.path}, {"kind", static_cast<int>(p.kind)}, {"choices", p.choices},
                      {"low", p.low}, {"high", p.high}});
  }
  const auto& e = c.early_stopping;
  json trials = json::array();
  for (const auto& t : s.trials) {
    trials.push_back({{"index", t.index}, {"params", t.params}, {"job_id", t.job_id},
                      {"state", static_cast<int>(t.state)}, {"terminal", t.terminal}, {"curve", CurveJson(t.curve)},
                      {"has_final", t.has_final}, {"final", t.final_objective}, {"steps", t.steps},
                      {"stopped_early", t.stopped_early}, {"stopped_reason", t.stopped_reason},
                      {"message", t.message}, {"rungs", CurveJson(t.rungs)}});
  }
  json j = {{"id", s.id},
            {"seq", s.seq},
            {"idem", s.idempotency_key},
            {"spec_json", s.spec_json},
            {"config",
             {{"name", c.name}, {"base_spec_json", c.base_spec_json}, {"output_dir", c.output_dir},
              {"task", c.task}, {"params", params}, {"objective", c.objective}, {"maximize", c.maximize},
              {"algorithm", c.algorithm}, {"seed", c.seed}, {"max_trials", c.max_trials},
              {"parallel_trials", c.parallel_trials},
              {"early_stopping",
               {{"type", static_cast<int>(e.type)}, {"grace_steps", e.grace_steps},
                {"reduction_factor", e.reduction_factor}, {"max_steps", e.max_steps}, {"min_trials", e.min_trials},
                {"start_step", e.start_step}}}}},
            {"state", static_cast<int>(s.state)},
            {"message", s.message},
            {"trials", trials},
            {"best_trial", s.best_trial},
            {"best_objective", s.best_objective},
            {"created_ms", s.created_ms},
            {"owner", s.owner},
            {"owner_admin", s.owner_admin},
            {"updated_ms", s.updated_ms},
            {"version", s.version},
            {"cancel_requested", s.cancel_requested}};
  return j.dump();
}

absl::StatusOr<SweepRecord> SweepFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("config")) return absl::DataLossError("a stored sweep is not valid JSON");
  try {
    SweepRecord s;
    s.id = j.at("id").get<std::string>();
    s.seq = JsonIntAt(j, "seq");
    s.idempotency_key = j.value("idem", "");
    s.spec_json = j.value("spec_json", "");
    const json& c = j.at("config");
    s.config.name = c.at("name").get<std::string>();
    s.config.base_spec_json = c.at("base_spec_json").get<std::string>();
    s.config.output_dir = c.at("output_dir").get<std::string>();
    s.config.task = c.value("task", "");
    for (const auto& p : c.at("params")) {
      ParamDomain d;
      d.path = p.at("path").get<std::string>();
      d.kind = JsonEnumAt<ParamDomain::Kind>(p, "kind", 0, static_cast<int>(ParamDomain::Kind::kLogUniform));
      d.choices = p.at("choices").get<std::vector<std::string>>();
      d.low = p.at("low").get<double>();
      d.high = p.at("high").get<double>();
      s.config.params.push_back(d);
    }
    s.config.objective = c.at("objective").get<std::string>();
    s.config.maximize = c.at("maximize").get<bool>();
    s.config.algorithm = c.at("algorithm").get<std::string>();
    s.config.seed = JsonIntAt(c, "seed");
    s.config.max_trials = JsonIntAt(c, "max_trials");
    s.config.parallel_trials = JsonIntAt(c, "parallel_trials");
    const json& e = c.at("early_stopping");
    auto& es = s.config.early_stopping;
    es.type = JsonEnumAt<EarlyStopConfig::Type>(e, "type", 0, static_cast<int>(EarlyStopConfig::Type::kAsha));
    es.grace_steps = JsonIntAt(e, "grace_steps");
    es.reduction_factor = JsonIntAt(e, "reduction_factor");
    es.max_steps = JsonIntAt(e, "max_steps");
    es.min_trials = JsonIntAt(e, "min_trials");
    es.start_step = JsonIntAt(e, "start_step");
    s.state = JsonEnumAt<SweepState>(j, "state", static_cast<int>(SweepState::kRunning),
                                     static_cast<int>(SweepState::kCancelled));
    s.message = j.value("message", "");
    for (const auto& t : j.at("trials")) {
      TrialRecord r;
      r.index = JsonIntAt(t, "index");
      r.params = t.at("params").get<std::map<std::string, std::string>>();
      r.job_id = t.value("job_id", "");
      r.state = JsonEnumAt<JobState>(t, "state", static_cast<int>(JobState::kValidating),
                                     static_cast<int>(JobState::kUnschedulable));
      r.terminal = t.at("terminal").get<bool>();
      r.curve = CurveFrom(t.at("curve"));
      r.has_final = t.at("has_final").get<bool>();
      r.final_objective = t.at("final").get<double>();
      r.steps = JsonIntAt(t, "steps");
      r.stopped_early = t.at("stopped_early").get<bool>();
      r.stopped_reason = t.value("stopped_reason", "");
      r.message = t.value("message", "");
      r.rungs = CurveFrom(t.at("rungs"));
      s.trials.push_back(std::move(r));
    }
    s.best_trial = JsonInt(j, "best_trial", -1);
    s.best_objective = j.value("best_objective", 0.0);
    s.created_ms = JsonInt(j, "created_ms", 0);
    s.owner = j.value("owner", "");
    s.owner_admin = j.value("owner_admin", s.owner.empty());
    s.updated_ms = JsonInt(j, "updated_ms", 0);
    s.version = JsonInt(j, "version", 0);
    s.cancel_requested = j.value("cancel_requested", false);
    // What the rest of the coordinator indexes by: trial i at position i, the
    // best trial one of them.
    for (size_t i = 0; i < s.trials.size(); ++i) {
      if (s.trials[i].index != static_cast<int64_t>(i)) {
        return absl::DataLossError(absl::StrCat("trial at position ", i, " has index ", s.trials[i].index));
      }
      if (s.trials[i].steps < 0) return absl::DataLossError(absl::StrCat("trial ", i, " has negative steps"));
    }
    if (s.best_trial < -1 || s.best_trial >= static_cast<int64_t>(s.trials.size())) {
      return absl::DataLossError(absl::StrCat("best_trial ", s.best_trial, " is not one of its ", s.trials.size(),
                                              " trials"));
    }
    return s;
  } catch (const std::exception& e) {  // json::exception, or std::out_of_range from common/json_fields.h
    return absl::DataLossError(absl::StrCat("a stored sweep is malformed: ", e.what()));
  }
}

const char* SweepStateName(SweepState s) {
  switch (s) {
    case SweepState::kRunning: return "RUNNING";
    case SweepState::kSucceeded: return "SUCCEEDED";
    case SweepState::kFailed: return "FAILED";
    case SweepState::kCancelling: return "CANCELLING";
    case SweepState::kCancelled: return "CANCELLED";
  }
  return "UNKNOWN";
}

bool TrialObjective(const TrialRecord& t, double* value) {
  if (t.has_final) {
    *value = t.final_objective;
    return true;
  }
  if (t.curve.empty()) return false;
  *value = t.curve.rbegin()->second;
  return true;
}

}  // namespace attune::coordinator::sweep
