#pragma once

// JobStore: the coordinator's durable state in one SQLite file (WAL,
// synchronous=FULL). Jobs and their events; every write is one transaction,
// so a killed coordinator loses nothing it acknowledged.
// Thread-safe (one connection behind a mutex).

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/types.h"

struct sqlite3;

namespace attune::coordinator {

class JobStore {
 public:
  // Opens or creates `path`. Takes an exclusive lock on `path`.lock, so a
  // second coordinator on the same file fails with kFailedPrecondition. A file
  // that is not a valid database fails with kDataLoss and is never re-initialised.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();

  // Stores a new job and its first events in one transaction (one fsync):
  // assigns `seq` and an id "j-<seq>-<suffix>", unless the idempotency key is
  // already stored, in which case the stored job is returned (`*created` = false).
  absl::StatusOr<Job> Create(Job job, std::vector<Event> events, const std::string& id_suffix, bool* created);
  absl::Status Update(const Job& job);
  absl::StatusOr<Job> Get(const std::string& id);
  // Every stored job; kDataLoss naming the first row that cannot be read
  // (the file is not changed).
  absl::StatusOr<std::vector<Job>> List();
  // Appends an event (its index is assigned) and updates the job in one
  // transaction. `sync`: fsync before returning (synchronous=FULL). Without it
  // (synchronous=NORMAL, for frequent progress and evaluation reports) the
  // commit survives a killed coordinator but may be lost, with the events
  // after it, on a power failure; the next synced commit makes it durable too.
  absl::StatusOr<Event> AppendEvent(const Job& job, Event event, bool sync = true);
  std::vector<Event> Events(const std::string& job_id, int64_t from_index);
  // Sweeps (coordinator/sweep), each one JSON row written whole in one
  // synced transaction.
  absl::Status PutSweep(const std::string& id, int64_t seq, const std::string& body);
  struct SweepRow {
    std::string id;
    int64_t seq = 0;
    std::string body;
  };
  std::vector<SweepRow> Sweeps();
  // PRAGMA synchronous of the connection (2 = FULL), for tests.
  int SynchronousMode();

 private:
  JobStore(sqlite3* db, int lock_fd, std::string path) : db_(db), lock_fd_(lock_fd), path_(std::move(path)) {}
  absl::Status Exec(const std::string& sql);
  absl::Status UpdateLocked(const Job& job);

  std::mutex mu_;
  sqlite3* db_;
  int lock_fd_;
  const std::string path_;
};

}  // namespace attune::coordinator
