#pragma once

// Authentication per role: bearer tokens, or the client certificate (see
// NOTE [certificate roles]). Tokens come from files, one per
// line, each either "TOKEN" or "NAME TOKEN"; a call carries
// "authorization: Bearer <token>". Roles: `submit` (the job API), `worker`
// (the agent API), `admin` (both, and every submitter's jobs). NAME is the
// caller's identity, recorded as the owner of what it submits; a token
// without one is known as "token-" and the first 8 hex digits of its
// SHA-256. With no token files configured every call is allowed, as an admin.
// Tokens are never logged. Thread-safe after construction.
//
// Parses the subject Organization entries of a PEM certificate and returns
// the roles among them ("attune:ROLE"); kInvalidArgument for an unknown
// "attune:" role or a certificate that does not parse. Exposed for tests.

#include <map>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace attune::coordinator::rpc {

// kAdmin: what only an admin may do (set a job's priority).
enum class Api { kJobs, kWorkers, kAdmin };

absl::StatusOr<std::vector<std::string>> CertificateRoles(const std::string& pem);

struct Caller;
// OK when `worker_id` is one of the caller's certificate names, or when
// certificate identities are off (no names); else PERMISSION_DENIED.
grpc::Status CheckWorkerId(const Caller& caller, const std::string& worker_id);
// OK when the caller may act on what `owner` owns (its own, or an admin);
// else PERMISSION_DENIED naming `what` ("job j-1", "sweep s-1").
grpc::Status CheckOwned(const Caller& caller, const std::string& owner, const std::string& what);

// Who made a call: the identity its token names, and whether it may act on
// everyone's jobs.
struct Caller {
  std::string name;    // empty when authentication is off
  bool admin = false;  // an admin token, or authentication off
  // With certificate identities: the client certificate's common name and
  // DNS names, the identities a worker id must be one of.
  std::vector<std::string> certificate_names;
  // Whether this caller may see and act on a job or sweep owned by `owner`.
  bool Owns(const std::string& owner) const { return admin || owner == name; }
};

class TokenAuthorizer {
 public:
  TokenAuthorizer() = default;
  // role -> token file; a missing or empty file is an error.
  static absl::StatusOr<TokenAuthorizer> FromFiles(const std::map<std::string, std::string>& files);
  bool enabled() const { return !tokens_.empty() || certificate_identities_ || certificate_roles_; }
  // NOTE [certificate identities]: under mutual TLS, a caller is also who its
  // client certificate names (CN, or a DNS subjectAltName): its jobs' owner
  // is the certificate's CN, and a worker may only speak for a worker id its
  // certificate names (CheckWorkerId). A call without a client certificate
  // name is UNAUTHENTICATED. Roles still come from tokens (all roles when no
  // token files are set).
  void set_certificate_identities(bool on) { certificate_identities_ = on; }
  bool certificate_identities() const { return certificate_identities_; }
  // NOTE [certificate roles]: with certificate identities, the roles may come
  // from the certificate too, as Kubernetes takes groups from O: each subject
  // Organization "attune:submit", "attune:worker" or "attune:admin" grants
  // that role, and no token is needed. A certificate that names no role falls
  // back to the bearer token (when token files are set; else
  // PERMISSION_DENIED); an "attune:" organization that is not a role is
  // refused.
  void set_certificate_roles(bool on) { certificate_roles_ = on; }
  // OK; UNAUTHENTICATED without a known token; PERMISSION_DENIED when the
  // token's role may not use `api`. On OK, `caller` (if given) says who it is.
  grpc::Status Check(const grpc::ServerContext* ctx, Api api, Caller* caller = nullptr) const;

 private:
  bool certificate_identities_ = false;
  bool certificate_roles_ = false;
  struct Known {
    std::string token, role, name;
  };
  std::vector<Known> tokens_;
};

}  // namespace attune::coordinator::rpc
