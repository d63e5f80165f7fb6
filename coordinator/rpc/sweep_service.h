#pragma once

// The SweepService over gRPC, and the conversions between attune.v1 sweep
// messages and the domain's SweepConfig / SweepRecord. Like the job
// services, it holds no state: validate and convert, call the SweepManager,
// convert back. `manager` must outlive it.

#include "attune/v1/sweep.grpc.pb.h"
#include "common/metrics.h"
#include "coordinator/rpc/auth.h"
#include "coordinator/sweep/sweep_manager.h"
#include "coordinator/sweep/trial_jobs.h"

namespace attune::coordinator::rpc {

// kInvalidArgument naming each field that cannot be converted; the domain
// checks the rest (ValidateSweepConfig, the probes at submit).
absl::StatusOr<sweep::SweepConfig> SweepConfigFromProto(const v1::SweepSpec& spec);
v1::Sweep ToProto(const sweep::SweepRecord& s);

// Parses a trial's spec JSON as a JobSpec (unknown fields and wrong types
// refused with their paths) into its canonical JSON and JobConfig.
sweep::SpecCompiler MakeSpecCompiler();

class SweepServiceImpl final : public v1::SweepService::Service {
 public:
  SweepServiceImpl(sweep::SweepManager& manager, const TokenAuthorizer& auth, common::Metrics& metrics)
      : manager_(manager), auth_(auth), metrics_(metrics) {}
  grpc::Status SubmitSweep(grpc::ServerContext*, const v1::SubmitSweepRequest*, v1::Sweep*) override;
  grpc::Status GetSweep(grpc::ServerContext*, const v1::GetSweepRequest*, v1::Sweep*) override;
  grpc::Status ListSweeps(grpc::ServerContext*, const v1::ListSweepsRequest*, v1::ListSweepsResponse*) override;
  grpc::Status CancelSweep(grpc::ServerContext*, const v1::CancelSweepRequest*, v1::Sweep*) override;
  // NOTE [sync streaming], as WatchJob.
  grpc::Status WatchSweep(grpc::ServerContext*, const v1::WatchSweepRequest*, grpc::ServerWriter<v1::Sweep>*) override;

 private:
  // The auth check of a sweep call, then (for a call on one sweep) that the
  // caller owns it or is an admin.
  grpc::Status Authorize(grpc::ServerContext* ctx, const std::string& sweep_id, Caller* caller = nullptr) const;

  sweep::SweepManager& manager_;
  const TokenAuthorizer& auth_;
  common::Metrics& metrics_;
};

}  // namespace attune::coordinator::rpc
