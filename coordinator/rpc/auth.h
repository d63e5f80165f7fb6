#pragma once

// Bearer-token authentication per role. Tokens come from files (one per
// line); a call carries "authorization: Bearer <token>". Roles: `submit`
// (the job API), `worker` (the agent API), `admin` (both). With no token
// files configured every call is allowed. Tokens are never logged.
// Thread-safe after construction.

#include <map>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace attune::coordinator::rpc {

// kAdmin: what only an admin may do (set a job's priority).
enum class Api { kJobs, kWorkers, kAdmin };

class TokenAuthorizer {
 public:
  TokenAuthorizer() = default;
  // role -> token file; a missing or empty file is an error.
  static absl::StatusOr<TokenAuthorizer> FromFiles(const std::map<std::string, std::string>& files);
  bool enabled() const { return !tokens_.empty(); }
  // OK; UNAUTHENTICATED without a known token; PERMISSION_DENIED when the
  // token's role may not use `api`.
  grpc::Status Check(const grpc::ServerContext* ctx, Api api) const;

 private:
  std::vector<std::pair<std::string, std::string>> tokens_;  // (token, role)
};

}  // namespace attune::coordinator::rpc
