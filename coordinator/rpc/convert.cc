#include "coordinator/rpc/convert.h"

#include <google/protobuf/util/json_util.h>

namespace attune::coordinator::rpc {
namespace {

void Fill(const ProgressInfo& p, v1::Progress* out) {
  out->set_step(p.step);
  out->set_total_steps(p.total_steps);
  out->set_epoch(p.epoch);
  out->set_loss(p.loss);
  out->set_learning_rate(p.learning_rate);
  out->set_samples_per_second(p.samples_per_second);
}
void Fill(const EvalInfo& e, v1::Metrics* out) {
  out->set_step(e.step);
  for (const auto& [name, v] : e.metrics) (*out->mutable_values())[name] = v;
}

}  // namespace

v1::Job ToProto(const Job& j) {
  v1::Job out;
  out.set_id(j.id);
  // spec_json was written from a JobSpec by this server; a failure leaves the spec empty.
  (void)google::protobuf::util::JsonStringToMessage(j.spec_json, out.mutable_spec());
  out.set_state(static_cast<v1::JobState>(j.state));
  out.set_message(j.message);
  out.set_generation(j.generation);
  out.set_restarts(j.restarts);
  out.set_created_unix_ms(j.created_ms);
  out.set_updated_unix_ms(j.updated_ms);
  Fill(j.progress, out.mutable_progress());
  Fill(j.last_eval, out.mutable_last_eval());
  if (!j.baseline.metrics.empty()) Fill(j.baseline, out.mutable_baseline());
  out.set_baseline_method(j.baseline_method);
  out.set_last_checkpoint_step(j.last_checkpoint_step);
  for (const auto& w : j.workers) out.add_workers(w);
  out.set_owner(j.owner);
  return out;
}

v1::JobEvent ToProto(const Event& e) {
  v1::JobEvent out;
  out.set_index(e.index);
  out.set_unix_ms(e.unix_ms);
  out.set_type(static_cast<v1::JobEvent::Type>(e.type));
  out.set_state(static_cast<v1::JobState>(e.state));
  out.set_message(e.message);
  Fill(e.progress, out.mutable_progress());
  Fill(e.eval, out.mutable_metrics());
  out.set_generation(e.generation);
  return out;
}

Event FromProto(const v1::JobEvent& e) {
  Event out;
  out.type = static_cast<EventType>(e.type());
  out.message = e.message();
  out.progress = {e.progress().step(), e.progress().total_steps(), e.progress().epoch(), e.progress().loss(),
                  e.progress().learning_rate(), e.progress().samples_per_second()};
  out.eval.step = e.metrics().step();
  out.eval.metrics.insert(e.metrics().values().begin(), e.metrics().values().end());
  return out;
}

}  // namespace attune::coordinator::rpc
