#pragma once

// The gRPC services. They hold no state, locks or policy: validate and
// convert, call the JobManager, convert back, map the Status.
// `manager` must outlive them.

#include "attune/v1/coordinator.grpc.pb.h"
#include "coordinator/job_manager.h"
#include "common/metrics.h"
#include "coordinator/rpc/auth.h"
#include "coordinator/rpc/rate_limiter.h"

namespace attune::coordinator::rpc {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobManager& manager, const TokenAuthorizer& auth, common::Metrics& metrics)
      : manager_(manager), auth_(auth), metrics_(metrics) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*, v1::Job*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*, v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;
  // NOTE [sync streaming]: a watcher holds one server thread while it
  // streams, waking at least every second to notice cancellation.
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*, grpc::ServerWriter<v1::JobEvent>*) override;
  grpc::Status GetJobLogs(grpc::ServerContext*, const v1::GetJobLogsRequest*, v1::GetJobLogsResponse*) override;
  grpc::Status GetArtifact(grpc::ServerContext*, const v1::GetArtifactRequest*,
                           grpc::ServerWriter<v1::ArtifactChunk>*) override;
  grpc::Status ListJobEvents(grpc::ServerContext*, const v1::ListJobEventsRequest*, v1::ListJobEventsResponse*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*, v1::ListWorkersResponse*) override;

 private:
  // The auth check of a job API call, then (for a call on one job) that the
  // caller owns `job_id` or is an admin: NOT_FOUND or PERMISSION_DENIED.
  grpc::Status Authorize(grpc::ServerContext* ctx, const std::string& job_id, Caller* caller = nullptr) const;

  JobManager& manager_;
  const TokenAuthorizer& auth_;
  common::Metrics& metrics_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  // `registrations_per_s`: the rate of Register calls served (a burst of 5 s
  // worth at once); beyond it RESOURCE_EXHAUSTED, which agents retry.
  WorkerServiceImpl(JobManager& manager, const TokenAuthorizer& auth, common::Metrics& metrics,
                    double registrations_per_s = 100)
      : manager_(manager), auth_(auth), metrics_(metrics),
        registrations_(registrations_per_s, std::max(1.0, 5 * registrations_per_s)) {}
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*, v1::RegisterResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*, v1::HeartbeatResponse*) override;
  grpc::Status ReportProgress(grpc::ServerContext*, const v1::ProgressReport*, v1::ProgressAck*) override;

 private:
  JobManager& manager_;
  const TokenAuthorizer& auth_;
  common::Metrics& metrics_;
  RateLimiter registrations_;
};

}  // namespace attune::coordinator::rpc
