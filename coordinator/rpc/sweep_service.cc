#include "coordinator/rpc/sweep_service.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/job_spec.h"
#include "common/task_catalog.h"
#include "coordinator/rpc/call_recorder.h"

namespace attune::coordinator::rpc {

using common::ToGrpc;
namespace pb = google::protobuf;

namespace {

std::string Json(const pb::Message& m) {
  pb::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)pb::util::MessageToJsonString(m, &out, o);
  return out;
}

}  // namespace

absl::StatusOr<sweep::SweepConfig> SweepConfigFromProto(const v1::SweepSpec& spec) {
  using sweep::ParamDomain;
  std::vector<std::string> errors;
  sweep::SweepConfig c;
  c.name = spec.name().empty() ? spec.spec().name() : spec.name();
  c.base_spec_json = Json(spec.spec());
  c.output_dir = spec.spec().output_dir();
  c.task = spec.spec().task().type();
  for (const auto& [path, p] : spec.parameters()) {
    const std::string f = absl::StrCat("parameters.", path);
    const int kinds = (p.choice_size() > 0) + (p.int_range_size() > 0) + (p.uniform_size() > 0) + (p.log_uniform_size() > 0);
    if (kinds != 1) {
      errors.push_back(absl::StrCat(f, ": give exactly one of choice, int_range, uniform, log_uniform"));
      continue;
    }
    ParamDomain d;
    d.path = path;
    auto range = [&](auto values, ParamDomain::Kind kind, const char* name) {
      d.kind = kind;
      if (values.size() != 2) {
        errors.push_back(absl::StrCat(f, ": ", name, " needs [low, high]"));
        return;
      }
      d.low = static_cast<double>(values[0]);
      d.high = static_cast<double>(values[1]);
    };
    if (p.choice_size() > 0) {
      d.kind = ParamDomain::Kind::kChoice;
      for (const auto& v : p.choice()) {
        if (v.kind_case() == pb::Value::kStructValue || v.kind_case() == pb::Value::kListValue ||
            v.kind_case() == pb::Value::kNullValue || v.kind_case() == pb::Value::KIND_NOT_SET) {
          errors.push_back(absl::StrCat(f, ": a choice must be a string, a number or a boolean"));
          break;
        }
        d.choices.push_back(Json(v));
      }
    } else if (p.int_range_size() > 0) {
      range(p.int_range(), ParamDomain::Kind::kIntRange, "int_range");
    } else if (p.uniform_size() > 0) {
      range(p.uniform(), ParamDomain::Kind::kUniform, "uniform");
    } else {
      range(p.log_uniform(), ParamDomain::Kind::kLogUniform, "log_uniform");
    }
    c.params.push_back(d);
  }
  const common::TaskInfo* task = common::FindTask(c.task);
  c.objective = spec.objective().metric();
  if (c.objective.empty() && task) c.objective = task->default_objective;
  const std::string& goal = spec.objective().goal();
  if (goal == "max" || goal == "min") {
    c.maximize = goal == "max";
  } else if (goal.empty()) {
    const common::MetricInfo* m = task ? common::FindMetric(*task, c.objective) : nullptr;
    c.maximize = m ? m->higher_is_better : true;
  } else {
    errors.push_back(absl::StrCat("objective.goal: '", goal, "' is not max or min"));
  }
  c.algorithm = spec.algorithm().type().empty() ? "random" : spec.algorithm().type();
  c.seed = spec.algorithm().has_seed() ? spec.algorithm().seed() : 0;
  c.max_trials = spec.max_trials();
  c.parallel_trials = spec.parallel_trials() == 0 ? 1 : spec.parallel_trials();
  const auto& e = spec.early_stopping();
  auto& es = c.early_stopping;
  const int64_t every = spec.spec().evaluation().every_steps();
  if (e.type().empty() || e.type() == "none") {
    es.type = sweep::EarlyStopConfig::Type::kNone;
  } else if (e.type() == "asha" || e.type() == "median") {
    es.type = e.type() == "asha" ? sweep::EarlyStopConfig::Type::kAsha : sweep::EarlyStopConfig::Type::kMedian;
    if (every <= 0) {
      errors.push_back(absl::StrCat("spec.evaluation.every_steps: early_stopping ", e.type(),
                                    " compares trials at their evaluations; set it > 0"));
    }
    if (e.grace_steps() > 0 && e.grace_evaluations() > 0) {
      errors.push_back("early_stopping: give grace_steps or grace_evaluations, not both");
    }
    if (e.max_steps() > 0 && e.max_evaluations() > 0) {
      errors.push_back("early_stopping: give max_steps or max_evaluations, not both");
    }
    es.grace_steps = e.grace_evaluations() > 0 ? e.grace_evaluations() * every : e.grace_steps();
    es.max_steps = e.max_evaluations() > 0 ? e.max_evaluations() * every : e.max_steps();
    es.reduction_factor = e.reduction_factor() == 0 ? 4 : e.reduction_factor();
    es.min_trials = e.min_trials() == 0 ? 3 : e.min_trials();
    es.start_step = e.start_step();
  } else {
    errors.push_back(absl::StrCat("early_stopping.type: '", e.type(), "' is not none, median or asha"));
  }
  for (const auto& [k, v] : spec.spec().labels()) {
    if (k.rfind("attune.dev/", 0) == 0) errors.push_back(absl::StrCat("spec.labels.", k, ": the attune.dev/ prefix is reserved"));
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return c;
}

v1::Sweep ToProto(const sweep::SweepRecord& s) {
  v1::Sweep out;
  out.set_id(s.id);
  (void)pb::util::JsonStringToMessage(s.spec_json, out.mutable_spec());
  out.set_state(static_cast<v1::SweepState>(s.state));
  out.set_message(s.message);
  out.set_owner(s.owner);
  int64_t steps = 0;
  for (const auto& t : s.trials) {
    auto* o = out.add_trials();
    o->set_trial(t.index);
    o->set_job_id(t.job_id);
    for (const auto& [path, literal] : t.params) {
      pb::Value v;
      if (pb::util::JsonStringToMessage(literal, &v).ok()) (*o->mutable_parameters())[path] = v;
    }
    o->set_state(static_cast<v1::JobState>(t.state));
    double value = 0;
    if (sweep::TrialObjective(t, &value)) o->set_objective(value);
    if (!t.curve.empty()) {
      double best = t.curve.begin()->second;
      for (const auto& [step, v] : t.curve) best = s.config.maximize ? std::max(best, v) : std::min(best, v);
      o->set_best_objective(best);
    }
    o->set_steps(t.steps);
    o->set_stopped_early(t.stopped_early);
    o->set_stopped_reason(t.stopped_reason);
    o->set_message(t.message);
    for (const auto& [step, v] : t.curve) {
      auto* p = o->add_curve();
      p->set_step(step);
      p->set_value(v);
    }
    steps += t.steps;
  }
  if (s.best_trial >= 0) {
    out.mutable_best()->set_trial(s.best_trial);
    out.mutable_best()->set_objective(s.best_objective);
    out.mutable_best()->set_job_id(s.trials[static_cast<size_t>(s.best_trial)].job_id);
    out.mutable_best()->set_model_dir(absl::StrCat(s.config.output_dir, "/trial-", s.best_trial, "/model"));
  }
  out.set_created_unix_ms(s.created_ms);
  out.set_updated_unix_ms(s.updated_ms);
  out.set_trial_steps(steps);
  out.set_version(s.version);
  return out;
}

sweep::SpecCompiler MakeSpecCompiler() {
  return [](const std::string& spec_json, std::string* canonical) -> absl::StatusOr<common::JobConfig> {
    auto spec = common::ParseJobSpec(spec_json, "trial spec");
    if (!spec.ok()) return spec.status();
    *canonical = Json(*spec);
    return common::JobConfigFromProto(*spec);
  };
}

grpc::Status SweepServiceImpl::Authorize(grpc::ServerContext* ctx, const std::string& sweep_id, Caller* caller) const {
  Caller who;
  if (auto a = auth_.Check(ctx, Api::kJobs, &who); !a.ok()) return a;
  if (caller != nullptr) *caller = who;
  if (sweep_id.empty()) return grpc::Status::OK;
  auto s = manager_.Get(sweep_id);
  if (!s.ok()) return ToGrpc(s.status());
  return CheckOwned(who, s->owner, "sweep " + sweep_id);
}

grpc::Status SweepServiceImpl::SubmitSweep(grpc::ServerContext* ctx, const v1::SubmitSweepRequest* req, v1::Sweep* out) {
  CallRecorder rec(metrics_, "SubmitSweep");
  Caller who;
  if (auto a = Authorize(ctx, "", &who); !a.ok()) return rec(a);
  if (req->spec().spec().priority() != 0) {
    if (auto a = auth_.Check(ctx, Api::kAdmin); !a.ok()) {
      return rec(grpc::Status(a.error_code(), absl::StrCat("spec.priority: ", a.error_message())));
    }
  }
  auto config = SweepConfigFromProto(req->spec());
  if (!config.ok()) return rec(ToGrpc(config.status()));
  // What the sweep resource shows: the spec with its defaults resolved.
  v1::SweepSpec resolved = req->spec();
  resolved.set_name(config->name);
  resolved.mutable_objective()->set_metric(config->objective);
  resolved.mutable_objective()->set_goal(config->maximize ? "max" : "min");
  resolved.mutable_algorithm()->set_type(config->algorithm);
  resolved.mutable_algorithm()->set_seed(config->seed);
  resolved.set_parallel_trials(config->parallel_trials);
  auto s = manager_.Submit(*config, Json(resolved), req->idempotency_key(), Submitter{who.name, who.admin});
  if (!s.ok()) return rec(ToGrpc(s.status()));
  *out = ToProto(*s);
  return rec(grpc::Status::OK);
}

grpc::Status SweepServiceImpl::GetSweep(grpc::ServerContext* ctx, const v1::GetSweepRequest* req, v1::Sweep* out) {
  CallRecorder rec(metrics_, "GetSweep");
  if (auto a = Authorize(ctx, req->sweep_id()); !a.ok()) return rec(a);
  auto s = manager_.Get(req->sweep_id());
  if (!s.ok()) return rec(ToGrpc(s.status()));
  *out = ToProto(*s);
  return rec(grpc::Status::OK);
}

grpc::Status SweepServiceImpl::ListSweeps(grpc::ServerContext* ctx, const v1::ListSweepsRequest*,
                                          v1::ListSweepsResponse* out) {
  CallRecorder rec(metrics_, "ListSweeps");
  Caller who;
  if (auto a = Authorize(ctx, "", &who); !a.ok()) return rec(a);
  for (const auto& s : manager_.List()) {
    if (who.Owns(s.owner)) *out->add_sweeps() = ToProto(s);
  }
  return rec(grpc::Status::OK);
}

grpc::Status SweepServiceImpl::CancelSweep(grpc::ServerContext* ctx, const v1::CancelSweepRequest* req, v1::Sweep* out) {
  CallRecorder rec(metrics_, "CancelSweep");
  if (auto a = Authorize(ctx, req->sweep_id()); !a.ok()) return rec(a);
  auto s = manager_.Cancel(req->sweep_id());
  if (!s.ok()) return rec(ToGrpc(s.status()));
  *out = ToProto(*s);
  return rec(grpc::Status::OK);
}

grpc::Status SweepServiceImpl::WatchSweep(grpc::ServerContext* ctx, const v1::WatchSweepRequest* req,
                                          grpc::ServerWriter<v1::Sweep>* writer) {
  if (auto a = Authorize(ctx, req->sweep_id()); !a.ok()) return a;
  int64_t seen = -1;
  while (!ctx->IsCancelled()) {
    auto s = manager_.WaitChange(req->sweep_id(), seen, absl::Seconds(1));
    if (!s.ok()) return ToGrpc(s.status());
    if (s->version > seen) {
      if (!writer->Write(ToProto(*s))) return grpc::Status(grpc::CANCELLED, "watcher went away");
      seen = s->version;
      if (sweep::IsTerminal(s->state)) return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::CANCELLED, "watch cancelled");
}

}  // namespace attune::coordinator::rpc
