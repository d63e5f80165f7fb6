#include "coordinator/rpc/auth.h"

#include <grpc/grpc_security_constants.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

bool Allows(const std::string& role, Api api) {
  return role == "admin" || (role == "submit" && api == Api::kJobs) || (role == "worker" && api == Api::kWorkers);
}

grpc::Status Denied(const std::string& role, Api api) {
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      api == Api::kAdmin ? absl::StrCat("only an admin may do this; this caller's role is ", role)
                                         : absl::StrCat("role ", role, " may not call this API"));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> CertificateRoles(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  if (!bio) return absl::InternalError("cannot read the client certificate");
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  if (!cert) return absl::InvalidArgumentError("the client certificate does not parse");
  const X509_NAME* subject = X509_get_subject_name(cert.get());
  std::vector<std::string> roles;
  for (int i = X509_NAME_get_index_by_NID(subject, NID_organizationName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_organizationName, i)) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    unsigned char* utf8 = nullptr;
    const int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) return absl::InvalidArgumentError("the client certificate's organization is not text");
    const std::string org(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
    OPENSSL_free(utf8);
    if (org.rfind("attune:", 0) != 0) continue;
    const std::string role = org.substr(7);
    if (role != "submit" && role != "worker" && role != "admin") {
      return absl::InvalidArgumentError(absl::StrCat(
          "the client certificate names an unknown role '", org.substr(0, 64),
          "' (O=attune:submit, attune:worker or attune:admin)"));
    }
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
  }
  return roles;
}

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
  if (certificate_roles_) {
    const auto auth = ctx->auth_context();
    std::string pem;
    if (auth) {
      for (const auto& v : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) pem.assign(v.data(), v.size());
    }
    auto roles = CertificateRoles(pem);
    if (!roles.ok()) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(roles.status().message()));
    if (!roles->empty()) {
      const bool admin = std::find(roles->begin(), roles->end(), "admin") != roles->end();
      for (const auto& role : *roles) {
        if (!Allows(role, api)) continue;
        if (caller != nullptr) {
          *caller = certified;
          caller->admin = admin;
        }
        return grpc::Status::OK;
      }
      return Denied(absl::StrJoin(*roles, "+"), api);
    }
    if (tokens_.empty()) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "the client certificate names no role (O=attune:submit, attune:worker or attune:admin)");
    }
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
    if (Allows(role, api)) {
      if (caller != nullptr) {
        *caller = certified;
        if (caller->name.empty()) caller->name = name;  // the certificate's name wins
        caller->admin = role == "admin";
      }
      return grpc::Status::OK;
    }
    return Denied(role, api);
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown bearer token");
}

}  // namespace attune::coordinator::rpc
