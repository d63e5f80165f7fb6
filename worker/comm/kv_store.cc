#include "worker/comm/kv_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"

namespace attune::worker::comm {
namespace {

constexpr uint8_t kOk = 0, kAbsent = 1, kRefused = 2, kDenied = 3;
// A hello frame: the op, one length, a secret of at most 128 bytes.
constexpr uint32_t kMaxHelloBytes = 1 + 4 + 128;

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(std::string_view s) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(s[i])) << (8 * i);
  return v;
}

std::string Encode(uint8_t head, const std::vector<std::string>& fields) {
  std::string out(1, static_cast<char>(head));
  for (const auto& f : fields) {
    PutU32(&out, static_cast<uint32_t>(f.size()));
    out += f;
  }
  return out;
}

// Splits a payload into its head byte and fields; false when a length runs
// past the end.
bool Decode(std::string_view payload, uint8_t* head, std::vector<std::string>* fields) {
  if (payload.empty()) return false;
  *head = static_cast<uint8_t>(payload[0]);
  payload.remove_prefix(1);
  while (!payload.empty()) {
    if (payload.size() < 4) return false;
    uint32_t n = GetU32(payload);
    payload.remove_prefix(4);
    if (n > payload.size()) return false;
    fields->emplace_back(payload.substr(0, n));
    payload.remove_prefix(n);
  }
  return true;
}

std::string Frame(const std::string& payload) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(payload.size()));
  return out + payload;
}

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

struct AddrInfo {
  addrinfo* head = nullptr;
  ~AddrInfo() {
    if (head != nullptr) freeaddrinfo(head);
  }
};

absl::Status Resolve(const std::string& host, int port, AddrInfo* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &out->head);
  if (rc != 0) return absl::UnavailableError(absl::StrCat("cannot resolve '", host, "': ", gai_strerror(rc)));
  return absl::OkStatus();
}

std::string NumericHost(const sockaddr* a, socklen_t len) {
  char buf[NI_MAXHOST] = {0};
  if (getnameinfo(a, len, buf, sizeof(buf), nullptr, 0, NI_NUMERICHOST) != 0) return "?";
  return buf;
}

bool IsWildcard(const sockaddr* a) {
  if (a->sa_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (a->sa_family == AF_INET6) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, &in6addr_any, sizeof(in6_addr)) == 0;
  }
  return false;
}

}  // namespace

std::string EncodeKvRequest(uint8_t op, const std::vector<std::string>& fields) { return Encode(op, fields); }

size_t KvTable::MaxRequestBytes() const {
  // CompareSet: op, key, two values, and their lengths.
  return 1 + 3 * 4 + limits_.max_key_bytes + 2 * limits_.max_value_bytes;
}

std::string KvTable::Put(const std::string& key, std::string value) {
  auto it = kv_.find(key);
  size_t before = it == kv_.end() ? 0 : key.size() + it->second.size();
  size_t after = key.size() + value.size();
  if (it == kv_.end() && kv_.size() >= limits_.max_keys) {
    return absl::StrCat("the store holds ", kv_.size(), " keys, its limit");
  }
  if (bytes_ - before + after > limits_.max_total_bytes) {
    return absl::StrCat("the store would hold more than ", limits_.max_total_bytes, " bytes");
  }
  bytes_ = bytes_ - before + after;
  kv_[key] = std::move(value);
  return "";
}

absl::StatusOr<std::string> KvTable::Handle(std::string_view request) {
  uint8_t op = 0;
  std::vector<std::string> f;
  if (!Decode(request, &op, &f)) return absl::InvalidArgumentError("malformed request: a length runs past the end");
  static constexpr int kArity[] = {-1, 2, 1, 2, 3, 1, -2, 0};  // -2: one or more
  if (op < kKvSet || op > kKvNumKeys) return absl::InvalidArgumentError(absl::StrCat("unknown op ", int{op}));
  const int arity = kArity[op];
  if ((arity >= 0 && static_cast<int>(f.size()) != arity) || (arity == -2 && f.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("op ", int{op}, " with ", f.size(), " fields"));
  }
  if (op != kKvNumKeys) {
    const size_t keys = op == kKvCheck ? f.size() : 1;
    for (size_t i = 0; i < keys; ++i) {
      if (f[i].empty() || f[i].size() > limits_.max_key_bytes) {
        return Encode(kRefused, {absl::StrCat("a key of ", f[i].size(), " bytes (1 to ", limits_.max_key_bytes, ")")});
      }
    }
    for (size_t i = keys; i < f.size(); ++i) {
      if (f[i].size() > limits_.max_value_bytes) {
        return Encode(kRefused, {absl::StrCat("a value of ", f[i].size(), " bytes (at most ", limits_.max_value_bytes, ")")});
      }
    }
  }
  const std::string& key = f.empty() ? std::string() : f[0];
  switch (op) {
    case kKvSet: {
      std::string err = Put(key, f[1]);
      return err.empty() ? Encode(kOk, {}) : Encode(kRefused, {err});
    }
    case kKvGet: {
      auto it = kv_.find(key);
      return it == kv_.end() ? Encode(kAbsent, {}) : Encode(kOk, {it->second});
    }
    case kKvAdd: {
      int64_t delta = 0, current = 0;
      if (!absl::SimpleAtoi(f[1], &delta)) return Encode(kRefused, {"the increment is not an integer"});
      auto it = kv_.find(key);
      if (it != kv_.end() && !absl::SimpleAtoi(it->second, &current)) {
        return Encode(kRefused, {absl::StrCat("key '", key, "' does not hold an integer")});
      }
      int64_t sum = 0;
      if (__builtin_add_overflow(current, delta, &sum)) return Encode(kRefused, {"the sum overflows 64 bits"});
      std::string err = Put(key, std::to_string(sum));
      return err.empty() ? Encode(kOk, {std::to_string(sum)}) : Encode(kRefused, {err});
    }
    case kKvCompareSet: {
      auto it = kv_.find(key);
      if (it == kv_.end()) {
        if (!f[1].empty()) return Encode(kOk, {f[1]});
      } else if (it->second != f[1]) {
        return Encode(kOk, {it->second});
      }
      std::string err = Put(key, f[2]);
      return err.empty() ? Encode(kOk, {f[2]}) : Encode(kRefused, {err});
    }
    case kKvDelete: {
      auto it = kv_.find(key);
      if (it == kv_.end()) return Encode(kOk, {"0"});
      bytes_ -= it->first.size() + it->second.size();
      kv_.erase(it);
      return Encode(kOk, {"1"});
    }
    case kKvCheck: {
      for (const auto& k : f) {
        if (kv_.count(k) == 0) return Encode(kOk, {"0"});
      }
      return Encode(kOk, {"1"});
    }
    case kKvNumKeys:
      return Encode(kOk, {std::to_string(kv_.size())});
  }
  return absl::InvalidArgumentError("unreachable");
}

// ---------------------------------------------------------------- server

struct KvServer::State {
  KvTable table;
  KvLimits limits;
  std::string secret;  // NOTE [rendezvous secret]; empty admits every connection
  int listen_fd = -1;
  int wake[2] = {-1, -1};
  int port = 0;
  std::string address;
  std::thread thread;
  std::atomic<int64_t> refused{0};

  struct Conn {
    int fd = -1;
    std::string in, out;
    bool admitted = false;
    bool close_after_send = false;   // denied: the answer goes out, then the connection closes
    absl::Time hello_deadline;       // when not admitted
  };

  State(KvLimits l, std::string s) : table(l), limits(l), secret(std::move(s)) {}

  ~State() {
    if (thread.joinable()) {
      char c = 0;
      (void)!write(wake[1], &c, 1);
      thread.join();
    }
    for (int fd : {listen_fd, wake[0], wake[1]}) {
      if (fd >= 0) close(fd);
    }
  }

  // A connection's first request when the store has a secret: admitted, or
  // answered "denied" and closed once the answer is out.
  void Admit(Conn& c, std::string_view request) {
    uint8_t op = 0;
    std::vector<std::string> f;
    if (Decode(request, &op, &f) && op == kKvHello && f.size() == 1 && common::SameSecret(f[0], secret)) {
      c.admitted = true;
      c.out += Frame(Encode(kOk, {}));
      return;
    }
    ++refused;
    c.close_after_send = true;
    c.out += Frame(Encode(kDenied, {op == kKvHello ? "the rendezvous secret does not match this job generation's"
                                                   : "this store admits only the job's ranks: say hello with the "
                                                     "generation's rendezvous secret first"}));
  }

  // Parses every complete frame in c.in; false when the connection must close.
  bool Serve(Conn& c) {
    const size_t max_payload = c.admitted ? table.MaxRequestBytes() : kMaxHelloBytes;
    while (c.in.size() >= 4 && !c.close_after_send) {
      uint32_t n = GetU32(c.in);
      if (n == 0 || n > max_payload) {
        if (!c.admitted) ++refused;
        return false;
      }
      if (c.in.size() < 4 + static_cast<size_t>(n)) return true;
      const std::string_view request = std::string_view(c.in).substr(4, n);
      if (!c.admitted) {
        Admit(c, request);
        c.in.erase(0, 4 + n);
        if (c.admitted) return Serve(c);  // the frames after the hello, at the admitted limits
        continue;
      }
      if (static_cast<uint8_t>(request[0]) == kKvHello) {
        // Admitted already (or no secret): a hello is answered and changes nothing.
        c.out += Frame(Encode(kOk, {}));
        c.in.erase(0, 4 + n);
        continue;
      }
      auto response = table.Handle(request);
      if (!response.ok()) return false;
      c.out += Frame(*response);
      c.in.erase(0, 4 + n);
      // A peer that never reads its responses is dropped.
      if (c.out.size() > 4 * max_payload) return false;
    }
    return true;
  }

  // At most max_unauthenticated connections wait for their hello: a new one
  // closes the oldest waiting (NOTE [rendezvous secret]).
  void MakeRoomForOneMoreUnadmitted(std::vector<Conn>& conns) {
    int waiting = 0;
    auto oldest = conns.end();
    for (auto it = conns.begin(); it != conns.end(); ++it) {
      if (it->admitted) continue;
      ++waiting;
      if (oldest == conns.end() || it->hello_deadline < oldest->hello_deadline) oldest = it;
    }
    if (waiting < std::max(limits.max_unauthenticated, 1) || oldest == conns.end()) return;
    ++refused;
    close(oldest->fd);
    conns.erase(oldest);
  }

  void Run() {
    std::vector<Conn> conns;
    struct CloseAll {
      std::vector<Conn>* c;
      ~CloseAll() {
        for (auto& x : *c) close(x.fd);
      }
    } close_all{&conns};
    while (true) {
      std::vector<pollfd> fds;
      fds.push_back({wake[0], POLLIN, 0});
      fds.push_back({listen_fd, POLLIN, 0});
      for (const auto& c : conns) {
        fds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
      }
      // Wake for the first hello deadline, if any connection still owes one.
      absl::Time first_deadline = absl::InfiniteFuture();
      for (const auto& c : conns) {
        if (!c.admitted) first_deadline = std::min(first_deadline, c.hello_deadline);
      }
      int wait_ms = -1;
      if (first_deadline != absl::InfiniteFuture()) {
        wait_ms = static_cast<int>(std::clamp<int64_t>(
            absl::ToInt64Milliseconds(absl::Ceil(first_deadline - absl::Now(), absl::Milliseconds(1))), 0, 60000));
      }
      if (poll(fds.data(), fds.size(), wait_ms) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (fds[0].revents != 0) return;
      const absl::Time now = absl::Now();
      std::vector<bool> drop(conns.size(), false);
      for (size_t i = 0; i < conns.size(); ++i) {
        Conn& c = conns[i];
        short ev = fds[i + 2].revents;
        if (!c.admitted && now >= c.hello_deadline) {
          if (!c.close_after_send) ++refused;  // a denied one was counted when denied
          drop[i] = true;
          continue;
        }
        if (ev & (POLLERR | POLLNVAL)) {
          drop[i] = true;
          continue;
        }
        if (ev & (POLLIN | POLLHUP)) {
          char buf[65536];
          ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop[i] = true;
            continue;
          }
          // A denied connection's further bytes are read and dropped, never kept.
          if (n > 0 && !c.close_after_send) c.in.append(buf, static_cast<size_t>(n));
          if (!Serve(c)) {
            drop[i] = true;
            continue;
          }
        }
        if (!c.out.empty()) {
          ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
          if (n > 0) {
            c.out.erase(0, static_cast<size_t>(n));
          } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            drop[i] = true;
          }
        }
        // A denied connection closes once its answer is out (or its hello
        // deadline passes, whichever comes first).
        if (c.close_after_send && c.out.empty()) drop[i] = true;
      }
      std::vector<Conn> kept;
      for (size_t i = 0; i < conns.size(); ++i) {
        if (drop[i]) {
          close(conns[i].fd);
        } else {
          kept.push_back(std::move(conns[i]));
        }
      }
      conns.swap(kept);
      if (fds[1].revents & POLLIN) {
        int fd = accept(listen_fd, nullptr, nullptr);
        if (fd >= 0) {
          if (!secret.empty()) MakeRoomForOneMoreUnadmitted(conns);
          if (static_cast<int>(conns.size()) >= limits.max_connections) {
            ++refused;
            close(fd);
          } else {
            SetNonBlocking(fd);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            Conn c;
            c.fd = fd;
            c.admitted = secret.empty();
            c.hello_deadline = absl::Now() + limits.hello_timeout;
            conns.push_back(std::move(c));
          }
        }
      }
    }
  }
};

KvServer::KvServer(std::unique_ptr<State> state) : state_(std::move(state)) {}
KvServer::~KvServer() = default;
int KvServer::port() const { return state_->port; }
int64_t KvServer::refused_connections() const { return state_->refused.load(); }
const std::string& KvServer::address() const { return state_->address; }

absl::StatusOr<std::unique_ptr<KvServer>> KvServer::Start(const std::string& host, int port, KvLimits limits,
                                                          std::string secret) {
  if (secret.size() > kMaxHelloBytes - 5) {
    return absl::InvalidArgumentError(absl::StrCat("a rendezvous secret of ", secret.size(), " bytes (at most 128)"));
  }
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("port ", port, " is not a valid port"));
  if (host.empty()) return absl::InvalidArgumentError("the rendezvous store needs the host to bind to; none given");
  AddrInfo ai;
  if (auto s = Resolve(host, port, &ai); !s.ok()) return s;
  auto state = std::make_unique<State>(limits, std::move(secret));
  std::string last_error;
  for (addrinfo* a = ai.head; a != nullptr; a = a->ai_next) {
    if (IsWildcard(a->ai_addr)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the rendezvous store will not listen on every interface ('", host,
          "' is a wildcard address); give the agent the address other ranks reach it at (--host)"));
    }
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = Errno("socket");
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
      last_error = Errno("bind");
      close(fd);
      continue;
    }
    state->listen_fd = fd;
    state->address = NumericHost(a->ai_addr, a->ai_addrlen);
    break;
  }
  if (state->listen_fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen at ", host, ":", port, ": ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(state->listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  state->port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  SetNonBlocking(state->listen_fd);
  if (pipe2(state->wake, O_CLOEXEC) != 0) return absl::InternalError(Errno("pipe"));
  State* raw = state.get();
  state->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<KvServer>(new KvServer(std::move(state)));
}

// ---------------------------------------------------------------- client

struct KvClient::Lock {
  std::mutex mu;
  // Set when a call failed midway (timed out, connection lost, a bad
  // response): the stream may hold a late answer, so every later call fails
  // at once rather than read it as its own.
  std::string broken;
};

KvClient::KvClient(int fd, std::string peer, absl::Duration timeout)
    : fd_(fd), peer_(std::move(peer)), timeout_(timeout), lock_(std::make_unique<Lock>()) {}

KvClient::~KvClient() { close(fd_); }

absl::StatusOr<std::unique_ptr<KvClient>> KvClient::Connect(const std::string& host, int port,
                                                            absl::Duration timeout, const std::string& secret) {
  if (port <= 0 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("port ", port, " is not a valid port"));
  const absl::Time deadline = absl::Now() + timeout;
  std::string last_error = "no address";
  while (true) {
    AddrInfo ai;
    absl::Status resolved = Resolve(host, port, &ai);
    if (resolved.ok()) {
      for (addrinfo* a = ai.head; a != nullptr; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          std::unique_ptr<KvClient> client(new KvClient(fd, absl::StrCat(host, ":", port), timeout));
          if (!secret.empty()) {
            auto hello = client->Call(kKvHello, {secret});
            if (!hello.ok()) return hello.status();
          }
          return client;
        }
        last_error = Errno("connect");
        close(fd);
      }
    } else {
      last_error = std::string(resolved.message());
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("cannot connect to the rendezvous store at ", host, ":", port,
                                                      " within ", absl::FormatDuration(timeout), ": ", last_error));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::StatusOr<std::pair<int, std::vector<std::string>>> KvClient::Call(uint8_t op,
                                                                       const std::vector<std::string>& fields) {
  std::lock_guard<std::mutex> guard(lock_->mu);
  if (!lock_->broken.empty()) {
    return absl::UnavailableError(
        absl::StrCat("rendezvous store at ", peer_, ": the connection failed earlier (", lock_->broken, ")"));
  }
  auto result = CallLocked(op, fields);
  if (!result.ok() && !absl::IsInvalidArgument(result.status())) lock_->broken = std::string(result.status().message());
  return result;
}

absl::StatusOr<std::pair<int, std::vector<std::string>>> KvClient::CallLocked(uint8_t op,
                                                                             const std::vector<std::string>& fields) {
  const absl::Time deadline = absl::Now() + timeout_;
  auto wait_for = [&](short events) -> absl::Status {
    while (true) {
      int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0) return absl::DeadlineExceededError(absl::StrCat("rendezvous store at ", peer_, ": timed out"));
      pollfd p{fd_, events, 0};
      int rc = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
      if (rc > 0) return absl::OkStatus();
      if (rc < 0 && errno != EINTR) return absl::UnavailableError(Errno("poll"));
    }
  };
  const std::string frame = Frame(Encode(op, fields));
  size_t sent = 0;
  while (sent < frame.size()) {
    if (auto s = wait_for(POLLOUT); !s.ok()) return s;
    ssize_t n = send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("rendezvous store at ", peer_, ": ", Errno("send")));
    }
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string in;
  size_t need = 4;
  bool have_length = false;
  while (in.size() < need) {
    if (auto s = wait_for(POLLIN); !s.ok()) return s;
    char buf[65536];
    ssize_t n = recv(fd_, buf, std::min(sizeof(buf), need - in.size()), MSG_DONTWAIT);
    if (n == 0) return absl::UnavailableError(absl::StrCat("rendezvous store at ", peer_, ": connection closed"));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("rendezvous store at ", peer_, ": ", Errno("recv")));
    }
    in.append(buf, static_cast<size_t>(n));
    if (!have_length && in.size() == 4) {
      uint32_t len = GetU32(in);
      // A response is never larger than the largest value plus its framing.
      if (len == 0 || len > (1u << 28)) {
        return absl::DataLossError(absl::StrCat("rendezvous store at ", peer_, ": a response of ", len, " bytes"));
      }
      need = 4 + len;
      have_length = true;
    }
  }
  uint8_t code = 0;
  std::vector<std::string> out;
  if (!Decode(std::string_view(in).substr(4), &code, &out) || code > kDenied) {
    return absl::DataLossError(absl::StrCat("rendezvous store at ", peer_, ": a malformed response"));
  }
  if (code == kDenied) {
    return absl::PermissionDeniedError(
        absl::StrCat("rendezvous store at ", peer_, " denied this connection: ", out.empty() ? "" : out[0]));
  }
  if (code == kRefused) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous store at ", peer_, " refused: ", out.empty() ? "" : out[0]));
  }
  return std::make_pair(static_cast<int>(code), std::move(out));
}

namespace {
absl::StatusOr<std::string> One(absl::StatusOr<std::pair<int, std::vector<std::string>>> r) {
  if (!r.ok()) return r.status();
  if (r->first != kOk || r->second.size() != 1) return absl::DataLossError("rendezvous store: an unexpected response");
  return r->second[0];
}
absl::StatusOr<int64_t> Integer(absl::StatusOr<std::string> s) {
  if (!s.ok()) return s.status();
  int64_t v = 0;
  if (!absl::SimpleAtoi(*s, &v)) return absl::DataLossError("rendezvous store: an integer response that is not one");
  return v;
}
}  // namespace

absl::Status KvClient::Set(const std::string& key, const std::string& value) {
  auto r = Call(kKvSet, {key, value});
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<std::optional<std::string>> KvClient::Get(const std::string& key) {
  auto r = Call(kKvGet, {key});
  if (!r.ok()) return r.status();
  if (r->first == kAbsent) return std::optional<std::string>();
  if (r->second.size() != 1) return absl::DataLossError("rendezvous store: an unexpected response");
  return std::optional<std::string>(std::move(r->second[0]));
}

absl::StatusOr<std::string> KvClient::WaitGet(const std::string& key, absl::Duration timeout) {
  if (auto s = Wait({key}, timeout); !s.ok()) return s;
  auto v = Get(key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return absl::NotFoundError(absl::StrCat("rendezvous store: key '", key, "' was deleted"));
  return **v;
}

absl::StatusOr<int64_t> KvClient::Add(const std::string& key, int64_t delta) {
  return Integer(One(Call(kKvAdd, {key, std::to_string(delta)})));
}

absl::StatusOr<std::string> KvClient::CompareSet(const std::string& key, const std::string& expected,
                                                 const std::string& desired) {
  return One(Call(kKvCompareSet, {key, expected, desired}));
}

absl::StatusOr<bool> KvClient::Delete(const std::string& key) {
  auto v = Integer(One(Call(kKvDelete, {key})));
  if (!v.ok()) return v.status();
  return *v == 1;
}

absl::StatusOr<bool> KvClient::Check(const std::vector<std::string>& keys) {
  auto v = Integer(One(Call(kKvCheck, keys)));
  if (!v.ok()) return v.status();
  return *v == 1;
}

absl::StatusOr<int64_t> KvClient::NumKeys() { return Integer(One(Call(kKvNumKeys, {}))); }

absl::Status KvClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    auto all = Check(keys);
    if (!all.ok()) return all.status();
    if (*all) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      std::string missing;
      for (const auto& k : keys) {
        auto one = Check({k});
        if (one.ok() && !*one) {
          missing = k;
          break;
        }
      }
      return absl::DeadlineExceededError(absl::StrCat("rendezvous store at ", peer_, ": timed out after ",
                                                      absl::FormatDuration(timeout), " waiting for key '", missing,
                                                      "'"));
    }
    absl::SleepFor(std::min(pause, deadline - absl::Now()));
    pause = std::min(pause * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<Rendezvous> JoinRendezvous(const std::string& job, int rank, int world_size, const std::string& host,
                                          int port, absl::Duration timeout, const std::string& secret) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is outside world size ", world_size));
  }
  if (port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous port ", port, " is not a valid port"));
  }
  Rendezvous r;
  if (rank == 0) {
    auto started = KvServer::Start(host, port, {}, secret);
    if (!started.ok()) {
      return absl::UnavailableError(absl::StrCat("job=", job, " rank=0 cannot serve the rendezvous store at ", host,
                                                 ":", port, ": ", started.status().message()));
    }
    r.server = *std::move(started);
  }
  auto client = KvClient::Connect(host, port, timeout, secret);
  if (!client.ok()) {
    // A denial keeps its code: retrying with the same secret cannot help.
    const auto code = absl::IsPermissionDenied(client.status()) ? absl::StatusCode::kPermissionDenied
                                                                : absl::StatusCode::kUnavailable;
    return absl::Status(code, absl::StrCat("job=", job, " rank=", rank, " cannot join the rendezvous store at ", host,
                                           ":", port, ": ", client.status().message()));
  }
  r.client = *std::move(client);
  const absl::Time deadline = absl::Now() + timeout;
  auto failed = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("job=", job, " rank=", rank, " rendezvous failed: ", s.message()));
  };
  if (auto s = r.client->Add("attune/arrived", 1); !s.ok()) return failed(s.status());
  while (true) {
    auto arrived = r.client->Add("attune/arrived", 0);
    if (!arrived.ok()) return failed(arrived.status());
    if (*arrived >= world_size) break;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("job=", job, " rank=", rank, " rendezvous timed out after ",
                                                      absl::FormatDuration(timeout), ": ", *arrived, " of ",
                                                      world_size, " ranks arrived at ", host, ":", port));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return r;
}

}  // namespace attune::worker::comm
