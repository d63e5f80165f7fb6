#include "worker/agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/process_stats.h"
#include "common/secret.h"
#include "worker/agent/trainer_metrics.h"

extern char** environ;

namespace attune::worker::agent {
namespace {

void DrainLines(int fd, std::string* buf, std::vector<std::string>* lines) {
  char chunk[4096];
  while (true) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    buf->append(chunk, static_cast<size_t>(n));
  }
  size_t pos;
  while ((pos = buf->find('\n')) != std::string::npos) {
    lines->push_back(buf->substr(0, pos));
    buf->erase(0, pos + 1);
  }
  if (buf->size() > 65536) {  // a line that never ends is cut, not kept forever
    lines->push_back(buf->substr(0, 65536));
    buf->clear();
  }
}

}  // namespace

Agent::Agent(CoordinatorClient& client, AgentOptions options, common::Metrics& metrics)
    : client_(client), options_(std::move(options)), metrics_(metrics) {}

bool Agent::Export(Proc& p, const std::string& event_json) {
  p.last_event = absl::Now();
  ExportTrainerEvent(metrics_, {p.task.job_id, p.task.rank, p.task.backend}, event_json);
  auto j = nlohmann::json::parse(event_json, nullptr, false);
  if (!j.is_object()) return true;
  const std::string type = j.value("type", "");
  if (type == "alive") return false;  // liveness only, nothing to relay
  if (type == "error" && j.contains("message") && j["message"].is_string()) {
    p.error = j["message"].get<std::string>().substr(0, 4096);
  } else if (type == "progress") {
    p.stepping = true;
    if (j.contains("step_seconds") && j["step_seconds"].is_array()) {
      for (const auto& v : j["step_seconds"]) {
        if (v.is_number()) p.step_seconds.push_back(v.get<double>());
      }
      if (p.step_seconds.size() > 200) p.step_seconds.erase(p.step_seconds.begin(), p.step_seconds.end() - 200);
    }
    p.silence_limit = SilenceLimit(p);
  }
  return true;
}

absl::Duration Agent::SilenceLimit(const Proc& p) const {
  if (p.step_seconds.empty()) return options_.progress_timeout;
  std::vector<double> s = p.step_seconds;
  std::nth_element(s.begin(), s.begin() + static_cast<long>(s.size() / 2), s.end());
  return std::max(options_.progress_timeout, absl::Seconds(20 * s[s.size() / 2]));
}

// The agent's own process_* series, and each running trainer's CPU and memory.
void Agent::ExportProcessStats() {
  common::ExportOwnProcessStats(metrics_, &own_cpu_reported_);
  for (auto& [key, p] : procs_) {
    if (!p.running) continue;
    auto s = common::ReadProcessStats(p.pid);
    if (!s.ok()) continue;
    const common::Labels l = {{"job_id", p.task.job_id}, {"rank", std::to_string(p.task.rank)}};
    metrics_.SetGauge("attune_trainer_resident_memory_bytes", "resident memory of this rank's trainer process, bytes", l,
                      static_cast<double>(s->resident_bytes));
    if (s->cpu_seconds > p.cpu_reported) {
      metrics_.AddCounter("attune_trainer_cpu_seconds_total", "CPU time of this rank's trainer process, seconds", l,
                          s->cpu_seconds - p.cpu_reported);
      p.cpu_reported = s->cpu_seconds;
    }
  }
}

Agent::~Agent() {
  for (auto& [k, p] : procs_) {
    if (p.running) ::kill(-p.pid, SIGKILL);
    if (p.log_fd >= 0) ::close(p.log_fd);
    if (p.event_fd >= 0) ::close(p.event_fd);
  }
}

std::string Agent::Key(const std::string& job, int64_t gen, int rank) const {
  return absl::StrCat(job, "/", gen, "/", rank);
}

// NOTE [GPU allocation] (agent.h): the spec's workers.gpus_per_rank
// (protobuf JSON writes an int64 as a string) from the devices no running
// trainer holds. Decided before anything is written or opened for the task.
absl::StatusOr<std::vector<std::string>> Agent::TakeGpus(const AgentTask& t) const {
  int64_t want = 0;
  if (auto j = nlohmann::json::parse(t.spec_json, nullptr, false); j.is_object() && j.contains("workers") &&
                                                                   j["workers"].is_object()) {
    const auto& g = j["workers"].value("gpus_per_rank", nlohmann::json());
    if (g.is_number_integer()) {
      want = g.get<int64_t>();
    } else if (g.is_string()) {
      if (!absl::SimpleAtoi(g.get<std::string>(), &want)) want = -1;
    } else if (!g.is_null()) {
      want = -1;  // 1.5, true, a list: not a count of devices
    }
  }
  if (want < 0) {
    return absl::InvalidArgumentError(absl::StrCat("job=", t.job_id, " rank=", t.rank,
                                                   " assignment refused: workers.gpus_per_rank is not a count of GPUs"));
  }
  std::vector<std::string> held, free;
  for (const auto& [k, q] : procs_) {
    if (q.running) held.insert(held.end(), q.gpus.begin(), q.gpus.end());
  }
  for (const auto& id : options_.gpu_ids) {
    if (std::find(held.begin(), held.end(), id) == held.end()) free.push_back(id);
  }
  if (want > static_cast<int64_t>(free.size())) {
    return absl::ResourceExhaustedError(absl::StrCat("job=", t.job_id, " rank=", t.rank, " assignment refused: it asks for ",
                                                     want, " GPUs, and ", free.size(), " of this worker's ",
                                                     options_.gpu_ids.size(), " are free"));
  }
  free.resize(static_cast<size_t>(want));
  return free;
}

absl::Status Agent::Start(const AgentTask& t) {
  // Whatever the coordinator sends is checked before it names a file or an
  // argument: a job id is a name, not a path ("../../x"), and the numbers
  // are in range.
  if (!common::IsValidName(t.job_id) || t.job_id == "." || t.job_id == "..") {
    return absl::InvalidArgumentError("assignment refused: the job id is not [A-Za-z0-9._-]{1,128}");
  }
  if (t.generation < 0 || t.world_size < 1 || t.world_size > 1024 || t.rank < 0 || t.rank >= t.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("job=", t.job_id, " assignment refused: rank ", t.rank,
                                                   " of world size ", t.world_size, ", generation ", t.generation));
  }
  if (t.backend.find_first_not_of("abcdefghijklmnopqrstuvwxyz") != std::string::npos ||
      t.rendezvous.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("job=", t.job_id, " assignment refused: malformed backend or rendezvous"));
  }
  if (!t.rendezvous_secret.empty() && !common::IsWellFormedSecret(t.rendezvous_secret)) {
    return absl::InvalidArgumentError(
        absl::StrCat("job=", t.job_id, " assignment refused: the rendezvous secret is not 32 to 128 hex digits"));
  }
  const std::string key = Key(t.job_id, t.generation, t.rank);
  if (procs_.count(key)) return absl::OkStatus();  // a repeated assignment
  auto gpus = TakeGpus(t);
  if (!gpus.ok()) return gpus.status();
  if (auto s = common::MakeDirs(options_.work_dir); !s.ok()) return s;
  const std::string spec = absl::StrCat(options_.work_dir, "/", t.job_id, "-g", t.generation, "-r", t.rank, ".json");
  if (auto s = common::WriteFileAtomic(spec, t.spec_json); !s.ok()) return s;
  int logs[2], events[2];
  if (::pipe2(logs, O_CLOEXEC) != 0) return absl::UnavailableError("pipe failed");
  if (::pipe2(events, O_CLOEXEC) != 0) {
    ::close(logs[0]);
    ::close(logs[1]);
    return absl::UnavailableError("pipe failed");
  }
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (v.rfind("CUDA_VISIBLE_DEVICES=", 0) != 0 && v.rfind("ATTUNE_RENDEZVOUS_SECRET=", 0) != 0) env.emplace_back(v);
  }
  env.push_back("CUDA_VISIBLE_DEVICES=" + absl::StrJoin(*gpus, ","));
  // In the environment, not the arguments: /proc/PID/cmdline is world-readable.
  if (!t.rendezvous_secret.empty()) env.push_back("ATTUNE_RENDEZVOUS_SECRET=" + t.rendezvous_secret);
  std::vector<std::string> args = {options_.trainer_binary, "train", "--spec", spec,
                                   absl::StrCat("--rank=", t.rank), absl::StrCat("--world_size=", t.world_size),
                                   "--events_fd=3", "--job_id=" + t.job_id,
                                   absl::StrCat("--generation=", t.generation)};
  if (t.world_size > 1) args.push_back("--rendezvous=" + t.rendezvous);
  if (!options_.data_root.empty()) args.push_back("--data_root=" + options_.data_root);
  if (!options_.embeddings_dir.empty()) args.push_back("--embeddings_dir=" + options_.embeddings_dir);
  if (!t.backend.empty()) args.push_back("--backend=" + t.backend);
  if (!gpus->empty()) args.push_back("--device=cuda:0");
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    // Child: its own process group (so a stop reaches everything it starts),
    // stdout and stderr into the log pipe, events on fd 3.
    ::setpgid(0, 0);
    ::dup2(logs[1], 1);
    ::dup2(logs[1], 2);
    ::dup2(events[1], 3);
    ::execve(options_.trainer_binary.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(logs[1]);
  ::close(events[1]);
  if (pid < 0) {
    ::close(logs[0]);
    ::close(events[0]);
    return absl::UnavailableError("fork failed");
  }
  ::fcntl(logs[0], F_SETFL, O_NONBLOCK);
  ::fcntl(events[0], F_SETFL, O_NONBLOCK);
  Proc p;
  p.task = t;
  p.pid = pid;
  p.log_fd = logs[0];
  p.event_fd = events[0];
  p.gpus = *gpus;
  procs_[key] = std::move(p);
  // A new attempt of the same rank keeps its series (counters continue).
  forget_.erase(std::remove_if(forget_.begin(), forget_.end(),
                               [&](const auto& f) { return f.second.job_id == t.job_id && f.second.rank == t.rank; }),
                forget_.end());
  SetTaskRunning(metrics_, {t.job_id, t.rank, t.backend}, true);
  SetTaskAttempt(metrics_, {t.job_id, t.rank, t.backend}, t.generation);
  LOG(INFO) << "job=" << t.job_id << " rank=" << t.rank << " generation " << t.generation << ": started trainer pid "
            << pid << (gpus->empty() ? "" : absl::StrCat(" on GPU(s) ", absl::StrJoin(*gpus, ",")));
  return absl::OkStatus();
}

void Agent::Stop(Proc& p, const std::string& why) {
  if (!p.running || p.kill_at != absl::InfiniteFuture()) return;
  LOG(INFO) << "job=" << p.task.job_id << " rank=" << p.task.rank << " stopping trainer pid " << p.pid << ": " << why;
  ::kill(-p.pid, SIGTERM);
  p.kill_at = absl::Now() + options_.stop_grace;
}

void Agent::Poll() {
  for (auto& [key, p] : procs_) {
    std::vector<std::string> events;
    if (p.event_fd >= 0) DrainLines(p.event_fd, &p.event_buf, &events);
    for (auto& e : events) {
      if (!Export(p, e)) continue;
      outbox_.push_back({p.task.job_id, p.task.generation, p.task.rank, std::move(e)});
    }
    if (p.log_fd >= 0) DrainLines(p.log_fd, &p.log_buf, &p.new_lines);
    if (p.new_lines.size() > 2000) p.new_lines.erase(p.new_lines.begin(), p.new_lines.end() - 2000);
    if (!p.running) continue;
    int status = 0;
    if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
      p.running = false;
      p.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      // What it wrote just before exiting is relayed before its exit is reported.
      std::vector<std::string> last;
      DrainLines(p.event_fd, &p.event_buf, &last);
      for (auto& e : last) {
        if (!Export(p, e)) continue;
        outbox_.push_back({p.task.job_id, p.task.generation, p.task.rank, std::move(e)});
      }
      DrainLines(p.log_fd, &p.log_buf, &p.new_lines);
      LOG(INFO) << "job=" << p.task.job_id << " rank=" << p.task.rank << " trainer exited with " << p.exit_code;
      metrics_.AddCounter("attune_worker_trainer_exits_total", "trainer processes ended, by exit code",
                          {{"code", std::to_string(p.exit_code)}}, 1);
      SetTaskRunning(metrics_, {p.task.job_id, p.task.rank, p.task.backend}, false);
      forget_.push_back({absl::Now() + options_.forget_series_after, {p.task.job_id, p.task.rank, p.task.backend}});
      ::kill(-p.pid, SIGKILL);  // anything it left behind in its group
    } else if (absl::Now() > p.kill_at) {
      ::kill(-p.pid, SIGKILL);
    } else if (p.stepping && p.kill_at == absl::InfiniteFuture() && absl::Now() - p.last_event > p.silence_limit) {
      // NOTE [progress watchdog]. A stopped or hung process may not act on
      // SIGTERM, so it gets SIGKILL; its reason goes with its exit.
      const absl::Duration quiet = absl::Now() - p.last_event;
      p.error = absl::StrCat("rank ", p.task.rank, " made no progress for ", absl::ToInt64Seconds(quiet),
                             " s (no step and no heartbeat; limit ", absl::ToInt64Seconds(p.silence_limit), " s)");
      LOG(WARNING) << "job=" << p.task.job_id << " " << p.error << ": killing trainer pid " << p.pid;
      metrics_.AddCounter("attune_worker_trainer_hangs_total",
                          "trainers killed by the progress watchdog (no step and no heartbeat for too long)", {}, 1);
      ::kill(-p.pid, SIGKILL);
      p.kill_at = absl::Now();
    }
  }
}

void Agent::Run(const std::atomic<bool>& stop) {
  absl::Duration backoff = absl::Milliseconds(200);
  // Retries come often enough that a coordinator back from a restart is
  // reached several times within the lease (NOTE [agent lease]).
  const absl::Duration max_backoff =
      options_.coordinator_lease > absl::ZeroDuration()
          ? std::clamp(options_.coordinator_lease / 6, absl::Milliseconds(200), absl::Seconds(5))
          : absl::Seconds(5);
  bool registered = false;
  absl::Time next_beat = absl::Now();
  absl::Time last_contact = absl::Now();  // the last heartbeat the coordinator answered
  while (!stop.load()) {
    Poll();
    // Relay events (progress, evaluation, checkpoints) as they come.
    if (registered) {
      std::vector<TrainerEvent> keep;
      for (auto& e : outbox_) {
        absl::Status s = client_.Report(options_.info.worker_id, e);
        if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) keep.push_back(std::move(e));
      }
      if (keep.size() > 1000) keep.erase(keep.begin(), keep.end() - 1000);
      outbox_ = std::move(keep);
    }
    // NOTE [agent lease]: cut off from the coordinator for longer than the
    // lease (shorter than its heartbeat timeout), the agent stops its trainers
    // (SIGTERM: each commits a checkpoint first), because the coordinator is
    // about to declare this worker lost and restart the jobs elsewhere. Such
    // a stop is reported as one (stopped_unreachable): when the coordinator
    // was down rather than this worker cut off, it resumes the job from that
    // checkpoint without spending a restart (NOTE [coordinator outages]).
    if (options_.coordinator_lease > absl::ZeroDuration() && absl::Now() - last_contact > options_.coordinator_lease) {
      for (auto& [key, p] : procs_) {
        if (!p.running || p.kill_at != absl::InfiniteFuture()) continue;
        p.error = absl::StrCat("no contact with the coordinator for ",
                               absl::ToInt64Seconds(absl::Now() - last_contact),
                               " s: stopped (a checkpoint first); the job resumes from it, elsewhere if this worker "
                               "is lost");
        p.stopped_unreachable = true;
        Stop(p, p.error);
      }
    }
    if (absl::Now() >= next_beat) {
      if (!registered) {
        absl::Status s = client_.Register(options_.info);
        if (s.ok()) {
          registered = true;
          backoff = absl::Milliseconds(200);
          LOG(INFO) << "agent " << options_.info.worker_id << " registered";
        } else {
          LOG_EVERY_N(WARNING, 10) << "agent: cannot register: " << s;
          next_beat = absl::Now() + backoff;
          backoff = std::min(backoff * 2, max_backoff);
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
      }
      std::vector<TaskState> tasks;
      int running = 0;
      for (auto& [key, p] : procs_) running += p.running;
      metrics_.SetGauge("attune_worker_tasks_running", "trainer processes running on this worker", {}, running);
      ExportProcessStats();
      for (auto& [key, p] : procs_) {
        if (!p.running && p.reports_left <= 0) continue;
        tasks.push_back({p.task.job_id, p.task.generation, p.task.rank, p.running, p.exit_code, p.new_lines, p.error,
                         p.stopped_unreachable});
      }
      auto reply = client_.Heartbeat(options_.info.worker_id, tasks);
      if (!reply.ok()) {
        LOG_EVERY_N(WARNING, 10) << "agent: heartbeat failed (trainers keep running): " << reply.status();
        // NOTE [worker sessions]: a coordinator that no longer knows this
        // session (another registration took the id) wants a new one.
        if (absl::IsPermissionDenied(reply.status())) registered = false;
        next_beat = absl::Now() + backoff;
        backoff = std::min(backoff * 2, max_backoff);
      } else {
        backoff = absl::Milliseconds(200);
        last_contact = absl::Now();
        next_beat = absl::Now() + options_.heartbeat_interval;
        for (auto& [key, p] : procs_) {
          p.new_lines.clear();
          if (!p.running) --p.reports_left;
        }
        if (reply->reregister) {
          // The coordinator restarted: register and report our tasks at once.
          registered = false;
          next_beat = absl::Now();
        }
        for (const auto& [job, gen] : reply->stop) {
          for (auto& [key, p] : procs_) {
            if (p.task.job_id == job && p.task.generation <= gen) Stop(p, "stopped by the coordinator");
          }
        }
        for (const auto& t : reply->start) {
          if (auto s = Start(t); !s.ok()) LOG(ERROR) << "job=" << t.job_id << " cannot start rank " << t.rank << ": " << s;
        }
      }
      // A finished task's series go once they had time to be scraped.
      while (!forget_.empty() && forget_.front().first <= absl::Now()) {
        ForgetTrainer(metrics_, forget_.front().second);
        forget_.pop_front();
      }
      // Forget finished tasks that have been reported enough.
      for (auto it = procs_.begin(); it != procs_.end();) {
        if (!it->second.running && it->second.reports_left <= 0) {
          ::close(it->second.log_fd);
          ::close(it->second.event_fd);
          it = procs_.erase(it);
        } else {
          ++it;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& [key, p] : procs_) Stop(p, "agent shutting down");
  auto deadline = absl::Now() + options_.stop_grace;
  while (absl::Now() < deadline) {
    Poll();
    bool any = false;
    for (auto& [key, p] : procs_) any |= p.running;
    if (!any) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace attune::worker::agent
