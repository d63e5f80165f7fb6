#pragma once

// JobManager: the job lifecycle, worker liveness and fencing. Domain only:
// it sees JobConfig, never protos or gRPC. Thread-safe (one mutex); Tick()
// runs periodically on the server's thread. `store` must outlive it.
//
// Attempt protocol:
//   1. Tick() places QUEUED / RECOVERING jobs (Schedule()), raises the job's
//      generation and queues one assignment per rank for its worker.
//   2. Agents receive assignments in heartbeat replies and report every
//      task with its generation; a task of an older generation is told to stop.
//   3. All ranks exit 0: SUCCEEDED. A rank exits non-zero or its worker
//      misses heartbeats: the attempt is fenced (generation + 1), every rank is
//      stopped, and the job goes RECOVERING -> relaunched from its last
//      checkpoint after a backoff, until max_restarts; then FAILED with the reason.
//      Exit codes 2 and 65 (bad spec or data) fail at once: retrying cannot help.
//   4. Cancel: CANCELLING until no rank of the job runs, then CANCELLED.

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/job_store.h"
#include "coordinator/types.h"

namespace attune::coordinator {

struct ManagerOptions {
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  // A lost worker is forgotten this long after its last heartbeat (if it
  // comes back later it registers again), so that replaced pods do not stay
  // "lost" forever.
  absl::Duration lost_worker_retention = absl::Minutes(10);
  absl::Duration restart_backoff = absl::Seconds(1);   // doubles per restart
  absl::Duration max_restart_backoff = absl::Seconds(30);
  std::string data_root;  // when set, every path of a spec must resolve inside it
  size_t log_lines_per_rank = 1000;
  // Registered workers (alive or lost) the coordinator holds at most: a
  // registration of a new id beyond it is RESOURCE_EXHAUSTED.
  size_t max_workers = 10000;
  // After a restart, live attempts get this long (plus twice the heartbeat
  // timeout) for their agents to report them: the agents' reconnect backoff
  // (at most 5 s) and a heartbeat.
  absl::Duration readoption_grace = absl::Seconds(10);
  // How long a rank's echo of its peer's failure (exit 1, or an unexplained
  // 143) waits for the peer's report while other ranks still run
  // (NOTE [the failing rank speaks]).
  absl::Duration root_cause_grace = absl::Seconds(3);
  // A submitter (by owner name; without authentication, everyone together)
  // holds at most this many QUEUED jobs, and this many bytes of their specs:
  // a submit beyond either is RESOURCE_EXHAUSTED. 0: no limit.
  size_t max_queued_jobs_per_owner = 100;
  size_t max_queued_spec_bytes_per_owner = size_t{16} << 20;
};

struct WorkerInfo {
  std::string id, host;
  int64_t cpus = 1, gpus = 0;
  int rendezvous_port = 0;
  std::map<std::string, std::string> labels;
};

struct WorkerListing {
  WorkerInfo info;
  enum class State { kIdle, kBusy, kLost } state = State::kIdle;
  int64_t last_heartbeat_ms = 0;  // unix
  std::vector<std::string> jobs;  // live jobs with a rank on it
};

struct TaskReport {
  std::string job_id;
  int64_t generation = 0;
  int rank = 0;
  bool running = false;
  int exit_code = 0;
  std::vector<std::string> log_lines;
  std::string error;  // when !running: the trainer's reason (untrusted text; sanitised and capped on use)
  // When !running: its agent stopped it because this coordinator did not
  // answer within the agent's lease (NOTE [coordinator outages]).
  bool stopped_unreachable = false;
};

struct AssignmentOut {
  std::string job_id;
  int64_t generation = 0;
  int rank = 0, world_size = 1;
  std::string rendezvous, backend, spec_json;
  // NOTE [rendezvous secret]: one per generation, shared by its ranks only;
  // rank 0's store admits a connection only after it presents it.
  std::string rendezvous_secret;
};

struct StopOut {
  std::string job_id;
  int64_t generation = 0;
  std::string reason;
};

struct HeartbeatOut {
  bool reregister = false;
  std::vector<AssignmentOut> start;
  std::vector<StopOut> stop;
};

// What one submit may make the coordinator store and serve back in listings.
inline constexpr size_t kMaxIdempotencyKeyBytes = 256;
inline constexpr size_t kMaxSpecJsonBytes = 256 * 1024;

// Who submits or asks: the owner recorded on a job, and whether the caller
// may use every owner's jobs (an admin; everyone when authentication is off).
struct Submitter {
  std::string name;
  bool admin = true;
  bool Owns(const std::string& owner) const { return admin || owner == name; }
};

struct ListFilter {
  Submitter viewer;  // lists only the jobs this viewer owns (all for an admin)
  std::optional<JobState> state;
  std::string label_key, label_value;
  int page_size = 100;
  std::string page_token;  // the seq to continue after
};

class JobManager {
 public:
  JobManager(JobStore& store, ManagerOptions options);

  // Loads jobs after a restart. Live attempts keep running and are re-adopted
  // when their agents report; ranks not reported within the heartbeat
  // timeout count as lost.
  absl::Status Recover();

  // Records `who.name` as the job's owner. An idempotency key is the
  // owner's: another owner's equal key is another job. model.from_job must
  // name a job `who` owns.
  absl::StatusOr<Job> Submit(const common::JobConfig& config, const std::string& spec_json,
                             const std::string& idempotency_key, const Submitter& who = {});
  // The checks Submit makes of a spec (fields, paths, model.from_job),
  // without submitting it.
  absl::Status Check(const common::JobConfig& config, const Submitter& who = {});
  absl::StatusOr<Job> Get(const std::string& id);
  absl::StatusOr<std::pair<std::vector<Job>, std::string>> List(const ListFilter& filter);
  // The page token that continues a listing after `job` (for a caller that
  // ends a page early, as one that bounds its reply's size).
  static std::string PageTokenAfter(const Job& job) { return std::to_string(job.seq); }
  absl::StatusOr<Job> Cancel(const std::string& id);
  struct ArtifactFile {
    std::string relative;  // to output_dir
    std::string path;      // its canonical path, checked inside output_dir and the data root
  };
  // The files of a SUCCEEDED job's "model", "reports" or "all". NotFound,
  // FailedPrecondition (not SUCCEEDED), InvalidArgument (`what`), and
  // PermissionDenied naming a symlink or a path that resolves outside the
  // job's output_dir or the data root.
  absl::StatusOr<std::vector<ArtifactFile>> Artifacts(const std::string& id, const std::string& what);
  // Events from `from_index`; waits up to `wait` for one when there is none.
  absl::StatusOr<std::vector<Event>> WaitEvents(const std::string& id, int64_t from_index, absl::Duration wait);
  struct LogLine {
    int rank = 0;
    int64_t seq = 0;  // increasing per job; starts at the first line's unix ms x 1000, so it grows across restarts
    std::string line;
  };
  // The last `tail` lines per rank (all ranks when rank < 0) after `after_seq`, in seq order.
  std::vector<LogLine> Logs(const std::string& id, int rank, int tail, int64_t after_seq = 0);

  // In-process registration, trusted (tests, benches): no session.
  void Register(const WorkerInfo& w);
  // NOTE [worker sessions]: a registration over the API. A worker id that is
  // registered and alive (heard from within the heartbeat timeout) is refused
  // with kAlreadyExists unless `session` is its current session; otherwise a
  // new session secret is issued and returned.
  absl::StatusOr<std::string> RegisterSession(const WorkerInfo& w, const std::string& session);
  // OK when `session` is `worker_id`'s current one, or the worker is unknown
  // (the coordinator restarted: the reply asks it to register); otherwise
  // kPermissionDenied, counted as a refused report.
  // Counts a worker call refused before it reached the manager (exported as
  // attune_coordinator_refused_reports_total{reason}).
  void CountRefused(const std::string& reason);
  absl::Status CheckSession(const std::string& worker_id, const std::string& session);
  HeartbeatOut Heartbeat(const std::string& worker_id, const std::vector<TaskReport>& tasks);
  // Progress, evaluation and checkpoint events from a trainer (rank 0's
  // count). kFailedPrecondition for an older generation (fenced);
  // kPermissionDenied from a worker the rank is not assigned to.
  absl::Status Report(const std::string& worker_id, const std::string& job_id, int64_t generation, int rank,
                      Event event);
  void Tick();

  // For metrics: a snapshot of the cluster, plus the scheduling latencies
  // observed since the previous call (drained).
  struct ClusterStats {
    std::map<JobState, int> jobs;
    int workers_idle = 0, workers_busy = 0, workers_lost = 0;
    std::vector<std::pair<std::string, double>> heartbeat_age_seconds;  // per registered worker
    int64_t restarts = 0;                                                // over all jobs, ever
    std::vector<double> scheduling_seconds;  // eligible (queued, or backoff over) to placed
    std::map<std::string, int64_t> refused_reports;  // by reason, since the previous call
    // Attempts stopped by a coordinator outage and resumed without spending a
    // restart (NOTE [coordinator outages]), since the previous call.
    int64_t outage_resumes = 0;
  };
  ClusterStats TakeStats();
  std::vector<WorkerListing> Workers();

 private:
  struct RankState {
    bool reported = false, running = false, exited = false;
    int exit_code = 0;
    std::string error;
    // Its agent stopped it while the coordinator was unreachable, and the
    // coordinator saw that outage too (NOTE [coordinator outages]).
    bool stopped_unreachable = false;
  };
  struct WorkerState {
    WorkerInfo info;
    absl::Time last_seen;
    bool alive = true;
    std::vector<AssignmentOut> pending;
    std::vector<StopOut> stops;
    std::string session;  // NOTE [worker sessions]; empty for in-process registrations
    absl::Time outage_ended = absl::InfinitePast();  // the end of its last silence (NOTE [coordinator outages])
  };
  struct Live {
    std::vector<RankState> ranks;
    absl::Time since;
    absl::Time first_failure = absl::InfiniteFuture();  // NOTE [the failing rank speaks]
    bool adopted = false;  // placed by an earlier coordinator process (Recover)
  };

  absl::Status CheckPaths(const common::JobConfig& c);
  // With a data root: missing data files and columns, a model.path without
  // config.json, a missing vocab. Each entry names its field.
  static std::vector<std::string> InputProblems(const common::JobConfig& c);
  absl::Status SetStateLocked(Job& job, JobState s, const std::string& message, EventType type = EventType::kStateChanged);
  // The one fence: a new generation (reports and tasks of the old one are
  // refused from now on), the old ranks told to stop, the live attempt gone.
  void FenceAttemptLocked(Job& job, const std::string& reason);
  void FailAttemptLocked(Job& job, const std::string& reason, bool permanent, EventType type);
  // Ends the live attempt (fenced, its ranks stopped) and queues the job to
  // resume from its last checkpoint at once, spending no restart: the attempt
  // was stopped by an outage of the coordinator, not by a fault of the job.
  void ResumeAfterOutageLocked(Job& job, const std::string& reason);
  void StopRanksLocked(const Job& job, int64_t generation, const std::string& reason);
  void ScheduleLocked();
  // NOTE [job chaining] (model.from_job).
  absl::StatusOr<std::string> ResolveDependencyLocked(const std::string& ref, const Submitter& who) const;
  // NOTE [output directories] in job_manager.cc.
  absl::Status CheckOutputDirLocked(const common::JobConfig& config, const Submitter& who) const;
  // Whether `who` may queue one more job of `spec_bytes` (ManagerOptions' per-owner limits).
  absl::Status CheckQueueQuotaLocked(const Submitter& who, size_t spec_bytes) const;
  // Whether `job` may be scheduled now: its dependency SUCCEEDED (its spec is
  // then rewritten to that job's model); a failed dependency fails it.
  bool DependencyMetLocked(Job& job);
  std::vector<WorkerListing> WorkersLocked() const;
  void CheckJobLocked(Job& job);

  JobStore& store_;
  ManagerOptions options_;
  std::mutex submit_mu_;  // NOTE [one live job per output_dir]; taken before mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Job> jobs_;  // every job, mirror of the store
  std::map<std::string, WorkerState> workers_;
  std::map<std::string, Live> live_;  // current attempt's ranks, per job
  std::map<std::pair<std::string, int>, std::deque<std::pair<int64_t, std::string>>> logs_;
  std::map<std::string, int64_t> log_seq_;  // the last seq given, per job
  absl::Time started_ = absl::Now();
  std::vector<double> scheduling_seconds_;  // drained by TakeStats
  std::map<std::string, int64_t> refused_reports_;  // drained by TakeStats
  int64_t outage_resumes_ = 0;                       // drained by TakeStats
  bool AssignedLocked(const Job& job, const std::string& worker_id, int rank) const;
  void RegisterLocked(const WorkerInfo& w);
};

}  // namespace attune::coordinator
