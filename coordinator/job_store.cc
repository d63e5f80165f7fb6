#include "coordinator/job_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <glog/logging.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "coordinator/job_row.h"

namespace attune::coordinator {
namespace {

// RAII prepared statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  sqlite3_stmt* get() { return s_; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(s_, i);
    return *this;
  }
  std::string Text(int i) {
    const unsigned char* t = sqlite3_column_text(s_, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  int64_t Int(int i) { return sqlite3_column_int64(s_, i); }

 private:
  sqlite3_stmt* s_ = nullptr;
};

absl::Status SqlError(sqlite3* db, const std::string& what) {
  int code = sqlite3_errcode(db);
  std::string msg = absl::StrCat("state store: ", what, ": ", sqlite3_errmsg(db));
  if (code == SQLITE_FULL || code == SQLITE_IOERR) return absl::ResourceExhaustedError(msg);
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) return absl::DataLossError(msg);
  return absl::UnavailableError(msg);
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  std::string lock_path = path + ".lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot open ", lock_path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("another coordinator holds the state file ", path, " (lock ", lock_path, ")"));
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot open state file ", path, ": ", msg));
  }
  std::unique_ptr<JobStore> store(new JobStore(db, fd, path));
  // A corrupt or foreign file fails here and is left untouched.
  {
    Stmt check(db, "PRAGMA quick_check");
    if (!check.get() || sqlite3_step(check.get()) != SQLITE_ROW || check.Text(0) != "ok") {
      return absl::DataLossError(absl::StrCat("state file ", path, " is corrupt or not an Attune database: ",
                                              sqlite3_errmsg(db), "; refusing to start (it is left untouched)"));
    }
  }
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000",
                          "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
                          "idem TEXT UNIQUE, state INTEGER NOT NULL, body TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, idx INTEGER NOT NULL, "
                          "body TEXT NOT NULL, PRIMARY KEY (job_id, idx))",
                          "CREATE TABLE IF NOT EXISTS sweeps (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
                          "body TEXT NOT NULL)",
}) {
    if (auto s = store->Exec(sql); !s.ok()) return s;
  }
  return store;
}

JobStore::~JobStore() {
  sqlite3_close(db_);
  ::close(lock_fd_);
}

absl::Status JobStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    return SqlError(db_, absl::StrCat(sql.substr(0, 40), ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<Job> JobStore::Create(Job job, std::vector<Event> events, const std::string& id_suffix,
                                     bool* created) {
  std::lock_guard<std::mutex> l(mu_);
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto fail = [&](absl::Status s) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  };
  if (!job.idempotency_key.empty()) {
    Stmt q(db_, "SELECT id, seq, idem, state, body FROM jobs WHERE idem = ?");
    q.Bind(1, job.idempotency_key);
    if (sqlite3_step(q.get()) == SQLITE_ROW) {
      auto existing = JobFrom(q.Text(0), q.Int(1), q.Text(2), q.Int(3), q.Text(4));
      Exec("ROLLBACK").IgnoreError();
      *created = false;
      return existing;
    }
  }
  {
    Stmt q(db_, "SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs");
    job.seq = sqlite3_step(q.get()) == SQLITE_ROW ? q.Int(0) : 1;
  }
  job.id = absl::StrCat("j-", std::string(6 - std::min<size_t>(6, std::to_string(job.seq).size()), '0'), job.seq, "-",
                        id_suffix);
  Stmt ins(db_, "INSERT INTO jobs (id, seq, idem, state, body) VALUES (?, ?, ?, ?, ?)");
  ins.Bind(1, job.id).Bind(2, job.seq);
  if (job.idempotency_key.empty()) {
    ins.BindNull(3);
  } else {
    ins.Bind(3, job.idempotency_key);
  }
  ins.Bind(4, static_cast<int64_t>(job.state)).Bind(5, JobBody(job));
  if (sqlite3_step(ins.get()) != SQLITE_DONE) return fail(SqlError(db_, "insert job"));
  for (size_t i = 0; i < events.size(); ++i) {
    Stmt ev(db_, "INSERT INTO events (job_id, idx, body) VALUES (?, ?, ?)");
    ev.Bind(1, job.id).Bind(2, static_cast<int64_t>(i)).Bind(3, EventBody(events[i]));
    if (sqlite3_step(ev.get()) != SQLITE_DONE) return fail(SqlError(db_, "insert event"));
  }
  if (auto s = Exec("COMMIT"); !s.ok()) return fail(s);
  *created = true;
  return job;
}

absl::Status JobStore::UpdateLocked(const Job& job) {
  Stmt u(db_, "UPDATE jobs SET state = ?, body = ? WHERE id = ?");
  u.Bind(1, static_cast<int64_t>(job.state)).Bind(2, JobBody(job)).Bind(3, job.id);
  if (sqlite3_step(u.get()) != SQLITE_DONE) return SqlError(db_, "update job");
  return absl::OkStatus();
}

absl::Status JobStore::Update(const Job& job) {
  std::lock_guard<std::mutex> l(mu_);
  return UpdateLocked(job);
}

absl::StatusOr<Job> JobStore::Get(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt q(db_, "SELECT id, seq, idem, state, body FROM jobs WHERE id = ?");
  q.Bind(1, id);
  if (sqlite3_step(q.get()) != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return JobFrom(q.Text(0), q.Int(1), q.Text(2), q.Int(3), q.Text(4));
}

absl::StatusOr<std::vector<Job>> JobStore::List() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<Job> out;
  Stmt q(db_, "SELECT id, seq, idem, state, body FROM jobs ORDER BY seq");
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    auto job = JobFrom(q.Text(0), q.Int(1), q.Text(2), q.Int(3), q.Text(4));
    if (!job.ok()) {
      return absl::DataLossError(absl::StrCat("state file ", path_, ": jobs row id '", q.Text(0).substr(0, 128),
                                              "': ", job.status().message(),
                                              " (the file is left as it is; repair or remove the row)"));
    }
    out.push_back(std::move(*job));
  }
  return out;
}

absl::StatusOr<Event> JobStore::AppendEvent(const Job& job, Event event, bool sync) {
  std::lock_guard<std::mutex> l(mu_);
  // In WAL mode a NORMAL commit is not fsynced; the next FULL one syncs the WAL
  // with it. Every other write stays FULL: the mode is restored on the way out.
  struct Restore {
    JobStore* store;
    bool active;
    ~Restore() {
      if (active) store->Exec("PRAGMA synchronous=FULL").IgnoreError();
    }
  } restore{this, !sync};
  if (!sync) {
    if (auto s = Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  }
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  Stmt q(db_, "SELECT COALESCE(MAX(idx), -1) + 1 FROM events WHERE job_id = ?");
  q.Bind(1, job.id);
  event.index = sqlite3_step(q.get()) == SQLITE_ROW ? q.Int(0) : 0;
  Stmt ins(db_, "INSERT INTO events (job_id, idx, body) VALUES (?, ?, ?)");
  ins.Bind(1, job.id).Bind(2, event.index).Bind(3, EventBody(event));
  if (sqlite3_step(ins.get()) != SQLITE_DONE) {
    absl::Status s = SqlError(db_, "append event");
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  if (auto s = UpdateLocked(job); !s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  if (auto s = Exec("COMMIT"); !s.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return event;
}

absl::Status JobStore::PutSweep(const std::string& id, int64_t seq, const std::string& body) {
  std::lock_guard<std::mutex> l(mu_);
  Stmt u(db_, "INSERT INTO sweeps (id, seq, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body");
  u.Bind(1, id).Bind(2, seq).Bind(3, body);
  if (sqlite3_step(u.get()) != SQLITE_DONE) return SqlError(db_, "store sweep");
  return absl::OkStatus();
}

std::vector<JobStore::SweepRow> JobStore::Sweeps() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SweepRow> out;
  Stmt q(db_, "SELECT id, seq, body FROM sweeps ORDER BY seq");
  while (sqlite3_step(q.get()) == SQLITE_ROW) out.push_back({q.Text(0), q.Int(1), q.Text(2)});
  return out;
}

int JobStore::SynchronousMode() {
  std::lock_guard<std::mutex> l(mu_);
  Stmt q(db_, "PRAGMA synchronous");
  return sqlite3_step(q.get()) == SQLITE_ROW ? static_cast<int>(q.Int(0)) : -1;
}

std::vector<Event> JobStore::Events(const std::string& job_id, int64_t from_index) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<Event> out;
  Stmt q(db_, "SELECT idx, body FROM events WHERE job_id = ? AND idx >= ? ORDER BY idx");
  q.Bind(1, job_id).Bind(2, from_index);
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    // One unreadable event is skipped (and said), not the job's whole history.
    auto e = EventFrom(q.Int(0), q.Text(1));
    if (e.ok()) {
      out.push_back(std::move(*e));
    } else {
      LOG(WARNING) << "state file " << path_ << ": event " << q.Int(0) << " of job " << job_id
                   << " is unreadable and skipped: " << e.status().message();
    }
  }
  return out;
}

}  // namespace attune::coordinator
