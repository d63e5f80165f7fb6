#include "worker/agent/rpc/grpc_coordinator_client.h"

#include <nlohmann/json.hpp>

#include "common/rpc/grpc_status.h"

namespace attune::worker::agent {

GrpcCoordinatorClient::GrpcCoordinatorClient(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline,
                                             std::string token)
    : stub_(v1::WorkerService::NewStub(std::move(channel))), deadline_(deadline), token_(std::move(token)) {}

std::string GrpcCoordinatorClient::Session() const {
  std::lock_guard<std::mutex> l(mu_);
  return session_;
}

void GrpcCoordinatorClient::SetDeadline(grpc::ClientContext* ctx) const {
  ctx->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline_));
  if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
}

absl::Status GrpcCoordinatorClient::Register(const RegistrationInfo& info) {
  v1::RegisterRequest req;
  req.set_worker_id(info.worker_id);
  req.set_host(info.host);
  req.set_cpus(info.cpus);
  req.set_gpus(info.gpus);
  req.set_rendezvous_port(info.rendezvous_port);
  req.set_session(Session());
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  absl::Status s = common::FromGrpc(stub_->Register(&ctx, req, &resp));
  if (s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    session_ = resp.session();
  }
  return s;
}

absl::StatusOr<HeartbeatReply> GrpcCoordinatorClient::Heartbeat(const std::string& worker_id,
                                                                const std::vector<TaskState>& tasks) {
  v1::HeartbeatRequest req;
  req.set_worker_id(worker_id);
  req.set_session(Session());
  for (const auto& t : tasks) {
    auto* o = req.add_tasks();
    o->set_job_id(t.job_id);
    o->set_generation(t.generation);
    o->set_rank(t.rank);
    o->set_running(t.running);
    o->set_exit_code(t.exit_code);
    if (!t.running) {
      o->set_error(t.error);
      o->set_stopped_unreachable(t.stopped_unreachable);
    }
    for (const auto& l : t.log_lines) o->add_log_lines(l);
  }
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  if (auto s = common::FromGrpc(stub_->Heartbeat(&ctx, req, &resp)); !s.ok()) return s;
  HeartbeatReply out;
  out.reregister = resp.reregister();
  for (const auto& a : resp.start()) {
    out.start.push_back({a.job_id(), a.generation(), a.rank(), a.world_size(), a.rendezvous(), a.backend(),
                         a.spec_json(), a.rendezvous_secret()});
  }
  for (const auto& s : resp.stop()) out.stop.emplace_back(s.job_id(), s.generation());
  return out;
}

absl::Status GrpcCoordinatorClient::Report(const std::string& worker_id, const TrainerEvent& event) {
  auto j = nlohmann::json::parse(event.json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::OkStatus();  // not an event line: dropped
  v1::ProgressReport req;
  req.set_worker_id(worker_id);
  req.set_session(Session());
  req.set_job_id(event.job_id);
  req.set_generation(event.generation);
  req.set_rank(event.rank);
  auto* e = req.mutable_event();
  const std::string type = j.value("type", "");
  auto* p = e->mutable_progress();
  p->set_step(j.value("step", int64_t{0}));
  p->set_total_steps(j.value("total", int64_t{0}));
  p->set_epoch(j.value("epoch", 0.0));
  p->set_loss(j.value("loss", 0.0));
  p->set_learning_rate(j.value("lr", 0.0));
  p->set_samples_per_second(j.value("sps", 0.0));
  if (type == "progress") {
    e->set_type(v1::JobEvent::PROGRESS);
  } else if (type == "eval" || type == "baseline") {
    e->set_type(type == "eval" ? v1::JobEvent::EVALUATION : v1::JobEvent::BASELINE);
    if (type == "baseline" && j.contains("method") && j["method"].is_string()) e->set_message(j["method"].get<std::string>());
    auto* m = e->mutable_metrics();
    m->set_step(j.value("step", int64_t{0}));
    if (j.contains("metrics") && j["metrics"].is_object()) {
      for (const auto& [name, v] : j["metrics"].items()) {
        if (v.is_number()) (*m->mutable_values())[name] = v.get<double>();
      }
    }
  } else if (type == "checkpoint") {
    e->set_type(v1::JobEvent::CHECKPOINT);
    e->set_message(j.value("dir", ""));
  } else {
    return absl::OkStatus();
  }
  v1::ProgressAck ack;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  return common::FromGrpc(stub_->ReportProgress(&ctx, req, &ack));
}

}  // namespace attune::worker::agent
