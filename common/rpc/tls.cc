#include "common/rpc/tls.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace attune::common {
namespace {

absl::StatusOr<std::string> Pem(const std::string& path, const char* what) {
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", text.status().message()));
  if (text->find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is not a PEM file"));
  }
  return *text;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& f) {
  if (f.cert.empty() && f.key.empty() && f.ca.empty()) return grpc::InsecureServerCredentials();
  if (f.cert.empty() || f.key.empty()) return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  grpc::SslServerCredentialsOptions o(f.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  auto cert = Pem(f.cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = Pem(f.key, "--tls-key");
  if (!key.ok()) return key.status();
  o.pem_key_cert_pairs.push_back({*key, *cert});
  if (!f.ca.empty()) {
    auto ca = Pem(f.ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *ca;
  }
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& f) {
  if (f.cert.empty() && f.key.empty() && f.ca.empty()) return grpc::InsecureChannelCredentials();
  if (f.ca.empty()) return absl::InvalidArgumentError("--tls-ca is required for TLS");
  if (f.cert.empty() != f.key.empty()) return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  grpc::SslCredentialsOptions o;
  auto ca = Pem(f.ca, "--tls-ca");
  if (!ca.ok()) return ca.status();
  o.pem_root_certs = *ca;
  if (!f.cert.empty()) {
    auto cert = Pem(f.cert, "--tls-cert");
    if (!cert.ok()) return cert.status();
    auto key = Pem(f.key, "--tls-key");
    if (!key.ok()) return key.status();
    o.pem_cert_chain = *cert;
    o.pem_private_key = *key;
  }
  return grpc::SslCredentials(o);
}

}  // namespace attune::common
