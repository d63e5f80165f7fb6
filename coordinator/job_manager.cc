#include "coordinator/job_manager.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <utility>

#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/secret.h"
#include "common/task_catalog.h"
#include "common/status_macros.h"
#include "common/trainer_exit.h"
#include "coordinator/scheduler.h"

namespace attune::coordinator {
namespace {

namespace fs = std::filesystem;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

bool IsLive(JobState s) {
  return s == JobState::kScheduled || s == JobState::kRunning || s == JobState::kCancelling;
}


}  // namespace

JobManager::JobManager(JobStore& store, ManagerOptions options) : store_(store), options_(std::move(options)) {}

absl::Status JobManager::Recover() {
  std::lock_guard<std::mutex> l(mu_);
  started_ = absl::Now();
  auto stored = store_.List();
  if (!stored.ok()) return stored.status();
  for (Job& j : *stored) {
    if (j.state == JobState::kValidating) j.state = JobState::kQueued;  // validated before it was stored
    if (IsLive(j.state)) {
      Live live;
      live.ranks.resize(static_cast<size_t>(j.config.world_size));
      // Agents may take their reconnect backoff (at most 5 s) plus a heartbeat
      // to come back: give re-adoption that much on top of the usual grace.
      live.since = started_ + options_.readoption_grace;
      live.adopted = true;
      live_[j.id] = live;
    }
    jobs_[j.id] = std::move(j);
  }
  LOG(INFO) << "coordinator recovered " << jobs_.size() << " jobs, " << live_.size() << " with live attempts";
  return absl::OkStatus();
}

namespace {

// The column names of a CSV/TSV header line (RFC 4180 quoting, BOM and CR stripped).
std::vector<std::string> HeaderColumns(std::string line, char sep) {
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        out.back() += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == sep) {
      out.emplace_back();
    } else {
      out.back() += ch;
    }
  }
  return out;
}

// The next line of `in`, reading at most `max` bytes of it (a file without
// newlines must not be read whole at submit). False at the end of the file.
bool ReadLineBounded(std::istream& in, size_t max, std::string* line) {
  line->clear();
  char ch;
  bool any = false;
  while (in.get(ch)) {
    any = true;
    if (ch == '\n') return true;
    if (line->size() >= max) return true;  // the rest of a too-long line is not needed
    line->push_back(ch);
  }
  return any;
}

// What is wrong with a data file that the trainer would find only after the
// job was scheduled: a missing file, a missing column.
void CheckDataFile(const char* field, const std::string& path, const std::vector<std::string>& columns,
                   bool plain_text_ok, std::vector<std::string>* bad) {
  std::error_code ec;
  const bool txt = fs::path(path).extension() == ".txt";
  if (plain_text_ok && fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.path().extension() == ".txt" && e.is_regular_file(ec)) return;
    }
    bad->push_back(absl::StrCat(field, ": directory ", path, " holds no .txt files"));
    return;
  }
  if (txt && !plain_text_ok) {
    bad->push_back(absl::StrCat(field, ": ", path, " is plain text, which has no labels; only tasks masked_lm and causal_lm (data.format text) read it"));
    return;
  }
  if (!fs::is_regular_file(path, ec)) {
    bad->push_back(absl::StrCat(field, ": ", path, " does not exist or is not a file"));
    return;
  }
  std::ifstream in(path, std::ios::binary);
  std::string line;
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".csv" || ext == ".tsv") {
    ReadLineBounded(in, 1 << 20, &line);
    const std::vector<std::string> header = HeaderColumns(line, ext == ".tsv" ? '\t' : ',');
    for (const auto& col : columns) {
      const auto n = std::count(header.begin(), header.end(), col);
      if (n == 0) {
        bad->push_back(absl::StrCat(field, ": ", path, " has no column named '", col, "' (columns: ",
                                    absl::StrJoin(header, ", "), ")"));
      } else if (n > 1) {
        bad->push_back(absl::StrCat(field, ": ", path, " has ", n, " columns named '", col, "'"));
      }
    }
  } else if (ext == ".jsonl" || ext == ".json" || ext == ".ndjson") {
    // A key that none of the first 100 records (or first 16 MiB) has is a typo, not a gap.
    std::set<std::string> seen;
    for (int n = 0; n < 100 && in.tellg() < std::streampos(16 << 20) && ReadLineBounded(in, 1 << 20, &line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      ++n;
      for (const auto& col : columns) {
        if (j.contains(col)) seen.insert(col);
      }
    }
    for (const auto& col : columns) {
      if (!seen.count(col)) bad->push_back(absl::StrCat(field, ": no record of the first 100 in ", path, " has '", col, "'"));
    }
  }
}

}  // namespace

std::vector<std::string> JobManager::InputProblems(const common::JobConfig& c) {
  std::vector<std::string> bad;
  // Language models read no labels: text only, plain text allowed. A
  // causal_lm's conversation formats have fixed keys.
  const bool clm = c.task == "causal_lm";
  const bool mlm = c.task == "masked_lm" || (clm && c.data_format == "text");
  std::vector<std::string> columns = {c.text_column};
  if (clm && c.data_format != "text") {
    if (c.data_format == "alpaca") {
      columns = {"instruction", "output"};
    } else if (c.data_format == "prompt_completion") {
      columns = {"prompt", "completion"};
    } else {
      columns = {"messages"};
    }
  } else if (!mlm) {
    columns.push_back(c.label_column);
  }
  if (!c.text_pair_column.empty()) columns.push_back(c.text_pair_column);
  CheckDataFile("data.train", c.train_path, columns, mlm, &bad);
  if (!c.validation_path.empty()) CheckDataFile("data.validation", c.validation_path, columns, mlm, &bad);
  std::error_code ec;
  if (!c.model_path.empty() && !fs::is_regular_file(fs::path(c.model_path) / "config.json", ec)) {
    bad.push_back(absl::StrCat("model.path: ", c.model_path, " holds no config.json"));
  }
  if (!c.tokenizer_path.empty() && !fs::is_regular_file(fs::path(c.tokenizer_path) / "tokenizer.json", ec) &&
      !fs::is_regular_file(fs::path(c.tokenizer_path) / "tokenizer.model", ec)) {
    bad.push_back(absl::StrCat("model.tokenizer: ", c.tokenizer_path, " holds no tokenizer.json or tokenizer.model"));
  }
  if (!c.eval_multiple_choice_path.empty() && !fs::is_regular_file(c.eval_multiple_choice_path, ec)) {
    bad.push_back(absl::StrCat("evaluation.multiple_choice: ", c.eval_multiple_choice_path,
                               " does not exist or is not a file"));
  }
  if (!c.vocab_path.empty() && !fs::is_regular_file(c.vocab_path, ec)) {
    bad.push_back(absl::StrCat("model.vocab: ", c.vocab_path, " does not exist or is not a file"));
  }
  return bad;
}

absl::Status JobManager::CheckPaths(const common::JobConfig& c) {
  std::vector<std::string> bad;
  auto check = [&](const char* field, const std::string& p) {
    if (p.empty()) return;
    if (p.find('\0') != std::string::npos) {
      bad.push_back(absl::StrCat(field, ": contains a NUL byte"));
      return;
    }
    for (const auto& part : fs::path(p)) {
      if (part == "..") {
        bad.push_back(absl::StrCat(field, ": '..' is not allowed"));
        return;
      }
    }
    if (options_.data_root.empty()) return;
    if (!common::ResolvesInside(p, options_.data_root)) {
      bad.push_back(absl::StrCat(field, ": '", p, "' resolves outside the data root ",
                                 common::ResolvePath(options_.data_root)));
    }
  };
  check("model.path", c.model_path);
  check("model.vocab", c.vocab_path);
  check("model.tokenizer", c.tokenizer_path);
  check("evaluation.multiple_choice", c.eval_multiple_choice_path);
  check("data.train", c.train_path);
  check("data.validation", c.validation_path);
  check("output_dir", c.output_dir);
  check("checkpoint.resume_from", c.checkpoint_resume_from);
  // The coordinator sees the data (it has a data root): a typo is refused now,
  // not after the job has waited in the queue and started its ranks.
  if (bad.empty() && !options_.data_root.empty()) {
    for (auto& problem : InputProblems(c)) bad.push_back(std::move(problem));
  }
  if (bad.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(bad, "; "));
}

// NOTE [job chaining]: model.from_job names another job (its id, or a name
// only one job has) at submit; a dependency that has already failed is
// refused then. The dependent job waits QUEUED, its message saying on what,
// until that job SUCCEEDED; then its spec gets model.path = <that job's
// output_dir>/model (a path the data root already confines) and it is
// scheduled as any other. If that job fails or is cancelled, so does this
// one, with the reason. Chains of any length work; a cycle cannot be built,
// since a job can only name one that exists before it.
namespace {
std::string DependencyEnded(const Job& dep) {
  return absl::StrCat("model.from_job: job ", dep.id, " ended ", JobStateName(dep.state),
                      dep.message.empty() ? "" : ": ", dep.message);
}
}  // namespace

absl::StatusOr<std::string> JobManager::ResolveDependencyLocked(const std::string& ref, const Submitter& who) const {
  std::string found;
  if (auto it = jobs_.find(ref); it != jobs_.end()) {
    // Another owner's model is not this submitter's to build on.
    if (!who.Owns(it->second.owner)) {
      return absl::PermissionDeniedError(absl::StrCat("model.from_job: job ", ref, " belongs to another submitter"));
    }
    found = ref;
  } else {
    std::vector<std::string> named;
    for (const auto& [id, j] : jobs_) {
      if (j.config.name == ref && who.Owns(j.owner)) named.push_back(id);
    }
    if (named.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat("model.from_job: name '", ref, "' is shared by jobs ",
                                                     absl::StrJoin(named, ", "), "; give the id"));
    }
    if (named.empty()) return absl::InvalidArgumentError(absl::StrCat("model.from_job: no job '", ref, "'"));
    found = named[0];
  }
  const Job& dep = jobs_.at(found);
  if (dep.state == JobState::kFailed || dep.state == JobState::kCancelled) {
    return absl::FailedPreconditionError(DependencyEnded(dep));
  }
  return found;
}

bool JobManager::DependencyMetLocked(Job& job) {
  auto it = jobs_.find(job.depends_on);
  if (it == jobs_.end()) {  // cannot happen: jobs are never deleted
    SetStateLocked(job, JobState::kFailed, absl::StrCat("model.from_job: job ", job.depends_on, " is gone")).IgnoreError();
    return false;
  }
  const Job& dep = it->second;
  if (dep.state == JobState::kSucceeded) {
    auto spec = nlohmann::json::parse(job.spec_json, nullptr, false);
    if (spec.is_discarded() || !spec.is_object()) {
      SetStateLocked(job, JobState::kFailed, "internal: the stored spec is not JSON").IgnoreError();
      return false;
    }
    const std::string model = (std::filesystem::path(dep.config.output_dir) / "model").string();
    auto& m = spec["model"];
    m.erase("fromJob");
    m.erase("from_job");
    m["path"] = model;
    job.spec_json = spec.dump();
    job.config.model_path = model;
    job.config.model_from_job.clear();
    const std::string from = job.depends_on;
    job.depends_on.clear();
    SetStateLocked(job, job.state, absl::StrCat("model.from_job: job ", from, " succeeded; using ", model)).IgnoreError();
    return true;
  }
  if (IsTerminal(dep.state)) {
    SetStateLocked(job, JobState::kFailed, DependencyEnded(dep)).IgnoreError();
    return false;
  }
  const std::string waiting = absl::StrCat("waiting for job ", dep.id, " (", JobStateName(dep.state),
                                           ") to succeed: model.from_job");
  if (job.message != waiting) SetStateLocked(job, job.state, waiting).IgnoreError();
  return false;
}

absl::StatusOr<Job> JobManager::Submit(const common::JobConfig& config, const std::string& spec_json,
                                       const std::string& key, const Submitter& who) {
  // Keys are per owner; names cannot hold '/', so scoped keys never collide.
  const std::string idempotency_key = key.empty() || who.name.empty() ? key : absl::StrCat(who.name, "/", key);
  if (auto s = common::ValidateJobConfig(config); !s.ok()) return s;
  if (key.size() > kMaxIdempotencyKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("idempotency_key: longer than ", kMaxIdempotencyKeyBytes, " bytes"));
  }
  if (spec_json.size() > kMaxSpecJsonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec: ", spec_json.size(), " bytes as JSON; at most ", kMaxSpecJsonBytes));
  }
  if (auto s = CheckPaths(config); !s.ok()) return s;
  // NOTE [one live job per output_dir]: the checks below (NOTE [output
  // directories]) and the creation are serialised by submit_mu_ (not mu_, which heartbeats need), so two
  // concurrent submits cannot both take a directory.
  std::lock_guard<std::mutex> submit_lock(submit_mu_);
  std::string depends_on;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, other] : jobs_) {
      if (!idempotency_key.empty() && other.idempotency_key == idempotency_key) {
        if (other.spec_json != spec_json) {
          return absl::AlreadyExistsError(absl::StrCat("idempotency key '", key, "' was used by job ", id,
                                                       " with another spec"));
        }
        return other;  // a retry of that submit
      }
    }
    if (auto st = CheckQueueQuotaLocked(who, spec_json.size()); !st.ok()) return st;
    if (!config.model_from_job.empty()) {
      auto dep = ResolveDependencyLocked(config.model_from_job, who);
      if (!dep.ok()) return dep.status();
      depends_on = *dep;
    }
    if (auto st = CheckOutputDirLocked(config, who); !st.ok()) return st;
  }
  // NOTE [commit outside the lock]: the job and its VALIDATING and QUEUED
  // events are committed in one transaction without holding mu_, so that
  // heartbeats are not queued behind the fsync.
  Job job;
  job.idempotency_key = idempotency_key;
  job.owner = who.name;
  job.config = config;
  job.spec_json = spec_json;
  job.depends_on = depends_on;
  job.state = JobState::kQueued;
  job.created_ms = job.updated_ms = NowMs();
  std::vector<Event> events(2);
  events[0].unix_ms = events[1].unix_ms = job.created_ms;
  events[0].state = JobState::kValidating;
  events[0].message = "submitted";
  events[1].index = 1;
  events[1].state = JobState::kQueued;
  events[1].message = "validated";
  thread_local std::mt19937_64 rng(std::random_device{}());
  bool created = false;
  auto stored = store_.Create(job, events, absl::StrFormat("%04x", static_cast<int>(rng() & 0xffff)), &created);
  if (!stored.ok()) return stored.status();
  std::lock_guard<std::mutex> l(mu_);
  if (!created) {
    auto it = jobs_.find(stored->id);
    return it != jobs_.end() ? it->second : *stored;
  }
  jobs_[stored->id] = *stored;
  cv_.notify_all();
  LOG(INFO) << "job=" << stored->id << " submitted: " << config.name << ", " << config.world_size << " ranks";
  return *stored;
}

absl::Status JobManager::CheckQueueQuotaLocked(const Submitter& who, size_t spec_bytes) const {
  size_t queued = 0, bytes = spec_bytes;
  for (const auto& [id, job] : jobs_) {
    if (job.owner != who.name || job.state != JobState::kQueued) continue;
    ++queued;
    bytes += job.spec_json.size();
  }
  const std::string owner = who.name.empty() ? "this coordinator's submitters" : absl::StrCat("'", who.name, "'");
  if (options_.max_queued_jobs_per_owner > 0 && queued >= options_.max_queued_jobs_per_owner) {
    return absl::ResourceExhaustedError(absl::StrCat(owner, " already has ", queued,
                                                     " queued jobs, the limit per submitter "
                                                     "(--max-queued-jobs-per-owner); cancel some or wait for them "
                                                     "to start"));
  }
  if (options_.max_queued_spec_bytes_per_owner > 0 && bytes > options_.max_queued_spec_bytes_per_owner) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the queued specs of ", owner, " would hold ", bytes, " bytes, over the limit per submitter of ",
        options_.max_queued_spec_bytes_per_owner,
        " (--max-queued-spec-mb-per-owner); cancel some or wait for them to start"));
  }
  return absl::OkStatus();
}

// NOTE [output directories]: a live job's output_dir is its own, and so is
// every directory inside it or around it (a job in /d/runs would write
// /d/runs/model over one in /d/runs/model). Another owner's results stay
// theirs after their job ends: only they (or an admin) may write there again.
// Paths compare lexically: below the data root the trainer follows no link
// (NOTE [pinned directories]), so another spelling is not another directory.
absl::Status JobManager::CheckOutputDirLocked(const common::JobConfig& config, const Submitter& who) const {
  auto normal = [](const std::string& path) {
    std::string n = std::filesystem::path(path).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
  };
  const std::string dir = normal(config.output_dir);
  if (dir.empty()) return absl::OkStatus();  // ValidateJobConfig names a missing output_dir
  auto nested = [](const std::string& inner, const std::string& outer) {
    return inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
           (outer.back() == '/' || inner[outer.size()] == '/');
  };
  for (const auto& [id, other] : jobs_) {
    const bool live = !IsTerminal(other.state);
    if (!live && who.Owns(other.owner)) continue;
    const std::string theirs = normal(other.config.output_dir);
    if (theirs.empty()) continue;
    const char* relation = theirs == dir           ? "is"
                           : nested(dir, theirs)   ? "is inside"
                           : nested(theirs, dir)   ? "contains"
                                                   : nullptr;
    if (relation == nullptr) continue;
    if (live) {
      if (theirs == dir) {
        return absl::FailedPreconditionError(absl::StrCat("output_dir: ", config.output_dir, " is in use by job ",
                                                          id, " (", JobStateName(other.state),
                                                          "); a job owns its output directory until it ends"));
      }
      return absl::FailedPreconditionError(absl::StrCat("output_dir: ", config.output_dir, " ", relation,
                                                        " the output directory of job ", id, " (",
                                                        JobStateName(other.state), "), which owns it until it ends"));
    }
    return absl::PermissionDeniedError(absl::StrCat("output_dir: ", config.output_dir, " ", relation,
                                                    " the output directory of job ", id,
                                                    ", another owner's; choose another directory"));
  }
  return absl::OkStatus();
}

absl::Status JobManager::Check(const common::JobConfig& config, const Submitter& who) {
  if (auto s = common::ValidateJobConfig(config); !s.ok()) return s;
  if (auto s = CheckPaths(config); !s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  if (auto s = CheckOutputDirLocked(config, who); !s.ok()) return s;
  if (config.model_from_job.empty()) return absl::OkStatus();
  return ResolveDependencyLocked(config.model_from_job, who).status();
}

absl::StatusOr<Job> JobManager::Get(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return it->second;
}

absl::StatusOr<std::pair<std::vector<Job>, std::string>> JobManager::List(const ListFilter& f) {
  std::lock_guard<std::mutex> l(mu_);
  int64_t after = 0;
  if (!f.page_token.empty() && !absl::SimpleAtoi(f.page_token, &after)) {
    return absl::InvalidArgumentError("page_token: not a token this server issued");
  }
  std::vector<const Job*> all;
  for (const auto& [id, j] : jobs_) all.push_back(&j);
  std::sort(all.begin(), all.end(), [](const Job* a, const Job* b) { return a->seq < b->seq; });
  std::vector<Job> out;
  std::string next;
  const int page = f.page_size > 0 ? std::min(f.page_size, 1000) : 100;
  for (const Job* j : all) {
    if (j->seq <= after) continue;
    if (f.state && j->state != *f.state) continue;
    if (!f.viewer.Owns(j->owner)) continue;
    if (!f.label_key.empty()) {
      auto it = j->config.labels.find(f.label_key);
      if (it == j->config.labels.end() || it->second != f.label_value) continue;
    }
    if (static_cast<int>(out.size()) == page) {
      next = PageTokenAfter(out.back());
      break;
    }
    out.push_back(*j);
  }
  return std::make_pair(out, next);
}

absl::Status JobManager::SetStateLocked(Job& job, JobState s, const std::string& message, EventType type) {
  job.state = s;
  job.message = message;
  job.updated_ms = NowMs();
  Event e;
  e.unix_ms = job.updated_ms;
  e.type = type;
  e.state = s;
  e.message = message;
  e.generation = job.generation;
  auto stored = store_.AppendEvent(job, e);
  cv_.notify_all();
  LOG(INFO) << "job=" << job.id << " " << JobStateName(s) << (message.empty() ? "" : ": ") << message;
  return stored.status();
}

void JobManager::StopRanksLocked(const Job& job, int64_t generation, const std::string& reason) {
  for (const auto& w : job.workers) {
    auto it = workers_.find(w);
    if (it == workers_.end()) continue;
    auto& pend = it->second.pending;
    pend.erase(std::remove_if(pend.begin(), pend.end(), [&](const AssignmentOut& a) { return a.job_id == job.id; }),
               pend.end());
    it->second.stops.push_back({job.id, generation, reason});
  }
}

absl::StatusOr<Job> JobManager::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  Job& j = it->second;
  if (IsTerminal(j.state)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " is already ", JobStateName(j.state)));
  }
  if (j.state == JobState::kCancelling) return j;
  if (IsLive(j.state)) {
    StopRanksLocked(j, j.generation, "cancelled");
    if (auto s = SetStateLocked(j, JobState::kCancelling, "cancel requested"); !s.ok()) return s;
    // No rank reported running (a SCHEDULED job): CANCELLED now. A trainer
    // that started meanwhile reports a generation that is no longer current
    // and is stopped by its agent on that heartbeat's reply.
    CheckJobLocked(j);
  } else {
    live_.erase(j.id);
    if (auto s = SetStateLocked(j, JobState::kCancelled, "cancelled before it ran"); !s.ok()) return s;
  }
  return j;
}

absl::StatusOr<std::vector<JobManager::ArtifactFile>> JobManager::Artifacts(const std::string& id,
                                                                             const std::string& what) {
  std::string output_dir;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
    if (it->second.state != JobState::kSucceeded) {
      return absl::FailedPreconditionError(absl::StrCat("job ", id, " is ", JobStateName(it->second.state),
                                                        "; a job's model and reports are there once it SUCCEEDED"));
    }
    output_dir = it->second.config.output_dir;
  }
  if (what != "model" && what != "reports" && what != "all") {
    return absl::InvalidArgumentError(absl::StrCat("what: '", what, "' is not model, reports or all"));
  }
  // NOTE [artifacts]: every path is resolved now, when it is read, not when
  // the job was submitted: a directory swapped for a symlink since then must
  // not lead out of the job's output_dir or the data root.
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return absl::NotFoundError(absl::StrCat("output_dir ", output_dir, ": not found"));
  if (!options_.data_root.empty() && !common::ResolvesInside(output_dir, options_.data_root)) {
    return absl::PermissionDeniedError(absl::StrCat("output_dir ", output_dir, " resolves outside the data root"));
  }
  std::vector<ArtifactFile> out;
  auto add = [&](const fs::path& p) -> absl::Status {
    const std::string rel = p.lexically_relative(output_dir).string();
    if (fs::is_symlink(fs::symlink_status(p, ec))) {
      return absl::PermissionDeniedError(absl::StrCat(rel, ": a symbolic link; artifacts are regular files only"));
    }
    if (!common::ResolvesInside(p.string(), output_dir)) {
      return absl::PermissionDeniedError(absl::StrCat(rel, ": resolves outside the job's output_dir"));
    }
    const std::string real = common::ResolvePath(p.string());
    if (fs::is_regular_file(fs::symlink_status(real, ec))) out.push_back({rel, real});
    return absl::OkStatus();
  };
  if (what == "model" || what == "all") {
    const fs::path model = fs::path(output_dir) / "model";
    if (fs::is_symlink(fs::symlink_status(model, ec))) {
      return absl::PermissionDeniedError("model: a symbolic link; artifacts are regular files only");
    }
    std::vector<fs::path> files;
    for (auto it = fs::recursive_directory_iterator(model, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      files.push_back(it->path());
    }
    if (ec) return absl::NotFoundError(absl::StrCat("model: ", ec.message()));
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      if (fs::is_directory(fs::symlink_status(f, ec))) continue;
      if (auto s = add(f); !s.ok()) return s;
    }
  }
  if (what == "reports" || what == "all") {
    for (const char* name : {"eval_report.json", "eval_report.html", "data_report.json"}) {
      const fs::path f = fs::path(output_dir) / name;
      if (!fs::exists(fs::symlink_status(f, ec))) continue;
      if (auto s = add(f); !s.ok()) return s;
    }
  }
  return out;
}

absl::StatusOr<std::vector<Event>> JobManager::WaitEvents(const std::string& id, int64_t from, absl::Duration wait) {
  std::unique_lock<std::mutex> l(mu_);
  if (!jobs_.count(id)) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  l.unlock();
  auto events = store_.Events(id, from);
  if (!events.empty() || wait <= absl::ZeroDuration()) return events;
  l.lock();
  cv_.wait_for(l, absl::ToChronoMilliseconds(wait));
  l.unlock();
  return store_.Events(id, from);
}

std::vector<JobManager::LogLine> JobManager::Logs(const std::string& id, int rank, int tail, int64_t after_seq) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<LogLine> out;
  for (const auto& [key, lines] : logs_) {
    if (key.first != id || (rank >= 0 && key.second != rank)) continue;
    size_t start = 0;
    while (start < lines.size() && lines[start].first <= after_seq) ++start;
    if (tail > 0 && lines.size() - start > static_cast<size_t>(tail)) start = lines.size() - static_cast<size_t>(tail);
    for (size_t i = start; i < lines.size(); ++i) out.push_back({key.second, lines[i].first, lines[i].second});
  }
  std::sort(out.begin(), out.end(), [](const LogLine& a, const LogLine& b) { return a.seq < b.seq; });
  return out;
}

void JobManager::Register(const WorkerInfo& w) {
  std::lock_guard<std::mutex> l(mu_);
  RegisterLocked(w);
}

void JobManager::RegisterLocked(const WorkerInfo& w) {
  auto& ws = workers_[w.id];
  bool known = !ws.info.id.empty();
  ws.info = w;
  ws.last_seen = absl::Now();
  ws.alive = true;
  LOG(INFO) << "worker " << w.id << (known ? " re-registered" : " registered") << ": " << w.cpus << " cpus, "
            << w.gpus << " gpus, host " << w.host;
}

absl::StatusOr<std::string> JobManager::RegisterSession(const WorkerInfo& w, const std::string& session) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = workers_.find(w.id);
  const bool same = it != workers_.end() && !it->second.session.empty() &&
                    common::SameSecret(session, it->second.session);
  if (it != workers_.end() && it->second.alive && absl::Now() - it->second.last_seen < options_.heartbeat_timeout &&
      !same) {
    ++refused_reports_["live_worker_id"];
    return absl::AlreadyExistsError(absl::StrCat(
        "worker ", w.id, " is registered and alive (heard from ",
        absl::FormatDuration(absl::Trunc(absl::Now() - it->second.last_seen, absl::Milliseconds(1))),
        " ago): another agent cannot take its id; retry once it has been silent for the heartbeat timeout"));
  }
  if (it == workers_.end() && workers_.size() >= options_.max_workers) {
    ++refused_reports_["too_many_workers"];
    return absl::ResourceExhaustedError(absl::StrCat("the coordinator holds ", workers_.size(),
                                                     " workers, its limit (--max-workers); a new id is refused"));
  }
  RegisterLocked(w);
  WorkerState& ws = workers_[w.id];
  if (!same) {
    ws.session = common::NewSecret();
  }
  return ws.session;
}

void JobManager::CountRefused(const std::string& reason) {
  std::lock_guard<std::mutex> l(mu_);
  ++refused_reports_[reason];
}

absl::Status JobManager::CheckSession(const std::string& worker_id, const std::string& session) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return absl::OkStatus();
  if (!it->second.session.empty() && common::SameSecret(session, it->second.session)) return absl::OkStatus();
  ++refused_reports_["bad_session"];
  return absl::PermissionDeniedError(
      absl::StrCat("worker ", worker_id, ": the session does not match its registration; register again"));
}

void JobManager::FenceAttemptLocked(Job& job, const std::string& reason) {
  const int64_t old = job.generation;
  ++job.generation;  // fence: reports and tasks of `old` are refused from now on
  StopRanksLocked(job, old, reason);
  live_.erase(job.id);
}

void JobManager::ResumeAfterOutageLocked(Job& job, const std::string& reason) {
  FenceAttemptLocked(job, reason);
  job.not_before_ms = 0;
  ++outage_resumes_;
  SetStateLocked(job, JobState::kRecovering,
                 absl::StrCat(reason, "; resuming from the last checkpoint without spending a restart (", job.restarts,
                              " of ", job.config.max_restarts, " used)"))
      .IgnoreError();
}

void JobManager::FailAttemptLocked(Job& job, const std::string& reason, bool permanent, EventType type) {
  FenceAttemptLocked(job, reason);
  if (job.state == JobState::kCancelling) {
    SetStateLocked(job, JobState::kCancelled, "cancelled").IgnoreError();
    return;
  }
  if (permanent) {
    SetStateLocked(job, JobState::kFailed, reason, type).IgnoreError();
    return;
  }
  if (job.restarts >= job.config.max_restarts) {
    SetStateLocked(job, JobState::kFailed,
                   absl::StrCat("restart budget exhausted (", job.restarts, " of ", job.config.max_restarts,
                                " restarts used): ", reason),
                   type)
        .IgnoreError();
    return;
  }
  ++job.restarts;
  absl::Duration backoff = options_.restart_backoff;
  for (int64_t i = 1; i < job.restarts; ++i) backoff = std::min(backoff * 2, options_.max_restart_backoff);
  job.not_before_ms = NowMs() + absl::ToInt64Milliseconds(backoff);
  SetStateLocked(job, JobState::kRecovering,
                 absl::StrCat(reason, "; restart ", job.restarts, " of ", job.config.max_restarts, " in ",
                              absl::FormatDuration(backoff), " from the last checkpoint"),
                 type)
      .IgnoreError();
}

HeartbeatOut JobManager::Heartbeat(const std::string& worker_id, const std::vector<TaskReport>& tasks) {
  std::lock_guard<std::mutex> l(mu_);
  HeartbeatOut out;
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end()) {
    out.reregister = true;
    return out;
  }
  WorkerState& w = wit->second;
  const absl::Time now = absl::Now();
  // NOTE [coordinator outages]: a silence of this worker that this
  // coordinator saw too (more than half the heartbeat timeout).
  if (now - w.last_seen > options_.heartbeat_timeout / 2) w.outage_ended = now;
  w.last_seen = now;
  w.alive = true;
  for (const TaskReport& t : tasks) {
    auto jit = jobs_.find(t.job_id);
    if (jit == jobs_.end()) {
      if (t.running) out.stop.push_back({t.job_id, t.generation, "unknown job"});
      ++refused_reports_["unknown_job"];
      continue;
    }
    Job& job = jit->second;
    if (t.generation != job.generation || !IsLive(job.state)) {
      if (t.running) out.stop.push_back({t.job_id, t.generation, "fenced: generation is no longer current"});
      continue;
    }
    auto lit = live_.find(job.id);
    if (lit == live_.end() || t.rank < 0 || t.rank >= static_cast<int>(lit->second.ranks.size())) continue;
    // NOTE [worker identity]: a report counts only for a rank the coordinator
    // gave this worker in this generation. A rank with no recorded worker
    // (after a coordinator restart) is re-adopted by the first that reports it.
    if (job.workers.size() > static_cast<size_t>(t.rank) && job.workers[static_cast<size_t>(t.rank)].empty()) {
      job.workers[static_cast<size_t>(t.rank)] = worker_id;
    }
    if (!AssignedLocked(job, worker_id, t.rank)) {
      LOG_EVERY_N(WARNING, 100) << "worker " << worker_id << " reported rank " << t.rank << " of job " << job.id
                                << ", which is not assigned to it: ignored";
      ++refused_reports_["not_assigned"];
      if (t.running) out.stop.push_back({t.job_id, t.generation, "rank not assigned to this worker"});
      continue;
    }
    for (const auto& line : t.log_lines) {
      auto& buf = logs_[{t.job_id, t.rank}];
      int64_t& seq = log_seq_[t.job_id];
      seq = std::max(seq + 1, NowMs() * 1000);  // NOTE: grows across coordinator restarts
      buf.emplace_back(seq, line);
      while (buf.size() > options_.log_lines_per_rank) buf.pop_front();
    }
    RankState& rs = lit->second.ranks[static_cast<size_t>(t.rank)];
    rs.reported = true;
    rs.running = t.running;
    if (!t.running && !rs.exited) {
      rs.exited = true;
      rs.exit_code = t.exit_code;
      rs.error = common::SanitizeTrainerMessage(t.error);
      // NOTE [coordinator outages]: the agent's word that the coordinator was
      // unreachable counts only for an outage the coordinator knows of: the
      // attempt was placed by an earlier coordinator process, or a silence of
      // this worker ended while the attempt ran.
      rs.stopped_unreachable = t.stopped_unreachable && t.exit_code != 0 &&
                               (lit->second.adopted || w.outage_ended >= lit->second.since);
      if (t.stopped_unreachable && !rs.stopped_unreachable) ++refused_reports_["unseen_outage"];
    }
    CheckJobLocked(job);
  }
  out.start = std::move(w.pending);
  w.pending.clear();
  for (auto& s : w.stops) out.stop.push_back(std::move(s));
  w.stops.clear();
  std::set<std::pair<std::string, int64_t>> seen;
  out.stop.erase(std::remove_if(out.stop.begin(), out.stop.end(),
                                [&](const StopOut& s) { return !seen.insert({s.job_id, s.generation}).second; }),
                 out.stop.end());
  return out;
}

bool JobManager::AssignedLocked(const Job& job, const std::string& worker_id, int rank) const {
  return rank >= 0 && static_cast<size_t>(rank) < job.workers.size() &&
         job.workers[static_cast<size_t>(rank)] == worker_id;
}

void JobManager::CheckJobLocked(Job& job) {
  auto lit = live_.find(job.id);
  if (lit == live_.end()) return;
  auto& ranks = lit->second.ranks;
  if (job.state == JobState::kCancelling) {
    bool any_running = false;
    for (const auto& r : ranks) any_running |= r.running;
    if (!any_running) {
      live_.erase(lit);
      ++job.generation;
      SetStateLocked(job, JobState::kCancelled, "cancelled").IgnoreError();
    }
    return;
  }
  // NOTE [coordinator outages]: ranks that their agents stopped because this
  // coordinator (or the network to it) was down past the agents' lease did
  // not fail: the job resumes from its last checkpoint without spending a
  // restart, and its events say why. A rank that failed for good (invalid
  // input, an internal error) still fails the job.
  const RankState* stopped = nullptr;
  size_t stopped_rank = 0;
  bool permanent_failure = false;
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!ranks[r].exited) continue;
    permanent_failure |= common::IsPermanentExit(ranks[r].exit_code);
    if (ranks[r].stopped_unreachable && stopped == nullptr) {
      stopped = &ranks[r];
      stopped_rank = r;
    }
  }
  if (stopped != nullptr && !permanent_failure) {
    ResumeAfterOutageLocked(job, absl::StrCat("rank ", stopped_rank, " was stopped by its agent while the coordinator "
                                              "was unreachable (", stopped->error, ")"));
    return;
  }
  // NOTE [the failing rank speaks]: when one rank fails, its peers fail too,
  // in their collectives (exit 1, "connection reset by peer"), and their
  // reports may arrive first. The attempt's reason is the most telling one:
  // a non-transient exit (a signal, the watchdog, bad input) over a transient
  // one, one with the trainer's own words over one without. While the only
  // failures are transient and other ranks still run, the coordinator waits
  // up to options_.root_cause_grace (Tick re-checks) for the rank that caused them.
  // A rank stopped by a SIGTERM that nobody explains (143, no reason from its
  // agent) is such an echo too: the ranks agree to stop together, so one
  // agent's stop (its lease, say) ends its peers' trainers as well, and their
  // agents may report first. An attempt adopted after a restart waits at
  // least until its re-adoption deadline, by which every agent has had time
  // to report.
  auto is_echo = [](const RankState& r) {
    return r.exit_code == common::kExitTransient ||
           (r.exit_code == common::kExitStopped && r.error.empty() && !r.stopped_unreachable);
  };
  auto rank_of = [&](const RankState& r) { return (is_echo(r) ? 0 : 2) + (r.error.empty() ? 0 : 1); };
  const RankState* failed = nullptr;
  size_t failed_rank = 0;
  bool others_running = false;
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!ranks[r].exited) others_running |= ranks[r].running || !ranks[r].reported;
    if (!ranks[r].exited || ranks[r].exit_code == 0) continue;
    if (failed == nullptr || rank_of(ranks[r]) > rank_of(*failed)) {
      failed = &ranks[r];
      failed_rank = r;
    }
  }
  if (failed != nullptr && is_echo(*failed) && others_running) {
    const absl::Time now = absl::Now();
    if (lit->second.first_failure == absl::InfiniteFuture()) lit->second.first_failure = now;
    const absl::Time until = std::max(lit->second.first_failure + options_.root_cause_grace,
                                      lit->second.adopted ? lit->second.since : absl::InfinitePast());
    if (now < until) return;
  }
  if (failed != nullptr) {
    const int code = failed->exit_code;
    const bool permanent = common::IsPermanentExit(code);
    FailAttemptLocked(job,
                      absl::StrCat("rank ", failed_rank, " exited with code ", code, " (",
                                   common::ExitCodeMeaning(code), permanent ? "; not retried" : "", ")",
                                   failed->error.empty() ? "" : ": ", failed->error),
                      permanent, EventType::kStateChanged);
    return;
  }
  bool all_running = true, all_done = true;
  for (const auto& r : ranks) {
    all_running &= r.reported && (r.running || r.exited);
    all_done &= r.exited && r.exit_code == 0;
  }
  if (all_done) {
    live_.erase(lit);
    SetStateLocked(job, JobState::kSucceeded, "all ranks finished").IgnoreError();
    return;
  }
  if (job.state == JobState::kScheduled && all_running) {
    SetStateLocked(job, JobState::kRunning, absl::StrCat("generation ", job.generation, " running")).IgnoreError();
  }
}

absl::Status JobManager::Report(const std::string& worker_id, const std::string& job_id, int64_t generation, int rank,
                                Event event) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  Job& job = it->second;
  if (generation != job.generation || !IsLive(job.state)) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, ": generation ", generation,
                                                      " is fenced (current ", job.generation, ")"));
  }
  if (!AssignedLocked(job, worker_id, rank)) {  // NOTE [worker identity]
    ++refused_reports_["not_assigned"];
    return absl::PermissionDeniedError(absl::StrCat("worker ", worker_id, " is not assigned rank ", rank, " of job ",
                                                    job_id, " (generation ", generation, ")"));
  }
  if (rank != 0) return absl::OkStatus();  // rank 0 speaks for the job
  if (event.type == EventType::kEvaluation || event.type == EventType::kBaseline) {
    ATTUNE_RETURN_IF_ERROR(ValidateEvalMetrics(event.eval.metrics));
  }
  if (event.type == EventType::kBaseline && !common::IsValidMetricName(event.message)) {
    return absl::InvalidArgumentError("event.message: a baseline's method is [a-z0-9_]{1,64}");
  }
  event.unix_ms = NowMs();
  event.generation = generation;
  event.state = job.state;
  switch (event.type) {
    case EventType::kProgress: job.progress = event.progress; break;
    case EventType::kEvaluation: job.last_eval = event.eval; break;
    case EventType::kBaseline:
      job.baseline = event.eval;
      job.baseline_method = event.message;
      break;
    case EventType::kCheckpoint: job.last_checkpoint_step = event.progress.step; break;
    default: return absl::InvalidArgumentError("event.type: trainers report progress, evaluation, checkpoint or baseline");
  }
  if (job.state == JobState::kScheduled) {
    job.state = JobState::kRunning;
    SetStateLocked(job, JobState::kRunning, absl::StrCat("generation ", job.generation, " running")).IgnoreError();
  }
  job.updated_ms = event.unix_ms;
  // Progress and evaluation arrive every second per job and steer no recovery:
  // they skip the fsync (they survive a killed coordinator, not a power cut).
  // A committed checkpoint is synced.
  auto stored = store_.AppendEvent(job, event, /*sync=*/event.type == EventType::kCheckpoint);
  cv_.notify_all();
  return stored.status();
}

void JobManager::ScheduleLocked() {
  std::vector<WorkerView> cluster;
  std::map<std::string, int64_t> used_cpus, used_gpus;
  for (const auto& [id, j] : jobs_) {
    if (!IsLive(j.state)) continue;
    for (const auto& w : j.workers) {
      used_cpus[w] += j.config.cpus_per_rank;
      used_gpus[w] += j.config.gpus_per_rank;
    }
  }
  // A worker that has missed heartbeats for half the timeout is suspect: a
  // new attempt placed there would likely fail again when it is declared lost,
  // costing a second restart for one fault.
  const absl::Time suspect_before = absl::Now() - options_.heartbeat_timeout / 2;
  for (const auto& [id, w] : workers_) {
    if (!w.alive || w.last_seen < suspect_before) continue;
    cluster.push_back({id, w.info.cpus - used_cpus[id], w.info.gpus - used_gpus[id], w.info.cpus, w.info.gpus});
  }
  std::vector<QueuedJob> queue;
  const int64_t now = NowMs();
  for (auto& [id, j] : jobs_) {
    if (j.state != JobState::kQueued && j.state != JobState::kUnschedulable && j.state != JobState::kRecovering) {
      continue;
    }
    if (j.not_before_ms > now) continue;
    if (!j.depends_on.empty() && !DependencyMetLocked(j)) continue;
    queue.push_back({id, j.config.priority, j.seq, j.config.world_size, j.config.cpus_per_rank, j.config.gpus_per_rank});
  }
  if (queue.empty()) return;
  std::vector<Held> held;
  const std::vector<Placement> placements = Schedule(cluster, queue, &held);
  // NOTE [unschedulable]: a QUEUED job the registered workers could never
  // hold goes UNSCHEDULABLE with the reason as its message, and blocks
  // nothing; more workers may register, so it is not failed, and it is QUEUED
  // again (then placed) as soon as they can hold it. A RECOVERING job keeps
  // its state (and its restart accounting) with the reason as its message.
  std::set<std::string> held_ids;
  for (const Held& h : held) {
    held_ids.insert(h.job_id);
    Job& job = jobs_[h.job_id];
    const JobState to = job.state == JobState::kRecovering ? job.state : JobState::kUnschedulable;
    if (job.state != to || job.message != h.reason) SetStateLocked(job, to, h.reason).IgnoreError();
  }
  for (const QueuedJob& q : queue) {
    Job& job = jobs_[q.id];
    if (held_ids.count(q.id)) continue;
    if (job.state == JobState::kUnschedulable) {
      SetStateLocked(job, JobState::kQueued, "the cluster can hold it now; waiting for free workers").IgnoreError();
    } else if (absl::StartsWith(job.message, "unschedulable:")) {
      SetStateLocked(job, job.state, "the cluster can hold it now; waiting for free workers").IgnoreError();
    }
  }
  for (const Placement& p : placements) {
    Job& job = jobs_[p.job_id];
    const int64_t eligible_ms = std::max(job.updated_ms, job.not_before_ms);
    if (scheduling_seconds_.size() < 10000) {
      scheduling_seconds_.push_back(static_cast<double>(std::max<int64_t>(0, NowMs() - eligible_ms)) / 1000.0);
    }
    ++job.generation;
    job.workers = p.workers;
    const WorkerState& r0 = workers_[p.workers[0]];
    const std::string rendezvous = absl::StrCat(r0.info.host, ":", r0.info.rendezvous_port);
    const std::string secret = common::NewSecret();  // NOTE [rendezvous secret]
    for (size_t r = 0; r < p.workers.size(); ++r) {
      workers_[p.workers[r]].pending.push_back({job.id, job.generation, static_cast<int>(r),
                                                static_cast<int>(p.workers.size()), rendezvous, job.config.backend,
                                                job.spec_json, secret});
    }
    Live live;
    live.ranks.resize(p.workers.size());
    live.since = absl::Now();
    live_[job.id] = live;
    SetStateLocked(job, JobState::kScheduled,
                   absl::StrCat("generation ", job.generation, " on ", absl::StrJoin(p.workers, ","),
                                ", rendezvous ", rendezvous),
                   job.restarts > 0 ? EventType::kRestart : EventType::kStateChanged)
        .IgnoreError();
  }
}

void JobManager::Tick() {
  std::lock_guard<std::mutex> l(mu_);
  const absl::Time now = absl::Now();
  // 1. Workers that missed their heartbeats are lost; so are their ranks.
  for (auto& [id, w] : workers_) {
    if (w.alive && now - w.last_seen > options_.heartbeat_timeout) {
      w.alive = false;
      w.pending.clear();
      LOG(WARNING) << "worker " << id << " lost: no heartbeat for " << absl::FormatDuration(now - w.last_seen);
      for (auto& [jid, job] : jobs_) {
        if (!IsLive(job.state) || std::find(job.workers.begin(), job.workers.end(), id) == job.workers.end()) continue;
        if (job.state == JobState::kCancelling) {
          live_.erase(jid);
          ++job.generation;
          SetStateLocked(job, JobState::kCancelled, "cancelled (worker lost)").IgnoreError();
          continue;
        }
        FailAttemptLocked(job, absl::StrCat("worker ", id, " lost (no heartbeat for ",
                                            absl::FormatDuration(options_.heartbeat_timeout), ")"),
                          false, EventType::kWorkerLost);
      }
    }
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (!it->second.alive && now - it->second.last_seen > options_.lost_worker_retention) {
      LOG(INFO) << "worker " << it->first << " forgotten: lost for " << absl::FormatDuration(now - it->second.last_seen);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  // 2. Ranks never reported (e.g. assignments lost with a coordinator restart).
  for (auto& [jid, job] : jobs_) {
    auto lit = live_.find(jid);
    if (lit == live_.end() || !IsLive(job.state)) continue;
    bool all_reported = true;
    for (const auto& r : lit->second.ranks) all_reported &= r.reported;
    if (!all_reported && now - lit->second.since > options_.heartbeat_timeout * 2) {
      bool none_reported = true;
      for (const auto& r : lit->second.ranks) none_reported &= !r.reported;
      if (job.state == JobState::kCancelling) {
        live_.erase(lit);
        ++job.generation;
        SetStateLocked(job, JobState::kCancelled, "cancelled").IgnoreError();
      } else if (job.state == JobState::kScheduled && none_reported) {
        // NOTE [lost assignments]: placed, but no worker ever said it started
        // (the assignment went down with a coordinator restart): nothing ran,
        // so the job is queued again without spending a restart. The new
        // generation fences a trainer that starts late after all.
        FenceAttemptLocked(job, "assignment lost");
        SetStateLocked(job, JobState::kQueued,
                       "its assignment was lost (no worker reported it after a coordinator restart); queued again")
            .IgnoreError();
      } else {
        FailAttemptLocked(job, "ranks were not reported by any worker in time", false, EventType::kWorkerLost);
      }
    }
  }
  // 3. Attempts waiting for their failing rank's report (NOTE [the failing rank speaks]).
  std::vector<std::string> waiting;
  for (const auto& [jid, live] : live_) {
    if (live.first_failure != absl::InfiniteFuture()) waiting.push_back(jid);
  }
  for (const auto& jid : waiting) {
    auto jit = jobs_.find(jid);
    if (jit != jobs_.end()) CheckJobLocked(jit->second);
  }
  // 4. Place queued and recovering jobs.
  ScheduleLocked();
}

std::vector<WorkerListing> JobManager::Workers() {
  std::lock_guard<std::mutex> l(mu_);
  return WorkersLocked();
}

std::vector<WorkerListing> JobManager::WorkersLocked() const {
  std::map<std::string, std::vector<std::string>> jobs_on;
  for (const auto& [id, j] : jobs_) {
    if (!IsLive(j.state)) continue;
    for (const auto& w : std::set<std::string>(j.workers.begin(), j.workers.end())) jobs_on[w].push_back(id);
  }
  const absl::Time now = absl::Now();
  const int64_t now_ms = NowMs();
  std::vector<WorkerListing> out;
  for (const auto& [id, w] : workers_) {
    WorkerListing v;
    v.info = w.info;
    v.jobs = jobs_on[id];
    v.state = !w.alive         ? WorkerListing::State::kLost
              : v.jobs.empty() ? WorkerListing::State::kIdle
                               : WorkerListing::State::kBusy;
    v.last_heartbeat_ms = now_ms - absl::ToInt64Milliseconds(now - w.last_seen);
    out.push_back(std::move(v));
  }
  return out;
}

JobManager::ClusterStats JobManager::TakeStats() {
  std::lock_guard<std::mutex> l(mu_);
  ClusterStats out;
  for (const auto& [id, j] : jobs_) {
    ++out.jobs[j.state];
    out.restarts += j.restarts;
  }
  const int64_t now_ms = NowMs();
  for (const WorkerListing& w : WorkersLocked()) {
    switch (w.state) {
      case WorkerListing::State::kLost: ++out.workers_lost; break;
      case WorkerListing::State::kBusy: ++out.workers_busy; break;
      case WorkerListing::State::kIdle: ++out.workers_idle; break;
    }
    out.heartbeat_age_seconds.emplace_back(w.info.id, static_cast<double>(now_ms - w.last_heartbeat_ms) / 1000.0);
  }
  out.scheduling_seconds.swap(scheduling_seconds_);
  out.refused_reports.swap(refused_reports_);
  out.outage_resumes = std::exchange(outage_resumes_, 0);
  return out;
}

}  // namespace attune::coordinator
