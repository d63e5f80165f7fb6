#pragma once

// The attune CLI's job commands over gRPC.

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "attune/v1/coordinator.grpc.pb.h"

namespace attune::cli {

struct ClientOptions {
  std::string coordinator;
  std::string output = "table";  // table | json | yaml
  int timeout_s = 5;
  std::string token;  // sent as "authorization: Bearer <token>" when set
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // default: insecure
};

// Prints "attune: CODE: message" and returns the exit code for a failed call
// (the gRPC status code).
// With `address`, an UNAVAILABLE call also names the coordinator it tried.
int Fail(const grpc::Status& s, const std::string& address = "");
// Prints `j` as indented JSON, or as YAML when `format` is "yaml".
void PrintDocument(const nlohmann::json& j, const std::string& format);
// Relative paths of a spec are relative to the current directory.
void AbsolutizePaths(v1::JobSpec* spec);
std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& o);
// A call's token and deadline (none for streams).
void PrepareContext(const ClientOptions& o, grpc::ClientContext* ctx, bool stream);

// Each command returns the process exit code: 0, or the gRPC status code.
class Client {
 public:
  explicit Client(const ClientOptions& o);
  ~Client();
  // `sets`: "PATH=VALUE" overrides applied to the spec before it is checked.
  int Submit(const std::string& file, bool watch, const std::string& idempotency_key,
             const std::vector<std::string>& sets = {});
  int Get(const std::string& id);
  int List(const std::string& state, const std::string& label_selector);
  int Cancel(const std::string& id);
  // Follows the job to its end; 0 when it SUCCEEDED, 1 otherwise.
  int Watch(const std::string& id);
  // With `follow`, prints new lines as they come until the job has ended.
  int Logs(const std::string& id, int rank, int tail, bool follow = false);
  int Workers();
  // A SUCCEEDED job's model, reports or all into `to` (default ./JOB), each
  // file's SHA-256 checked against the coordinator's.
  int Download(const std::string& id, const std::string& what, const std::string& to);

 private:
  void Prepare(grpc::ClientContext* ctx, bool stream) const;
  ClientOptions o_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace attune::cli
