#pragma once

// TLS and mutual TLS credentials for the coordinator and its clients, read
// from PEM files. With no files given, the credentials are insecure.

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace attune::common {

struct TlsFiles {
  std::string cert, key;  // this side's certificate chain and private key
  std::string ca;         // server: client CA (turns on mTLS); client: the server's CA
};

// Server: cert and key give TLS; adding ca requires and verifies client certificates.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);
// Client: ca gives TLS (verifying the server); cert and key add a client certificate.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& files);

}  // namespace attune::common
