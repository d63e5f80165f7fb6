#include "coordinator/rpc/auth.h"

#include <grpc/grpc_security_constants.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/secret.h"

namespace attune::coordinator::rpc {

absl::StatusOr<TokenAuthorizer> TokenAuthorizer::FromFiles(const std::map<std::string, std::string>& files) {
  TokenAuthorizer a;
  for (const auto& [role, path] : files) {
    if (path.empty()) continue;
    if (role != "submit" && role != "worker" && role != "admin") {
      return absl::InvalidArgumentError(absl::StrCat("unknown role ", role));
    }
    auto text = common::ReadFile(path, 1 << 20);
    if (!text.ok()) return text.status();
    int n = 0, line_no = 0;
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      ++line_no;
      line = absl::StripAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      Known k;
      k.role = role;
      const std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
      if (words.size() > 2) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": expected TOKEN or NAME TOKEN"));
      }
      k.token = std::string(words.back());
      if (words.size() == 2) {
        k.name = std::string(words[0]);
        if (!common::IsValidName(k.name)) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", line_no, ": the name must match [A-Za-z0-9._-]{1,128}"));
        }
      } else {
        k.name = "token-" + common::Sha256Hex(k.token).substr(0, 8);
      }
      a.tokens_.push_back(std::move(k));
      ++n;
    }
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("token file ", path, " holds no token"));
  }
  return a;
}

namespace {

// The client certificate's CN and DNS names, as gRPC's TLS layer verified them.
std::vector<std::string> CertificateNames(const grpc::ServerContext* ctx, std::string* common_name) {
  std::vector<std::string> names;
  const auto auth = ctx->auth_context();
  if (!auth) return names;
  for (const auto& v : auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
    names.emplace_back(v.data(), v.size());
    if (common_name->empty()) *common_name = names.back();
  }
  for (const auto& v : auth->FindPropertyValues(GRPC_X509_SAN_PROPERTY_NAME)) names.emplace_back(v.data(), v.size());
  return names;
}

}  // namespace

grpc::Status CheckWorkerId(const Caller& caller, const std::string& worker_id) {
  if (caller.certificate_names.empty()) return grpc::Status::OK;
  for (const auto& n : caller.certificate_names) {
    if (n == worker_id) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat("worker_id ", worker_id, " is not named by the client certificate (CN ",
                                   caller.certificate_names.front(), ")"));
}

grpc::Status CheckOwned(const Caller& caller, const std::string& owner, const std::string& what) {
  if (caller.Owns(owner)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat(what, " belongs to another submitter; only its owner or an admin may see or change it"));
}

grpc::Status TokenAuthorizer::Check(const grpc::ServerContext* ctx, Api api, Caller* caller) const {
  Caller certified;
  if (certificate_identities_) {
    std::string cn;
    certified.certificate_names = CertificateNames(ctx, &cn);
    if (cn.empty() || !common::IsValidName(cn)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "a client certificate whose common name is an identity ([A-Za-z0-9._-]{1,128}) is required");
    }
    certified.name = cn;
  }
  if (tokens_.empty()) {
    if (caller != nullptr) {
      *caller = certified;
      caller->admin = true;  // no token files: every role
    }
    return grpc::Status::OK;
  }
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing bearer token");
  std::string value(it->second.data(), it->second.size());
  if (value.rfind("Bearer ", 0) != 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization must be 'Bearer <token>'");
  }
  const std::string token = value.substr(7);
  for (const auto& [known, role, name] : tokens_) {
    if (!common::SameSecret(token, known)) continue;
    if (role == "admin" || (role == "submit" && api == Api::kJobs) || (role == "worker" && api == Api::kWorkers)) {
      if (caller != nullptr) {
        *caller = certified;
        if (caller->name.empty()) caller->name = name;  // the certificate's name wins
        caller->admin = role == "admin";
      }
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        api == Api::kAdmin ? absl::StrCat("only an admin may do this; this token's role is ", role)
                                           : absl::StrCat("role ", role, " may not call this API"));
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown bearer token");
}

}  // namespace attune::coordinator::rpc
