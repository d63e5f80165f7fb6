#include <algorithm>
#include <filesystem>
#include <fstream>

#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "common/files.h"
#include "common/secret.h"
#include "common/testing/status_matchers.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_store.h"
#include "coordinator/rpc/rate_limiter.h"
#include "coordinator/scheduler.h"

namespace attune::coordinator {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

struct ScheduleCase {
  std::string name;
  std::vector<WorkerView> cluster;
  std::vector<QueuedJob> queue;
  std::vector<Placement> want;
  std::vector<std::string> held = {};  // jobs the cluster could never hold
};

class SchedulerTableTest : public ::testing::TestWithParam<ScheduleCase> {};

TEST_P(SchedulerTableTest, Places) {
  const auto& c = GetParam();
  std::vector<Held> held;
  auto got = Schedule(c.cluster, c.queue, &held);
  ASSERT_EQ(got.size(), c.want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].job_id, c.want[i].job_id);
    EXPECT_EQ(got[i].workers, c.want[i].workers);
  }
  std::vector<std::string> held_ids;
  for (const auto& h : held) {
    held_ids.push_back(h.job_id);
    EXPECT_NE(h.reason.find("unschedulable: needs"), std::string::npos) << h.reason;
  }
  EXPECT_EQ(held_ids, c.held);
}

INSTANTIATE_TEST_SUITE_P(
    Table, SchedulerTableTest,
    ::testing::Values(
        ScheduleCase{"EmptyQueue", {{"w1", 4, 0}}, {}, {}},
        ScheduleCase{"SpreadsRanksOverWorkers", {{"w1", 2, 0}, {"w2", 2, 0}}, {{"a", 0, 1, 2, 1, 0}},
                     {{"a", {"w1", "w2"}}}},
        ScheduleCase{"GangAllOrNothing", {{"w1", 1, 0}, {"w2", 1, 0}}, {{"a", 0, 1, 3, 1, 0}}, {}, {"a"}},
        ScheduleCase{"PriorityBeforeFifo", {{"w1", 1, 0}}, {{"old", 0, 1, 1, 1, 0}, {"urgent", 5, 2, 1, 1, 0}},
                     {{"urgent", {"w1"}}}},
        ScheduleCase{"FifoWithinPriority", {{"w1", 2, 0}}, {{"b", 0, 2, 1, 1, 0}, {"a", 0, 1, 1, 1, 0}},
                     {{"a", {"w1"}}, {"b", {"w1"}}}},
        // A job no cluster state could hold blocks nothing: 3 ranks on 2 one-CPU workers,
        // 64 CPUs a rank, or a high priority do not stop the small job behind.
        ScheduleCase{"NeverPlaceableJobsDoNotBlock",
                     {{"w1", 1, 0}, {"w2", 1, 0}},
                     {{"big", 0, 1, 3, 1, 0}, {"fat", 9, 2, 1, 64, 0}, {"small", 0, 3, 1, 1, 0}},
                     {{"small", {"w1"}}},
                     {"fat", "big"}},
        // w1 (4 CPUs, 1 free: a running job holds 3) and w2 (4, all free). "big" (2 ranks x 3 CPUs)
        // fits the idle cluster, not its free CPUs: it reserves 3 on w1 and 3 on w2. "small"
        // (1 x 1) backfills on w2's unreserved CPU; "medium" (1 x 2) would eat into the
        // reservation, so it waits.
        ScheduleCase{"BackfillBehindAReservationNeverDelaysIt",
                     {{"w1", 1, 0, 4, 0}, {"w2", 4, 0, 4, 0}},
                     {{"big", 0, 1, 2, 3, 0}, {"small", 0, 2, 1, 1, 0}, {"medium", 0, 3, 1, 2, 0}},
                     {{"small", {"w2"}}}},
        // Only the first blocked job reserves; everything behind a second blocked job waits,
        // so that small jobs cannot starve it either.
        ScheduleCase{"OnlyTheFirstBlockedJobReserves",
                     {{"w1", 1, 0, 2, 0}, {"w2", 1, 0, 2, 0}},
                     {{"a", 0, 1, 2, 2, 0}, {"b", 0, 2, 1, 2, 0}, {"c", 0, 3, 1, 1, 0}},
                     {}},
        ScheduleCase{"GpusMustFit", {{"cpu", 8, 0}, {"gpu", 2, 1}}, {{"g", 0, 1, 1, 1, 1}}, {{"g", {"gpu"}}}},
        ScheduleCase{"CpusPerRank", {{"w1", 3, 0}, {"w2", 1, 0}}, {{"a", 0, 1, 2, 2, 0}}, {}, {"a"}},
        ScheduleCase{"SeveralJobsFillTheCluster",
                     {{"w1", 2, 0}, {"w2", 2, 0}},
                     {{"a", 0, 1, 2, 1, 0}, {"b", 0, 2, 2, 1, 0}, {"c", 0, 3, 1, 1, 0}},
                     {{"a", {"w1", "w2"}}, {"b", {"w1", "w2"}}}}),
    [](const auto& info) { return info.param.name; });

class StoreTest : public ::testing::Test {
 protected:
  StoreTest() : path_((fs::temp_directory_path() / ("attune_store_" + std::to_string(::getpid()) + "_" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                                                    ".db"))
                          .string()) {
    Clean();
  }
  ~StoreTest() override { Clean(); }
  void Clean() {
    for (const char* ext : {"", "-wal", "-shm", ".lock"}) fs::remove(path_ + ext);
  }
  static common::JobConfig Config() {
    common::JobConfig c;
    c.name = "j";
    c.model_path = "/m";
    c.train_path = "/t.csv";
    c.validation_path = "/v.csv";
    c.output_dir = "/o";
    c.world_size = 2;
    return c;
  }
  static ManagerOptions Options(absl::Duration heartbeat_timeout = absl::Seconds(5)) {
    ManagerOptions o;
    o.heartbeat_timeout = heartbeat_timeout;
    o.restart_backoff = absl::Milliseconds(1);
    return o;
  }
  // Submits Config() with `max_restarts`, registers w1..wN (1 CPU each, w1's
  // rendezvous port 1234) and lets the scheduler place the job.
  static absl::StatusOr<Job> SubmitAndPlace(JobManager& m, int64_t max_restarts, int workers) {
    common::JobConfig c = Config();
    c.max_restarts = max_restarts;
    auto job = m.Submit(c, "{}", "");
    for (int i = 1; i <= workers; ++i) m.Register({"w" + std::to_string(i), "127.0.0.1", 1, 0, 1233 + i, {}});
    m.Tick();
    return job;
  }
  std::string path_;
};

TEST_F(StoreTest, UnsyncedProgressSurvivesAProcessExitAndLaterWritesStaySynced) {
  std::string id;
  {
    auto store = JobStore::Open(path_);
    ASSERT_THAT(store, IsOk());
    Job job;
    job.config = Config();
    bool created = false;
    auto stored = (*store)->Create(job, {}, "abcd", &created);
    ASSERT_THAT(stored, IsOk());
    id = stored->id;
    Event progress;
    progress.type = EventType::kProgress;
    progress.progress.step = 7;
    stored->progress.step = 7;
    ASSERT_THAT((*store)->AppendEvent(*stored, progress, /*sync=*/false), IsOk());
    // The connection is back to synchronous=FULL (2) for everything else.
    EXPECT_EQ((*store)->SynchronousMode(), 2);
  }
  auto store = JobStore::Open(path_);
  ASSERT_THAT(store, IsOk());
  auto events = (*store)->Events(id, 0);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].progress.step, 7);
  EXPECT_EQ((*store)->Get(id)->progress.step, 7);
}

TEST_F(StoreTest, JobsAndEventsSurviveReopening) {
  std::string id;
  {
    auto store = JobStore::Open(path_);
    ASSERT_THAT(store, IsOk());
    JobManager m(**store, {});
    auto job = m.Submit(Config(), "{}", "key-1");
    ASSERT_THAT(job, IsOk());
    id = job->id;
    auto again = m.Submit(Config(), "{}", "key-1");
    EXPECT_EQ(again->id, id);
  }
  auto store = JobStore::Open(path_);
  ASSERT_THAT(store, IsOk());
  JobManager m(**store, {});
  ASSERT_THAT(m.Recover(), IsOk());
  auto job = m.Get(id);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->config.world_size, 2);
  auto events = m.WaitEvents(id, 0, absl::ZeroDuration());
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].state, JobState::kValidating);
  EXPECT_EQ((*events)[1].state, JobState::kQueued);
  auto page = m.List({});
  EXPECT_EQ(page->first.size(), 1u);
}

TEST_F(StoreTest, SecondOpenerIsRefused) {
  auto first = JobStore::Open(path_);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(JobStore::Open(path_), StatusIs(absl::StatusCode::kFailedPrecondition, "another coordinator"));
}

TEST_F(StoreTest, CorruptFileIsNeverReinitialised) {
  { std::ofstream(path_) << std::string(8192, 'x'); }
  EXPECT_THAT(JobStore::Open(path_), StatusIs(absl::StatusCode::kDataLoss, "refusing to start"));
  EXPECT_EQ(fs::file_size(path_), 8192u);
}

// Rewrites rows behind the store's back, as an operator's edit or a disk
// fault would.
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST_F(StoreTest, ALogicallyBadRowIsNamedAndTheFileLeftAsItIs) {
  std::string id;
  {
    auto store = JobStore::Open(path_);
    ASSERT_THAT(store, IsOk());
    JobManager m(**store, {});
    auto job = m.Submit(Config(), "{}", "");
    ASSERT_THAT(job, IsOk());
    id = job->id;
  }
  for (const std::string& bad :
       {std::string("body = 'garbage{'"),
        std::string("body = json_set(body, '$.config.world_size', 100000000000)"),
        std::string("body = json_set(body, '$.config.name', '../x')"), std::string("state = 42")}) {
    SCOPED_TRACE(bad);
    RawExec(path_, "UPDATE jobs SET " + bad + " WHERE id = '" + id + "'");
    const auto before = common::Sha256OfFile(path_);
    {
      auto store = JobStore::Open(path_);
      ASSERT_THAT(store, IsOk());
      JobManager m(**store, {});
      EXPECT_THAT(m.Recover(), StatusIs(absl::StatusCode::kDataLoss, "jobs row id '" + id + "'"));
    }
    EXPECT_EQ(common::Sha256OfFile(path_).value(), before.value());
    // Repaired, it loads again.
    RawExec(path_, "DELETE FROM jobs WHERE id = '" + id + "'");
    auto store = JobStore::Open(path_);
    JobManager m(**store, {});
    EXPECT_THAT(m.Recover(), IsOk());
    auto job = m.Submit(Config(), "{}", "");
    ASSERT_THAT(job, IsOk());
    id = job->id;
  }
}

TEST_F(StoreTest, AnUnreadableEventIsSkippedNotTheHistory) {
  auto store = JobStore::Open(path_);
  ASSERT_THAT(store, IsOk());
  JobManager m(**store, {});
  auto job = m.Submit(Config(), "{}", "");
  ASSERT_THAT(job, IsOk());
  RawExec(path_, "UPDATE events SET body = '{{' WHERE job_id = '" + job->id + "' AND idx = 0");
  auto events = m.WaitEvents(job->id, 0, absl::ZeroDuration());
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].index, 1);
}

TEST_F(StoreTest, AnOversizedIdempotencyKeyOrSpecIsRefused) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, {});
  EXPECT_THAT(m.Submit(Config(), "{}", std::string(300, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument, "idempotency_key: longer than 256 bytes"));
  EXPECT_THAT(m.Submit(Config(), std::string(300 * 1024, ' '), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, "spec: 307200 bytes as JSON"));
}

TEST(RateLimiterTest, ABurstThenTheRate) {
  absl::Time now = absl::FromUnixSeconds(1000);
  rpc::RateLimiter limiter(2, 3, [&now] { return now; });
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
  now += absl::Milliseconds(500);  // one token back at 2/s
  EXPECT_TRUE(limiter.TryAcquire());
  EXPECT_FALSE(limiter.TryAcquire());
  now += absl::Hours(1);  // never more than the burst
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
}

// One submitter could queue unplaceable jobs without end (+32 MB of state for
// 100 large specs). Queued jobs and their spec bytes are capped per owner;
// another owner, a retry with the same idempotency key, and a submit after
// a cancel still go through.
TEST_F(StoreTest, QueuedJobsAndSpecBytesAreCappedPerOwner) {
  auto store = JobStore::Open(path_);
  ManagerOptions o = Options();
  o.max_queued_jobs_per_owner = 3;
  o.max_queued_spec_bytes_per_owner = 1000;
  JobManager m(**store, o);
  const Submitter alice{"alice", false}, bob{"bob", false};
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    common::JobConfig c = Config();
    c.output_dir = "/o" + std::to_string(i);
    auto job = m.Submit(c, "{}", "k" + std::to_string(i), alice);
    ASSERT_THAT(job, IsOk());
    ids.push_back(job->id);
  }
  common::JobConfig c = Config();
  c.output_dir = "/o3";
  EXPECT_THAT(m.Submit(c, "{}", "k3", alice),
              StatusIs(absl::StatusCode::kResourceExhausted, "'alice' already has 3 queued jobs"));
  auto retry = m.Submit(c, "{}", "k0", alice);  // a retry of a queued submit returns that job
  ASSERT_THAT(retry, IsOk());
  EXPECT_EQ(retry->id, ids[0]);
  common::JobConfig theirs = Config();
  theirs.output_dir = "/bob";
  EXPECT_THAT(m.Submit(theirs, "{}", "", bob), IsOk());  // another owner
  ASSERT_THAT(m.Cancel(ids[0]), IsOk());
  EXPECT_THAT(m.Submit(c, "{}", "k3", alice), IsOk());  // room again
  // Bytes: bob's one queued job of 2 bytes, then a spec that would pass 1000.
  theirs.output_dir = "/bob2";
  EXPECT_THAT(m.Submit(theirs, std::string(999, ' '), "", bob),
              StatusIs(absl::StatusCode::kResourceExhausted, "would hold 1001 bytes"));
}

TEST_F(StoreTest, NewWorkerIdsBeyondTheLimitAreRefusedKnownOnesStillRegister) {
  auto store = JobStore::Open(path_);
  ManagerOptions o;
  o.max_workers = 2;
  JobManager m(**store, o);
  auto s1 = m.RegisterSession({"w1", "127.0.0.1", 1, 0, 0, {}}, "");
  ASSERT_THAT(s1, IsOk());
  ASSERT_THAT(m.RegisterSession({"w2", "127.0.0.1", 1, 0, 0, {}}, ""), IsOk());
  EXPECT_THAT(m.RegisterSession({"w3", "127.0.0.1", 1, 0, 0, {}}, ""),
              StatusIs(absl::StatusCode::kResourceExhausted, "its limit (--max-workers)"));
  EXPECT_THAT(m.RegisterSession({"w1", "127.0.0.1", 1, 0, 0, {}}, *s1), IsOk());  // its own id again
  EXPECT_EQ(m.TakeStats().refused_reports["too_many_workers"], 1);
}

TEST_F(StoreTest, LostWorkersAreForgottenAfterTheRetentionAndMayRegisterAgain) {
  auto store = JobStore::Open(path_);
  ManagerOptions o;
  o.heartbeat_timeout = absl::Milliseconds(100);
  o.lost_worker_retention = absl::Milliseconds(400);
  JobManager m(**store, o);
  m.Register({"w1", "127.0.0.1", 1, 0, 1234, {}});
  m.Register({"w2", "127.0.0.1", 1, 0, 1235, {}});
  absl::SleepFor(absl::Milliseconds(200));
  m.Heartbeat("w2", {});
  m.Tick();
  auto workers = m.Workers();
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(workers[0].state, WorkerListing::State::kLost);  // w1
  EXPECT_EQ(workers[1].state, WorkerListing::State::kIdle);  // w2
  absl::SleepFor(absl::Milliseconds(300));
  m.Heartbeat("w2", {});
  m.Tick();
  workers = m.Workers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].info.id, "w2");
  EXPECT_EQ(m.TakeStats().workers_lost, 0);
  EXPECT_TRUE(m.Heartbeat("w1", {}).reregister);  // it comes back: told to register again
}

TEST_F(StoreTest, ALiveJobOwnsItsOutputDirAndAnIdempotencyKeyItsSpec) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, {});
  auto first = m.Submit(Config(), "{\"name\": \"j\"}", "k1");
  ASSERT_THAT(first, IsOk());
  // The same key and spec: the same job (a retried submit).
  auto retry = m.Submit(Config(), "{\"name\": \"j\"}", "k1");
  ASSERT_THAT(retry, IsOk());
  EXPECT_EQ(retry->id, first->id);
  // The same key with another spec is refused, naming the first job.
  common::JobConfig other = Config();
  other.output_dir = "/elsewhere";
  EXPECT_THAT(m.Submit(other, "{\"name\": \"k\"}", "k1"),
              StatusIs(absl::StatusCode::kAlreadyExists, "used by job " + first->id + " with another spec"));
  // Another job on the same directory (spelled otherwise) is refused while the first lives...
  common::JobConfig same = Config();
  same.output_dir = "/./o/";
  EXPECT_THAT(m.Submit(same, "{}", ""),
              StatusIs(absl::StatusCode::kFailedPrecondition, "output_dir: /./o/ is in use by job " + first->id));
  EXPECT_THAT(m.Submit(other, "{}", ""), IsOk());  // another directory is fine
  // ... and accepted once it has ended.
  ASSERT_THAT(m.Cancel(first->id), IsOk());
  EXPECT_THAT(m.Submit(same, "{}", ""), IsOk());
}

// NOTE [output directories]: live jobs' directories do not nest, and another
// owner's results are not written over after their job ends.
TEST_F(StoreTest, OutputDirsOfLiveJobsDoNotNestAndAnotherOwnersResultsStayTheirs) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, {});
  const Submitter alice{"alice", false}, bob{"bob", false}, admin{"ops", true};
  auto at = [](const std::string& dir) {
    common::JobConfig c = Config();
    c.output_dir = dir;
    return c;
  };
  auto a = m.Submit(at("/d/runs/a"), "{}", "", alice);
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(m.Submit(at("/d/runs/a/model"), "{}", "", alice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "output_dir: /d/runs/a/model is inside the output directory of job " + a->id + " (QUEUED)"));
  EXPECT_THAT(m.Submit(at("/d/runs/"), "{}", "", bob),
              StatusIs(absl::StatusCode::kFailedPrecondition, "contains the output directory of job " + a->id));
  EXPECT_THAT(m.Check(at("/d/./runs"), bob), StatusIs(absl::StatusCode::kFailedPrecondition, "contains"))
      << "a sweep's probes see it too";
  auto sibling = m.Submit(at("/d/runs/ab"), "{}", "", bob);  // a common prefix is not nesting
  ASSERT_THAT(sibling, IsOk());
  ASSERT_THAT(m.Cancel(sibling->id), IsOk());
  ASSERT_THAT(m.Cancel(a->id), IsOk());
  // Ended: alice's results are still hers.
  EXPECT_THAT(m.Submit(at("/d/runs/a"), "{}", "", bob),
              StatusIs(absl::StatusCode::kPermissionDenied, "is the output directory of job " + a->id +
                                                                ", another owner's"));
  EXPECT_THAT(m.Submit(at("/d/runs/a/x"), "{}", "", bob), StatusIs(absl::StatusCode::kPermissionDenied, "is inside"));
  EXPECT_THAT(m.Submit(at("/d"), "{}", "", bob), StatusIs(absl::StatusCode::kPermissionDenied, "contains"));
  EXPECT_THAT(m.Submit(at("/d/runs/ab"), "{}", "", bob), IsOk()) << "bob's own ended job's directory";
  EXPECT_THAT(m.Submit(at("/d/runs/a"), "{}", "", alice), IsOk()) << "alice reruns into her own directory";
  auto c = m.Submit(at("/d/runs/c"), "{}", "", bob);
  ASSERT_THAT(c, IsOk());
  ASSERT_THAT(m.Cancel(c->id), IsOk());
  EXPECT_THAT(m.Submit(at("/d/runs/c"), "{}", "", admin), IsOk()) << "an admin may";
}

TEST_F(StoreTest, TheRankThatFailedFirstSpeaksForTheAttemptNotItsPeer) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options());
  auto job = SubmitAndPlace(m, 2, 2);
  ASSERT_THAT(job, IsOk());
  auto h1 = m.Heartbeat("w1", {});
  m.Heartbeat("w2", {});
  const int64_t gen = h1.start[0].generation;
  m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{job->id, gen, 1, true, 0, {}, ""}});
  // Rank 0's report of its collective failing arrives before rank 1's own.
  m.Heartbeat("w1", {{job->id, gen, 0, false, 1, {}, "allreduce failed: Connection reset by peer"}});
  EXPECT_EQ(m.Get(job->id)->state, JobState::kRunning);  // waiting for the cause
  m.Heartbeat("w2", {{job->id, gen, 1, false, 137, {}, "rank 1 made no progress for 4 s"}});
  auto j = m.Get(job->id);
  EXPECT_EQ(j->state, JobState::kRecovering);
  EXPECT_NE(j->message.find("rank 1 exited with code 137 (killed by signal 9): rank 1 made no progress"),
            std::string::npos)
      << j->message;
}

// NOTE [worker identity]: a worker's reports count only for the ranks it was
// given in the current generation. A rogue (registered with its own id, or a
// peer of the job) cannot mark the job SUCCEEDED or FAILED, store metrics for
// it, or fill the coordinator with log lines for jobs that do not exist.
TEST_F(StoreTest, ReportsCountOnlyFromTheWorkerAssignedTheRank) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options());
  auto job = SubmitAndPlace(m, 0, 2);
  ASSERT_THAT(job, IsOk());
  auto h1 = m.Heartbeat("w1", {});
  const int64_t gen = h1.start[0].generation;
  ASSERT_EQ(h1.start[0].rank, 0);
  m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {"w1 says hello"}, ""}});
  m.Heartbeat("w2", {{job->id, gen, 1, true, 0, {}, ""}});
  ASSERT_EQ(m.Get(job->id)->state, JobState::kRunning);
  m.Register({"rogue", "10.0.0.9", 64, 0, 1, {}});
  // "Rank 0 finished", from a worker that does not hold it, and from the peer that holds rank 1.
  auto out = m.Heartbeat("rogue", {{job->id, gen, 0, false, 0, {"forged line"}, ""}});
  m.Heartbeat("w2", {{job->id, gen, 0, false, 65, {}, "forged"}});
  EXPECT_EQ(m.Get(job->id)->state, JobState::kRunning);
  EXPECT_THAT(m.Report("rogue", job->id, gen, 0, Event{}), StatusIs(absl::StatusCode::kPermissionDenied,
                                                                    "worker rogue is not assigned rank 0 of job"));
  Event eval;
  eval.type = EventType::kEvaluation;
  eval.eval.step = 999;
  eval.eval.metrics = {{"accuracy", 1.0}};
  EXPECT_THAT(m.Report("w2", job->id, gen, 0, eval), StatusIs(absl::StatusCode::kPermissionDenied, "not assigned"));
  EXPECT_NE(m.Get(job->id)->last_eval.step, 999);
  for (int i = 0; i < 100; ++i) m.Heartbeat("rogue", {{"j-made-up-" + std::to_string(i), 1, 0, true, 0, {"x"}, ""}});
  auto logs = m.Logs(job->id, 0, 10);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0].line, "w1 says hello");
  // Following: only lines after a seq; seqs grow.
  m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {"second", "third"}, ""}});
  auto after = m.Logs(job->id, -1, 0, logs[0].seq);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].line, "second");
  EXPECT_EQ(after[1].line, "third");
  EXPECT_LT(logs[0].seq, after[0].seq);
  EXPECT_LT(after[0].seq, after[1].seq);
  EXPECT_TRUE(m.Logs(job->id, -1, 0, after[1].seq).empty());
  EXPECT_EQ(m.Logs(job->id, 0, 1).size(), 1u);  // tail still applies
  EXPECT_TRUE(m.Logs("j-made-up-1", 0, 10).empty());
  auto stats = m.TakeStats();
  EXPECT_EQ(stats.refused_reports["not_assigned"], 4);
  EXPECT_EQ(stats.refused_reports["unknown_job"], 100);
  // The real ranks finish the job.
  m.Heartbeat("w1", {{job->id, gen, 0, false, 0, {}, ""}});
  m.Heartbeat("w2", {{job->id, gen, 1, false, 0, {}, ""}});
  EXPECT_EQ(m.Get(job->id)->state, JobState::kSucceeded);
}

// NOTE [worker sessions]: a live worker's id cannot be taken by a second
// registration, and calls must present the registration's session.
TEST_F(StoreTest, ALiveWorkersIdCannotBeTakenAndCallsNeedItsSession) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options(absl::Milliseconds(300)));
  auto s1 = m.RegisterSession({"wS", "10.0.0.1", 4, 0, 1234, {}}, "");
  ASSERT_THAT(s1, IsOk());
  EXPECT_EQ(s1->size(), 32u);
  // Another agent (another host, more CPUs) claiming wS while it is alive.
  EXPECT_THAT(m.RegisterSession({"wS", "10.6.6.6", 64, 0, 1, {}}, "").status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "worker wS is registered and alive"));
  EXPECT_THAT(m.RegisterSession({"wS", "10.6.6.6", 64, 0, 1, {}}, "0123456789abcdef0123456789abcdef").status(),
              StatusIs(absl::StatusCode::kAlreadyExists, "another agent cannot take its id"));
  EXPECT_EQ(m.Workers()[0].info.cpus, 4);
  // Its own agent re-registering with the session keeps it.
  EXPECT_EQ(*m.RegisterSession({"wS", "10.0.0.1", 4, 0, 1234, {}}, *s1), *s1);
  EXPECT_THAT(m.CheckSession("wS", *s1), IsOk());
  EXPECT_THAT(m.CheckSession("wS", ""), StatusIs(absl::StatusCode::kPermissionDenied, "does not match"));
  EXPECT_THAT(m.CheckSession("wS", std::string(32, '0')), StatusIs(absl::StatusCode::kPermissionDenied, "register again"));
  EXPECT_THAT(m.CheckSession("never-registered", ""), IsOk());  // told to register by the heartbeat's reply
  // Silent for the heartbeat timeout, the id may be registered again, with a new session.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  auto s2 = m.RegisterSession({"wS", "10.0.0.2", 4, 0, 1234, {}}, "");
  ASSERT_THAT(s2, IsOk());
  EXPECT_NE(*s2, *s1);
  EXPECT_THAT(m.CheckSession("wS", *s1), StatusIs(absl::StatusCode::kPermissionDenied, ""));
  EXPECT_EQ(m.TakeStats().refused_reports["live_worker_id"], 2);
}

TEST_F(StoreTest, CancellingAScheduledJobIsImmediateAndFencesATrainerThatStarted) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options());
  auto job = SubmitAndPlace(m, 0, 2);
  ASSERT_THAT(job, IsOk());
  ASSERT_EQ(m.Get(job->id)->state, JobState::kScheduled);
  auto h1 = m.Heartbeat("w1", {});  // the assignment reaches w1's agent
  ASSERT_EQ(h1.start.size(), 1u);
  const int64_t gen = h1.start[0].generation;
  auto cancelled = m.Cancel(job->id);
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(m.Get(job->id)->state, JobState::kCancelled);  // it used to wait twice the heartbeat timeout
  // w1 had started the trainer: its report is of a fenced generation, and the reply stops it.
  auto reply = m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {}, ""}});
  ASSERT_EQ(reply.stop.size(), 1u);
  EXPECT_EQ(reply.stop[0].job_id, job->id);
}

// NOTE [unschedulable]: QUEUED -> UNSCHEDULABLE (with the reason) while the
// registered workers cannot hold the job, kept across a coordinator restart,
// QUEUED and placed once they can; cancelling it is immediate.
TEST_F(StoreTest, AJobNoWorkerCanHoldIsUnschedulableUntilOneCan) {
  std::string id, other;
  {
    auto store = JobStore::Open(path_);
    JobManager m(**store, Options());
    auto job = SubmitAndPlace(m, 0, 1);  // 2 ranks, 1 worker
    ASSERT_THAT(job, IsOk());
    id = job->id;
    auto j = m.Get(id);
    EXPECT_EQ(j->state, JobState::kUnschedulable);
    EXPECT_NE(j->message.find("unschedulable: needs 2 ranks"), std::string::npos) << j->message;
    common::JobConfig c = Config();
    c.name = "other";
    c.output_dir = "/o2";
    auto second = m.Submit(c, "{}", "");
    ASSERT_THAT(second, IsOk());
    other = second->id;
    m.Tick();
    EXPECT_EQ(m.Get(other)->state, JobState::kUnschedulable);
  }
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options());
  ASSERT_THAT(m.Recover(), IsOk());
  EXPECT_EQ(m.Get(id)->state, JobState::kUnschedulable);
  auto cancelled = m.Cancel(other);
  ASSERT_THAT(cancelled, IsOk());
  EXPECT_EQ(m.Get(other)->state, JobState::kCancelled);
  for (int i = 1; i <= 2; ++i) m.Register({"w" + std::to_string(i), "127.0.0.1", 1, 0, 1233 + i, {}});
  m.Tick();
  EXPECT_EQ(m.Get(id)->state, JobState::kScheduled) << m.Get(id)->message;
  auto events = m.WaitEvents(id, 0, absl::ZeroDuration());
  bool requeued = false;
  for (const auto& e : *events) requeued |= e.state == JobState::kQueued && e.message.find("can hold it now") != std::string::npos;
  EXPECT_TRUE(requeued);
}

// NOTE [lost assignments]: a job placed just before the coordinator died,
// whose trainers no worker ever reported, is queued again, not failed: with
// max_restarts 0 a sweep trial used to end FAILED "restart budget exhausted".
TEST_F(StoreTest, AnAssignmentLostWithARestartIsQueuedAgainWithoutSpendingARestart) {
  std::string id;
  {
    auto store = JobStore::Open(path_);
    JobManager m(**store, Options(absl::Milliseconds(100)));
    auto job = SubmitAndPlace(m, 0, 2);
    ASSERT_THAT(job, IsOk());
    ASSERT_EQ(m.Get(job->id)->state, JobState::kScheduled);
    id = job->id;
  }  // the coordinator dies before any agent heard of the assignment
  auto store = JobStore::Open(path_);
  ManagerOptions o = Options(absl::Milliseconds(100));
  o.readoption_grace = absl::ZeroDuration();
  JobManager m(**store, o);
  ASSERT_THAT(m.Recover(), IsOk());
  const int64_t gen = m.Get(id)->generation;
  for (int i = 1; i <= 2; ++i) m.Register({"w" + std::to_string(i), "127.0.0.1", 1, 0, 1233 + i, {}});
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  for (int i = 1; i <= 2; ++i) m.Heartbeat("w" + std::to_string(i), {});  // alive, running nothing
  m.Tick();
  auto job = m.Get(id);
  ASSERT_THAT(job, IsOk());
  EXPECT_NE(job->state, JobState::kFailed) << job->message;
  EXPECT_EQ(job->restarts, 0);
  EXPECT_GT(job->generation, gen);
  auto events = m.WaitEvents(id, 0, absl::ZeroDuration());
  bool requeued = false;
  for (const auto& e : *events) requeued |= e.state == JobState::kQueued && e.message.find("assignment was lost") != std::string::npos;
  EXPECT_TRUE(requeued);
  m.Tick();
  EXPECT_EQ(m.Get(id)->state, JobState::kScheduled);  // placed again on the live workers
}

// NOTE [coordinator outages]: agents stop their trainers when the coordinator
// is gone past their lease; that stop is no fault of the job. The agents' word
// counts only for an outage the coordinator knows of.
TEST_F(StoreTest, AStopDuringACoordinatorOutageSpendsNoRestartAndOnlyASeenOutageCounts) {
  const std::string stopped = "no contact with the coordinator for 7 s: stopped (a checkpoint first)";
  std::string id;
  int64_t gen = 0;
  {
    auto store = JobStore::Open(path_);
    JobManager m(**store, Options());
    auto job = SubmitAndPlace(m, 0, 2);  // max_restarts 0: any charged restart fails it
    ASSERT_THAT(job, IsOk());
    id = job->id;
    gen = m.Get(id)->generation;
    m.Heartbeat("w1", {{id, gen, 0, true, 0, {}, ""}});
    m.Heartbeat("w2", {{id, gen, 1, true, 0, {}, ""}});
    ASSERT_EQ(m.Get(id)->state, JobState::kRunning);
  }  // the coordinator goes down; the agents' leases run out and they stop the ranks (143)
  auto store = JobStore::Open(path_);
  ManagerOptions o = Options(absl::Milliseconds(400));
  JobManager m(**store, o);
  ASSERT_THAT(m.Recover(), IsOk());
  for (int i = 1; i <= 2; ++i) m.Register({"w" + std::to_string(i), "127.0.0.1", 1, 0, 1233 + i, {}});
  m.Heartbeat("w2", {{id, gen, 1, false, 143, {}, stopped, true}});
  auto job = m.Get(id);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kRecovering) << job->message;
  EXPECT_EQ(job->restarts, 0);
  EXPECT_GT(job->generation, gen);
  EXPECT_NE(job->message.find("rank 1 was stopped by its agent while the coordinator was unreachable"),
            std::string::npos) << job->message;
  EXPECT_NE(job->message.find("without spending a restart (0 of 0 used)"), std::string::npos) << job->message;
  m.Heartbeat("w1", {{id, gen, 0, false, 143, {}, stopped, true}});  // the old generation: fenced, changes nothing
  m.Tick();
  job = m.Get(id);
  ASSERT_EQ(job->state, JobState::kScheduled) << job->message;  // placed again at once, no backoff
  EXPECT_EQ(job->restarts, 0);

  // A silence of the worker that the coordinator saw too (over half the
  // heartbeat timeout, short of losing it) counts as well: a network cut.
  gen = job->generation;
  m.Heartbeat("w1", {{id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{id, gen, 1, true, 0, {}, ""}});
  absl::SleepFor(absl::Milliseconds(300));
  m.Heartbeat("w1", {{id, gen, 0, false, 143, {}, stopped, true}});
  job = m.Get(id);
  EXPECT_EQ(job->state, JobState::kRecovering) << job->message;
  EXPECT_EQ(job->restarts, 0);
  m.Heartbeat("w2", {});  // w2's silence ends before the next attempt starts
  m.Tick();
  job = m.Get(id);
  ASSERT_EQ(job->state, JobState::kScheduled) << job->message;

  // A worker that was heard from all along this attempt cannot claim an
  // outage: its stop is an ordinary failure, here the end of a job with no
  // restarts left.
  gen = job->generation;
  m.Heartbeat("w1", {{id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{id, gen, 1, false, 143, {}, stopped, true}});
  job = m.Get(id);
  EXPECT_EQ(job->state, JobState::kFailed) << job->message;
  EXPECT_NE(job->message.find("restart budget exhausted (0 of 0 restarts used)"), std::string::npos) << job->message;
  const JobManager::ClusterStats stats = m.TakeStats();
  EXPECT_EQ(stats.outage_resumes, 2);
  EXPECT_EQ(stats.refused_reports.at("unseen_outage"), 1);
  auto events = m.WaitEvents(id, 0, absl::ZeroDuration());
  ASSERT_THAT(events, IsOk());
  int resumed = 0;
  for (const auto& e : *events) resumed += e.message.find("without spending a restart") != std::string::npos;
  EXPECT_EQ(resumed, 2);
}

// The ranks stop together: the agent whose lease ran out first stops its
// rank, and that rank's peers stop with it (143, nothing said) before their
// own agents' leases run out. Their reports may reach the restarted
// coordinator first; they are echoes, not the attempt's reason.
TEST_F(StoreTest, APeerStoppedWithTheRankItsAgentStoppedWaitsForThatRanksReport) {
  const std::string stopped = "no contact with the coordinator for 7 s: stopped (a checkpoint first)";
  std::string id;
  int64_t gen = 0;
  {
    auto store = JobStore::Open(path_);
    JobManager m(**store, Options());
    auto job = SubmitAndPlace(m, 0, 2);
    ASSERT_THAT(job, IsOk());
    id = job->id;
    gen = m.Get(id)->generation;
    m.Heartbeat("w1", {{id, gen, 0, true, 0, {}, ""}});
    m.Heartbeat("w2", {{id, gen, 1, true, 0, {}, ""}});
  }
  auto store = JobStore::Open(path_);
  ManagerOptions o = Options();
  o.readoption_grace = absl::Milliseconds(200);
  o.root_cause_grace = absl::Milliseconds(300);
  JobManager m(**store, o);
  ASSERT_THAT(m.Recover(), IsOk());
  for (int i = 1; i <= 2; ++i) m.Register({"w" + std::to_string(i), "127.0.0.1", 1, 0, 1233 + i, {}});
  m.Heartbeat("w1", {{id, gen, 0, false, 143, {}, ""}});  // stopped with its peer; its own lease had not run out
  m.Tick();
  EXPECT_EQ(m.Get(id)->state, JobState::kRunning) << m.Get(id)->message;
  m.Heartbeat("w2", {{id, gen, 1, false, 143, {}, stopped, true}});
  auto job = m.Get(id);
  EXPECT_EQ(job->state, JobState::kRecovering) << job->message;
  EXPECT_EQ(job->restarts, 0);
  EXPECT_NE(job->message.find("rank 1 was stopped by its agent while the coordinator was unreachable"),
            std::string::npos) << job->message;

  // An unexplained stop whose peer never says why still ends the attempt,
  // once the grace is over: here the job, which has no restarts left.
  m.Tick();
  gen = m.Get(id)->generation;
  ASSERT_EQ(m.Get(id)->state, JobState::kScheduled);
  m.Heartbeat("w1", {{id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{id, gen, 1, true, 0, {}, ""}});
  m.Heartbeat("w1", {{id, gen, 0, false, 143, {}, ""}});
  EXPECT_EQ(m.Get(id)->state, JobState::kRunning);
  absl::SleepFor(absl::Milliseconds(400));
  m.Heartbeat("w2", {{id, gen, 1, true, 0, {}, ""}});
  job = m.Get(id);
  EXPECT_EQ(job->state, JobState::kFailed) << job->message;
  EXPECT_NE(job->message.find("rank 0 exited with code 143 (stopped by SIGTERM)"), std::string::npos) << job->message;
}

TEST_F(StoreTest, OneFaultCostsOneRestartTheNextAttemptAvoidsASuspectWorker) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options(absl::Seconds(1)));
  auto job = SubmitAndPlace(m, 3, 3);
  ASSERT_THAT(job, IsOk());
  const auto first = m.Get(job->id)->workers;
  ASSERT_EQ(first.size(), 2u);
  const std::string healthy = first[0], dead = first[1];
  const int64_t gen = m.Get(job->id)->generation;
  m.Heartbeat(healthy, {{job->id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat(dead, {{job->id, gen, 1, true, 0, {}, ""}});
  // `dead` stops heartbeating; the others go on. After 600 ms it is suspect, not yet lost.
  for (int i = 0; i < 6; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    for (const char* w : {"w1", "w2", "w3"}) {
      if (w != dead) m.Heartbeat(w, {});
    }
  }
  // Its peer's trainer fails (its collective broke): one restart.
  m.Heartbeat(healthy, {{job->id, gen, 0, false, 137, {}, ""}});
  ASSERT_EQ(m.Get(job->id)->state, JobState::kRecovering);
  absl::SleepFor(absl::Milliseconds(5));
  m.Tick();
  auto placed = m.Get(job->id);
  ASSERT_EQ(placed->state, JobState::kScheduled);
  EXPECT_EQ(std::count(placed->workers.begin(), placed->workers.end(), dead), 0) << dead;
  // When `dead` is declared lost, the new attempt is not on it: still one restart.
  for (int i = 0; i < 6; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    for (const char* w : {"w1", "w2", "w3"}) {
      if (w != dead) m.Heartbeat(w, {});
    }
  }
  m.Tick();
  EXPECT_EQ(m.Get(job->id)->state, JobState::kScheduled);
  EXPECT_EQ(m.Get(job->id)->restarts, 1);
}

TEST_F(StoreTest, LifecycleWithFakeAgents) {
  auto store = JobStore::Open(path_);
  JobManager m(**store, Options(absl::Milliseconds(300)));
  auto job = SubmitAndPlace(m, 1, 2);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(m.Get(job->id)->state, JobState::kScheduled);
  auto h1 = m.Heartbeat("w1", {});
  auto h2 = m.Heartbeat("w2", {});
  ASSERT_EQ(h1.start.size() + h2.start.size(), 2u);
  const int64_t gen = h1.start[0].generation;
  EXPECT_EQ(h1.start[0].rendezvous, "127.0.0.1:1234");
  // NOTE [rendezvous secret]: the generation's ranks share one, fresh and well formed.
  const std::string secret = h1.start[0].rendezvous_secret;
  EXPECT_TRUE(common::IsWellFormedSecret(secret)) << secret;
  EXPECT_EQ((h2.start.empty() ? h1.start[1] : h2.start[0]).rendezvous_secret, secret);
  m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{job->id, gen, 1, true, 0, {}, ""}});
  EXPECT_EQ(m.Get(job->id)->state, JobState::kRunning);
  // Rank 1 crashes: fenced, RECOVERING, relaunched with a new generation.
  m.Heartbeat("w2", {{job->id, gen, 1, false, 137, {}, ""}});
  EXPECT_EQ(m.Get(job->id)->state, JobState::kRecovering);
  EXPECT_THAT(m.Report("w1", job->id, gen, 0, Event{}), StatusIs(absl::StatusCode::kFailedPrecondition, "fenced"));
  auto stop = m.Heartbeat("w1", {{job->id, gen, 0, true, 0, {}, ""}});
  ASSERT_EQ(stop.stop.size(), 1u);
  m.Heartbeat("w1", {{job->id, gen, 0, false, 143, {}, ""}});
  absl::SleepFor(absl::Milliseconds(5));
  m.Tick();
  EXPECT_EQ(m.Get(job->id)->state, JobState::kScheduled);
  auto r1 = m.Heartbeat("w1", {});
  auto r2 = m.Heartbeat("w2", {});
  const int64_t gen2 = (r1.start.empty() ? r2.start : r1.start)[0].generation;
  EXPECT_GT(gen2, gen);
  EXPECT_NE((r1.start.empty() ? r2.start : r1.start)[0].rendezvous_secret, secret)
      << "a new generation's ranks cannot join the old one's store";
  // A worker goes silent: lost, and with the budget spent the job fails with the reason.
  m.Heartbeat("w1", {{job->id, gen2, 0, true, 0, {}, ""}});
  m.Heartbeat("w2", {{job->id, gen2, 1, true, 0, {}, ""}});
  absl::SleepFor(absl::Milliseconds(400));
  m.Heartbeat("w1", {{job->id, gen2, 0, true, 0, {}, ""}});
  m.Tick();
  auto failed = m.Get(job->id);
  EXPECT_EQ(failed->state, JobState::kFailed);
  EXPECT_NE(failed->message.find("restart budget exhausted"), std::string::npos) << failed->message;
  EXPECT_NE(failed->message.find("worker w2 lost"), std::string::npos) << failed->message;
  EXPECT_THAT(m.Cancel(job->id), StatusIs(absl::StatusCode::kFailedPrecondition, "already FAILED"));
  EXPECT_THAT(m.Cancel("nope"), StatusIs(absl::StatusCode::kNotFound, "nope"));
}

TEST_F(StoreTest, PathsMustStayInsideTheDataRoot) {
  auto store = JobStore::Open(path_);
  fs::path root = fs::temp_directory_path() / ("attune_root_" + std::to_string(::getpid()));
  fs::create_directories(root / "data");
  fs::create_directories(root / "model");
  std::ofstream(root / "data" / "t.csv") << "text,label\na,b\n";
  std::ofstream(root / "data" / "v.csv") << "\xEF\xBB\xBF\"text\",label\r\na,b\n";
  std::ofstream(root / "model" / "config.json") << "{}";
  fs::remove(root / "data" / "escape");
  fs::create_directory_symlink("/etc", root / "data" / "escape");
  ManagerOptions o;
  o.data_root = root.string();
  JobManager m(**store, o);
  common::JobConfig c = Config();
  c.train_path = (root / "data" / "t.csv").string();
  c.validation_path = (root / "data" / "v.csv").string();
  c.output_dir = (root / "out").string();
  c.model_path = (root / "model").string();
  EXPECT_THAT(m.Submit(c, "{}", ""), IsOk());
  // What the trainer would find only after queueing and scheduling is refused at submit.
  common::JobConfig typo = c;
  typo.output_dir = (root / "out2").string();
  typo.train_path = (root / "data" / "trian.csv").string();
  typo.label_column = "stars";
  typo.model_path = (root / "data").string();
  auto refused = m.Submit(typo, "{}", "");
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument, "data.train: " + typo.train_path + " does not exist"));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument,
                                "data.validation: " + typo.validation_path + " has no column named 'stars' (columns: text, label)"));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument, "model.path: " + typo.model_path + " holds no config.json"));
  c.train_path = (root / "data" / "escape" / "passwd").string();
  EXPECT_THAT(m.Submit(c, "{}", ""), StatusIs(absl::StatusCode::kInvalidArgument, "data.train"));
  c.train_path = (root / "data" / ".." / ".." / "x.csv").string();
  EXPECT_THAT(m.Submit(c, "{}", ""), StatusIs(absl::StatusCode::kInvalidArgument, "'..' is not allowed"));
  c.train_path = "/etc/passwd";
  EXPECT_THAT(m.Submit(c, "{}", ""), StatusIs(absl::StatusCode::kInvalidArgument, "outside the data root"));
  fs::remove_all(root);
}

}  // namespace
}  // namespace attune::coordinator
