#pragma once

// A TCP relay on loopback whose link can be cut (TESTONLY): the network
// between an agent and the coordinator, without root or network namespaces.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace attune::testing {

class TcpProxy {
 public:
  // Relays 127.0.0.1:port() to 127.0.0.1:upstream_port.
  explicit TcpProxy(int upstream_port) : upstream_(upstream_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listen_fd_, 16);
    thread_ = std::thread([this] { Loop(); });
  }
  ~TcpProxy() {
    Cut();
    done_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }

  // Drops every open connection and refuses new ones from now on.
  void Cut() {
    std::lock_guard<std::mutex> l(mu_);
    cut_ = true;
    for (auto [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    pairs_.clear();
  }

 private:
  void Loop() {
    std::vector<char> buf(1 << 16);
    while (!done_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      {
        std::lock_guard<std::mutex> l(mu_);
        for (auto [a, b] : pairs_) {
          fds.push_back({a, POLLIN, 0});
          fds.push_back({b, POLLIN, 0});
        }
      }
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      std::lock_guard<std::mutex> l(mu_);
      if (fds[0].revents & POLLIN) {
        int c = ::accept(listen_fd_, nullptr, nullptr);
        if (c >= 0 && cut_) {
          ::close(c);
        } else if (c >= 0) {
          int u = ::socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          a.sin_port = htons(static_cast<uint16_t>(upstream_));
          if (::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            pairs_.emplace_back(c, u);
          } else {
            ::close(c);
            ::close(u);
          }
        }
      }
      // Pump whatever is readable; a closed side closes its pair.
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        for (size_t k = 0; k < pairs_.size(); ++k) {
          auto [a, b] = pairs_[k];
          if (fds[i].fd != a && fds[i].fd != b) continue;
          const int from = fds[i].fd, to = from == a ? b : a;
          ssize_t n = ::read(from, buf.data(), buf.size());
          bool ok = n > 0;
          for (ssize_t off = 0; ok && off < n;) {
            ssize_t w = ::write(to, buf.data() + off, static_cast<size_t>(n - off));
            ok = w > 0;
            off += w > 0 ? w : 0;
          }
          if (!ok) {
            ::close(a);
            ::close(b);
            pairs_.erase(pairs_.begin() + static_cast<long>(k));
          }
          break;
        }
      }
    }
  }

  int upstream_, listen_fd_ = -1, port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::atomic<bool> done_{false};
  bool cut_ = false;
  std::vector<std::pair<int, int>> pairs_;
};

}  // namespace attune::testing
