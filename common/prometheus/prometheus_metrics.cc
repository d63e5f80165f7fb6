#include "common/prometheus/prometheus_metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/http_route.h"

namespace attune::common {
namespace {

constexpr int kPollMs = 200;  // how often the server checks for shutdown
// A connection has this long from accept to its last byte sent; a client that
// says nothing (or reads nothing) holds one slot that long and delays no one.
constexpr auto kConnectionDeadline = std::chrono::seconds(5);
constexpr size_t kMaxRequestBytes = 16 * 1024;
constexpr size_t kMaxConnections = 128;  // beyond this, new connections wait in the backlog

std::string Response(int code, const char* reason, const char* type, const std::string& body, bool head_only) {
  std::string r = absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", type,
                               "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  if (!head_only) r += body;
  return r;
}

// A family and the series added to it, so that series can be forgotten.
template <typename T>
struct Tracked {
  prometheus::Family<T>* family = nullptr;
  std::map<Labels, T*> series;

  void Forget(const Labels& match) {
    for (auto it = series.begin(); it != series.end();) {
      bool all = true;
      for (const auto& [k, v] : match) {
        auto f = it->first.find(k);
        all &= f != it->first.end() && f->second == v;
      }
      if (all) {
        family->Remove(it->second);
        it = series.erase(it);
      } else {
        ++it;
      }
    }
  }
};

}  // namespace

struct PrometheusMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::mutex mu;
  std::map<std::string, Tracked<prometheus::Gauge>> gauges;
  std::map<std::string, Tracked<prometheus::Counter>> counters;
  std::map<std::string, Tracked<prometheus::Histogram>> histograms;
  int listen_fd = -1;
  int port = 0;
  std::atomic<bool> stop{false};
  std::thread server;

  std::string Render() const {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry->Collect());
    return out.str();
  }

  // The whole response to a complete request head.
  std::string Answer(const std::string& head) const {
    const HttpRequest r = RouteHttpRequest(head);
    switch (r.route) {
      case HttpRoute::kMethodNotAllowed:
        return Response(405, "Method Not Allowed", "text/plain", "only GET and HEAD\n", false);
      case HttpRoute::kMetrics:
        return Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", Render(), r.head_only);
      case HttpRoute::kHealth:
        return Response(200, "OK", "text/plain", "ok: metrics at /metrics\n", r.head_only);
      case HttpRoute::kNotFound:
        break;
    }
    return Response(404, "Not Found", "text/plain", "not found: try /metrics\n", r.head_only);
  }

  struct Conn {
    int fd;
    std::chrono::steady_clock::time_point deadline;
    std::string in, out;
    size_t sent = 0;
    bool answered = false;
  };

  // NOTE [metrics server]: one thread serves every connection with poll and
  // non-blocking sockets, so idle or slow clients (15 idle sockets delayed
  // each scrape by 30 s when connections were served one at a time) cost a
  // slot each, never the others' time.
  void Loop() {
    std::vector<Conn> conns;
    std::vector<pollfd> fds;
    char buf[4096];
    while (!stop.load()) {
      const auto now = std::chrono::steady_clock::now();
      int wait_ms = kPollMs;
      fds.clear();
      fds.push_back({listen_fd, static_cast<short>(conns.size() < kMaxConnections ? POLLIN : 0), 0});
      for (const Conn& c : conns) {
        fds.push_back({c.fd, static_cast<short>(c.answered ? POLLOUT : POLLIN), 0});
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now).count();
        wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wait_ms, left + 1)));
      }
      if (::poll(fds.data(), fds.size(), wait_ms) < 0 && errno != EINTR) continue;
      std::vector<bool> done(conns.size(), false);
      for (size_t i = 0; i < conns.size(); ++i) {
        Conn& c = conns[i];
        const short ev = fds[i + 1].revents;
        if (ev & (POLLERR | POLLNVAL)) {
          done[i] = true;
        } else if (!c.answered && (ev & (POLLIN | POLLHUP))) {
          const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
          if (n <= 0) {
            done[i] = n == 0 || (errno != EAGAIN && errno != EINTR);
            continue;
          }
          c.in.append(buf, static_cast<size_t>(n));
          if (c.in.size() > kMaxRequestBytes) {
            done[i] = true;
          } else if (HttpHeadComplete(c.in)) {
            c.out = Answer(c.in);
            c.answered = true;
          }
        } else if (c.answered && (ev & (POLLOUT | POLLHUP))) {
          const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
          if (n > 0) c.sent += static_cast<size_t>(n);
          if ((n < 0 && errno != EAGAIN && errno != EINTR) || c.sent == c.out.size()) done[i] = true;
        }
      }
      const auto after = std::chrono::steady_clock::now();
      for (size_t i = conns.size(); i-- > 0;) {
        if (done[i] || after >= conns[i].deadline) {
          ::close(conns[i].fd);
          conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }
      if (fds[0].revents & POLLIN) {
        while (conns.size() < kMaxConnections) {
          const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          conns.push_back(Conn{fd, std::chrono::steady_clock::now() + kConnectionDeadline, {}, {}});
        }
      }
    }
    for (const Conn& c : conns) ::close(c.fd);
  }
};

PrometheusMetrics::PrometheusMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PrometheusMetrics::~PrometheusMetrics() {
  impl_->stop.store(true);
  if (impl_->server.joinable()) impl_->server.join();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
}

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Serve(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", listen, "': want HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string port_str = std::to_string(port);
  if (int rc = ::getaddrinfo(host.empty() || host == "*" ? nullptr : host.c_str(), port_str.c_str(), &hints, &res);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address '", listen, "': ", gai_strerror(rc)));
  }
  auto impl = std::make_unique<Impl>();
  std::string err = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 64) == 0) {
      impl->listen_fd = fd;
      break;
    }
    err = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (impl->listen_fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", err));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  ::getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  impl->port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  Impl* raw = impl.get();
  impl->server = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<PrometheusMetrics>(new PrometheusMetrics(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Metrics>> PrometheusMetrics::ServeIfSet(const std::string& listen) {
  if (listen.empty()) return std::unique_ptr<Metrics>(std::make_unique<NullMetrics>());
  auto served = Serve(listen);
  if (!served.ok()) return served.status();
  return std::unique_ptr<Metrics>(std::move(*served));
}

int PrometheusMetrics::port() const { return impl_->port; }

std::string PrometheusMetrics::Render() const { return impl_->Render(); }  // the registry locks itself

void PrometheusMetrics::SetGauge(const std::string& name, const std::string& help, const Labels& labels,
                                 double value) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& t = impl_->gauges[name];
  if (!t.family) t.family = &prometheus::BuildGauge().Name(name).Help(help).Register(*impl_->registry);
  auto& g = t.series[labels];
  if (!g) g = &t.family->Add(labels);
  g->Set(value);
}

void PrometheusMetrics::AddCounter(const std::string& name, const std::string& help, const Labels& labels,
                                   double delta) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& t = impl_->counters[name];
  if (!t.family) t.family = &prometheus::BuildCounter().Name(name).Help(help).Register(*impl_->registry);
  auto& c = t.series[labels];
  if (!c) c = &t.family->Add(labels);
  c->Increment(delta);
}

void PrometheusMetrics::Observe(const std::string& name, const std::string& help, const Labels& labels,
                                const std::vector<double>& buckets, double value) {
  std::lock_guard<std::mutex> l(impl_->mu);
  auto& t = impl_->histograms[name];
  if (!t.family) t.family = &prometheus::BuildHistogram().Name(name).Help(help).Register(*impl_->registry);
  auto& h = t.series[labels];
  if (!h) h = &t.family->Add(labels, prometheus::Histogram::BucketBoundaries(buckets.begin(), buckets.end()));
  h->Observe(value);
}

void PrometheusMetrics::Forget(const Labels& match) {
  std::lock_guard<std::mutex> l(impl_->mu);
  for (auto& [name, t] : impl_->gauges) t.Forget(match);
  for (auto& [name, t] : impl_->counters) t.Forget(match);
  for (auto& [name, t] : impl_->histograms) t.Forget(match);
}

}  // namespace attune::common
