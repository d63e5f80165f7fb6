#include "coordinator/rpc/auth.h"

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

grpc::Status TokenAuthorizer::Check(const grpc::ServerContext* ctx, Api api, Caller* caller) const {
  if (!enabled()) {
    if (caller != nullptr) *caller = Caller{"", true};
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
      if (caller != nullptr) *caller = Caller{name, role == "admin"};
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        api == Api::kAdmin ? absl::StrCat("only an admin may do this; this token's role is ", role)
                                           : absl::StrCat("role ", role, " may not call this API"));
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown bearer token");
}

}  // namespace attune::coordinator::rpc
