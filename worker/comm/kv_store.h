#pragma once

// The rendezvous key-value store of one training job.
//
// Rank 0 serves it on its own host's address only (the agent's --host), never
// on every interface as c10d's TCPStore does; every rank, rank 0 included,
// talks to it through a KvClient. The Gloo group exchanges its addresses
// through it (as a c10d::Store, see gloo_communicator.cc), and the NCCL
// communicator its ncclUniqueId.
//
// Wire protocol (one request, then one response, per frame):
//   1. a frame is a 4-byte little-endian payload length, then the payload;
//   2. a request payload is one op byte, then its fields, each a 4-byte
//      little-endian length and the bytes;
//   3. a response payload is one code byte (0 ok, 1 absent, 2 refused,
//      3 denied), then its fields the same way;
//   4. a frame over the limits, an unknown op or a field count that does not
//      match the op closes that connection; the store and the other
//      connections carry on.
// Nothing here trusts the peer: every length is checked before it is used.
//
// NOTE [rendezvous secret]: the coordinator makes one secret per job
// generation and sends it to that generation's ranks only (the agent passes it
// to the trainer as ATTUNE_RENDEZVOUS_SECRET). A store started with a secret
// admits a connection only after its first request, kKvHello, presents it:
//   - anything else first, or a wrong secret, is answered "denied" (code 3)
//     and the connection closed; nothing was read or written in the table;
//   - a connection that has not said hello within `hello_timeout` is closed;
//   - at most `max_unauthenticated` connections wait for their hello at once:
//     one more closes the oldest waiting one. So a peer without the secret can
//     neither read nor change the rendezvous (the Gloo addresses, the NCCL
//     id), nor hold the store's connections: the ranks' own connections say
//     hello at once and are never among those closed.
// Without a secret (ranks started by hand) every connection is admitted, as
// c10d's TCPStore does.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace attune::worker::comm {

enum KvOp : uint8_t { kKvSet = 1, kKvGet, kKvAdd, kKvCompareSet, kKvDelete, kKvCheck, kKvNumKeys, kKvHello };

struct KvLimits {
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = 1 << 20;
  size_t max_keys = 65536;
  size_t max_total_bytes = 64 << 20;  // keys and values together
  int max_connections = 1024;
  // With a secret (NOTE [rendezvous secret]): connections still to say hello.
  int max_unauthenticated = 64;
  absl::Duration hello_timeout = absl::Seconds(10);
};

// The table and its protocol, without sockets. Thread-compatible.
class KvTable {
 public:
  explicit KvTable(KvLimits limits = {}) : limits_(limits) {}
  // One request payload in, one response payload out. kInvalidArgument for a
  // malformed request (the server then closes the connection); a well-formed
  // request the table refuses (too large, not an integer) is a response with
  // code 2 and the reason.
  absl::StatusOr<std::string> Handle(std::string_view request);
  size_t size() const { return kv_.size(); }
  // The largest frame payload a well-formed request can have.
  size_t MaxRequestBytes() const;

 private:
  std::string Put(const std::string& key, std::string value);

  KvLimits limits_;
  std::map<std::string, std::string> kv_;
  size_t bytes_ = 0;
};

// Serves a KvTable on host:port from one thread (poll over non-blocking
// sockets). Thread-safe to construct and destroy; the destructor stops the
// thread and closes every socket.
class KvServer {
 public:
  // `host` must name one address of this machine (resolved with getaddrinfo);
  // a wildcard (0.0.0.0, ::, empty) is refused, because the store must not
  // listen on every interface. A non-empty `secret` admits only connections
  // that present it (NOTE [rendezvous secret]).
  static absl::StatusOr<std::unique_ptr<KvServer>> Start(const std::string& host, int port, KvLimits limits = {},
                                                         std::string secret = "");
  ~KvServer();
  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;

  int port() const;
  // The numeric address it is bound to, e.g. "127.0.0.1".
  const std::string& address() const;
  // Connections closed without being admitted: a wrong or missing secret, no
  // hello in time, or pushed out by newer ones waiting for theirs.
  int64_t refused_connections() const;

  struct State;

 private:
  explicit KvServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A connection to a KvServer. Thread-safe (one request at a time). Every call
// is bounded by the timeout given at Connect.
class KvClient {
 public:
  // Connects to host:port, retrying refused connections until `timeout`
  // (the server may not be up yet), then presents `secret` when there is one
  // (kPermissionDenied when the store denies it).
  static absl::StatusOr<std::unique_ptr<KvClient>> Connect(const std::string& host, int port, absl::Duration timeout,
                                                           const std::string& secret = "");
  ~KvClient();
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;

  absl::Status Set(const std::string& key, const std::string& value);
  // nullopt when the key is absent.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key);
  // Waits up to `timeout` for the key, then returns its value.
  absl::StatusOr<std::string> WaitGet(const std::string& key, absl::Duration timeout);
  // The key holds a decimal integer (absent: 0); adds `delta` and returns the sum.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);
  // As c10d's compareSet: sets `desired` when the key holds `expected` (or is
  // absent and `expected` is empty); returns the value the key holds after.
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired);
  absl::StatusOr<bool> Delete(const std::string& key);
  absl::StatusOr<bool> Check(const std::vector<std::string>& keys);
  absl::StatusOr<int64_t> NumKeys();
  // kDeadlineExceeded naming the first missing key when they are not all set
  // within `timeout`.
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout);

  absl::Duration timeout() const { return timeout_; }

 private:
  KvClient(int fd, std::string peer, absl::Duration timeout);
  // Sends one request, returns (code, fields) of the response.
  absl::StatusOr<std::pair<int, std::vector<std::string>>> Call(uint8_t op, const std::vector<std::string>& fields);
  absl::StatusOr<std::pair<int, std::vector<std::string>>> CallLocked(uint8_t op,
                                                                      const std::vector<std::string>& fields);

  int fd_;
  std::string peer_;
  absl::Duration timeout_;
  struct Lock;
  std::unique_ptr<Lock> lock_;
};

// A job's rendezvous, the steps every backend shares:
//   1. rank 0 serves the store (KvServer) on host:port, that address only;
//      every rank connects (retrying until the timeout, as rank 0 may not be
//      up yet);
//   2. every rank adds one to "attune/arrived" and polls it until all have
//      arrived, bounded by the timeout, so a missing rank is reported with
//      how many arrived (kDeadlineExceeded).
// The backend then exchanges what it needs through `client` (Gloo its
// addresses, NCCL its ncclUniqueId).
struct Rendezvous {
  std::unique_ptr<KvServer> server;  // rank 0 only; must outlive the backend's use of the store
  std::unique_ptr<KvClient> client;
};
// `secret`: the generation's (NOTE [rendezvous secret]); empty admits anyone.
absl::StatusOr<Rendezvous> JoinRendezvous(const std::string& job, int rank, int world_size, const std::string& host,
                                          int port, absl::Duration timeout, const std::string& secret = "");

// Exposed for tests and the fuzz target: the request encoding.
std::string EncodeKvRequest(uint8_t op, const std::vector<std::string>& fields);

}  // namespace attune::worker::comm
