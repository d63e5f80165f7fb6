#include "common/process_stats.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attune::common {
namespace {

// Seconds since the epoch at boot (the btime line of /proc/stat).
double BootUnixSeconds() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  return 0;
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid);
  std::ifstream in(dir + "/stat");
  std::string stat;
  if (!in || !std::getline(in, stat)) return absl::NotFoundError(absl::StrCat("no process ", pid));
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return absl::InternalError(absl::StrCat(dir, "/stat: unexpected format"));
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 22) return absl::InternalError(absl::StrCat(dir, "/stat: too few fields"));
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  ProcessStats s;
  s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;                // utime, stime (14, 15)
  s.start_unix_seconds = BootUnixSeconds() + std::stod(f[19]) / ticks;          // starttime (22)
  s.resident_bytes = std::stoll(f[21]) * static_cast<int64_t>(::getpagesize());  // rss (24), pages
  if (DIR* d = ::opendir((dir + "/fd").c_str())) {
    while (dirent* e = ::readdir(d)) s.open_fds += e->d_name[0] != '.';
    ::closedir(d);
  }
  return s;
}

void ExportOwnProcessStats(Metrics& m, double* cpu_reported) {
  auto s = ReadProcessStats(::getpid());
  if (!s.ok()) return;
  if (s->cpu_seconds > *cpu_reported) {
    m.AddCounter("process_cpu_seconds_total", "user and system CPU time spent, seconds", {},
                 s->cpu_seconds - *cpu_reported);
    *cpu_reported = s->cpu_seconds;
  }
  m.SetGauge("process_resident_memory_bytes", "resident memory size, bytes", {}, static_cast<double>(s->resident_bytes));
  m.SetGauge("process_start_time_seconds", "start time of the process since the unix epoch, seconds", {},
             s->start_unix_seconds);
  m.SetGauge("process_open_fds", "open file descriptors", {}, s->open_fds);
}

}  // namespace attune::common
