#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "attune/v1/coordinator.grpc.pb.h"
#include "worker/agent/agent.h"

namespace attune::worker::agent {

// CoordinatorClient over gRPC; every call has a deadline.
class GrpcCoordinatorClient : public CoordinatorClient {
 public:
  // `token`, when not empty, is sent as a bearer token on every call.
  GrpcCoordinatorClient(std::shared_ptr<grpc::Channel> channel, absl::Duration deadline, std::string token = "");
  absl::Status Register(const RegistrationInfo& info) override;
  absl::StatusOr<HeartbeatReply> Heartbeat(const std::string& worker_id, const std::vector<TaskState>& tasks) override;
  absl::Status Report(const std::string& worker_id, const TrainerEvent& event) override;

 private:
  void SetDeadline(grpc::ClientContext* ctx) const;
  std::string Session() const;
  mutable std::mutex mu_;
  std::string session_;  // NOTE [worker sessions]: from the last registration, sent on every call
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  absl::Duration deadline_;
  std::string token_;
};

}  // namespace attune::worker::agent
