// ReadProcessStats against this test process itself.

#include "common/process_stats.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace attune::common {
namespace {

TEST(ProcessStatsTest, ReadsThisProcess) {
  auto before = ReadProcessStats(::getpid());
  ASSERT_TRUE(before.ok()) << before.status();
  // 64 MiB touched: resident memory grows by about that much.
  std::vector<char> block(64 << 20, 1);
  // Burn ~0.3 s of CPU.
  volatile double x = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) x = x + std::sqrt(x + 1.0);
  const int fd = ::open("/dev/null", O_RDONLY);
  auto after = ReadProcessStats(::getpid());
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->resident_bytes - before->resident_bytes, 48 << 20);
  EXPECT_GT(after->cpu_seconds - before->cpu_seconds, 0.15);
  EXPECT_EQ(after->open_fds, before->open_fds + 1);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(after->start_unix_seconds, now + 1);
  EXPECT_GT(after->start_unix_seconds, now - 3600);
  EXPECT_EQ(block[12345], 1);
  ::close(fd);
}

TEST(ProcessStatsTest, MissingProcessIsNotFound) {
  EXPECT_EQ(ReadProcessStats(999999999).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace attune::common
