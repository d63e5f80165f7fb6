#pragma once

// CallRecorder: counts a gRPC call by method and code, and observes its
// latency, when the handler returns through it.

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "common/metrics.h"

namespace attune::coordinator::rpc {

class CallRecorder {
 public:
  CallRecorder(common::Metrics& m, const char* method) : m_(m), method_(method), start_(absl::Now()) {}
  grpc::Status operator()(grpc::Status s) {
    static const char* kCodes[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                   "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                   "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                                   "DATA_LOSS", "UNAUTHENTICATED"};
    int code = static_cast<int>(s.error_code());
    m_.AddCounter("attune_coordinator_grpc_requests_total", "gRPC calls handled, by method and status code",
                  {{"method", method_}, {"code", code >= 0 && code <= 16 ? kCodes[code] : "UNKNOWN"}}, 1);
    m_.Observe("attune_coordinator_grpc_request_seconds", "gRPC call latency", {{"method", method_}},
               {0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5},
               absl::ToDoubleSeconds(absl::Now() - start_));
    return s;
  }

 private:
  common::Metrics& m_;
  const char* method_;
  absl::Time start_;
};

}  // namespace attune::coordinator::rpc
