#pragma once

// A token bucket: `rate` calls per second on average, `burst` at once. For
// calls whose volume an outside party controls (registrations). Thread-safe.

#include <algorithm>
#include <functional>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace attune::coordinator::rpc {

class RateLimiter {
 public:
  using Clock = std::function<absl::Time()>;
  RateLimiter(double rate_per_s, double burst, Clock clock = absl::Now)
      : rate_(rate_per_s), burst_(burst), tokens_(burst), clock_(std::move(clock)), last_(clock_()) {}

  // Takes one token if there is one.
  bool TryAcquire() {
    std::lock_guard<std::mutex> l(mu_);
    const absl::Time now = clock_();
    tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - last_) * rate_);
    last_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  std::mutex mu_;
  const double rate_, burst_;
  double tokens_;
  Clock clock_;
  absl::Time last_;
};

}  // namespace attune::coordinator::rpc
