#include "coordinator/rpc/services.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/job_spec.h"
#include "coordinator/rpc/call_recorder.h"
#include "coordinator/rpc/convert.h"

namespace attune::coordinator::rpc {

using common::ToGrpc;


grpc::Status JobServiceImpl::Authorize(grpc::ServerContext* ctx, const std::string& job_id, Caller* caller) const {
  Caller who;
  if (auto a = auth_.Check(ctx, Api::kJobs, &who); !a.ok()) return a;
  if (caller != nullptr) *caller = who;
  if (job_id.empty()) return grpc::Status::OK;
  auto job = manager_.Get(job_id);
  if (!job.ok()) return ToGrpc(job.status());
  return CheckOwned(who, job->owner, "job " + job_id);
}

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req, v1::Job* out) {
  CallRecorder rec(metrics_, "SubmitJob");
  Caller who;
  if (auto a = Authorize(ctx, "", &who); !a.ok()) return rec(a);
  common::JobConfig config = common::JobConfigFromProto(req->spec());
  for (const auto& [k, v] : config.labels) {
    if (k.rfind("attune.dev/", 0) == 0) {
      return rec(grpc::Status(grpc::INVALID_ARGUMENT,
                              absl::StrCat("labels.", k, ": the attune.dev/ prefix is reserved for the coordinator's own "
                                           "labels (sweep trials)")));
    }
  }
  if (config.priority != 0) {
    // Priority decides who waits for whom on a shared cluster: an admin's call.
    if (auto a = auth_.Check(ctx, Api::kAdmin); !a.ok()) {
      return rec(grpc::Status(a.error_code(), absl::StrCat("priority: ", a.error_message())));
    }
  }
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(req->spec(), &json, o);
  auto job = manager_.Submit(config, json, req->idempotency_key(), Submitter{who.name, who.admin});
  if (!job.ok()) return rec(ToGrpc(job.status()));
  *out = ToProto(*job);
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* out) {
  CallRecorder rec(metrics_, "GetJob");
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return rec(a);
  auto job = manager_.Get(req->job_id());
  if (!job.ok()) return rec(ToGrpc(job.status()));
  *out = ToProto(*job);
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* out) {
  CallRecorder rec(metrics_, "ListJobs");
  Caller who;
  if (auto a = Authorize(ctx, "", &who); !a.ok()) return rec(a);
  ListFilter f;
  f.viewer = Submitter{who.name, who.admin};
  if (req->state() != v1::JOB_STATE_UNSPECIFIED) f.state = static_cast<JobState>(req->state());
  if (!req->label_selector().empty()) {
    std::vector<std::string> kv = absl::StrSplit(req->label_selector(), absl::MaxSplits('=', 1));
    if (kv.size() != 2) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "label_selector: must be key=value"));
    f.label_key = kv[0];
    f.label_value = kv[1];
  }
  if (req->page_size() < 0) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "page_size: must be >= 0"));
  f.page_size = req->page_size();
  f.page_token = req->page_token();
  auto page = manager_.List(f);
  if (!page.ok()) return rec(ToGrpc(page.status()));
  // A page ends early rather than outgrow what a default client accepts
  // (4 MiB): a few large specs must not make listing fail for everyone.
  constexpr size_t kMaxReplyBytes = size_t{3} << 20;
  out->set_next_page_token(page->second);
  size_t bytes = 0;
  for (size_t i = 0; i < page->first.size(); ++i) {
    v1::Job job = ToProto(page->first[i]);
    bytes += job.ByteSizeLong() + 8;
    if (i > 0 && bytes > kMaxReplyBytes) {
      out->set_next_page_token(JobManager::PageTokenAfter(page->first[i - 1]));
      break;
    }
    *out->add_jobs() = std::move(job);
  }
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* out) {
  CallRecorder rec(metrics_, "CancelJob");
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return rec(a);
  auto job = manager_.Cancel(req->job_id());
  if (!job.ok()) return rec(ToGrpc(job.status()));
  *out = ToProto(*job);
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return a;
  int64_t next = std::max<int64_t>(0, req->from_index());
  while (!ctx->IsCancelled()) {
    auto events = manager_.WaitEvents(req->job_id(), next, absl::Seconds(1));
    if (!events.ok()) return ToGrpc(events.status());
    for (const Event& e : *events) {
      if (!writer->Write(ToProto(e))) return grpc::Status(grpc::CANCELLED, "watcher went away");
      next = e.index + 1;
    }
    auto job = manager_.Get(req->job_id());
    if (!job.ok()) return ToGrpc(job.status());
    if (IsTerminal(job->state) && events->empty()) return grpc::Status::OK;
  }
  return grpc::Status(grpc::CANCELLED, "watch cancelled");
}

grpc::Status JobServiceImpl::GetJobLogs(grpc::ServerContext* ctx, const v1::GetJobLogsRequest* req,
                                        v1::GetJobLogsResponse* out) {
  CallRecorder rec(metrics_, "GetJobLogs");
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return rec(a);
  for (const auto& line : manager_.Logs(req->job_id(), req->rank(), req->tail(), req->after_seq())) {
    auto* l = out->add_lines();
    l->set_rank(line.rank);
    l->set_line(line.line);
    l->set_seq(line.seq);
  }
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::GetArtifact(grpc::ServerContext* ctx, const v1::GetArtifactRequest* req,
                                         grpc::ServerWriter<v1::ArtifactChunk>* writer) {
  CallRecorder rec(metrics_, "GetArtifact");
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return rec(a);
  auto files = manager_.Artifacts(req->job_id(), req->what().empty() ? "model" : req->what());
  if (!files.ok()) return rec(ToGrpc(files.status()));
  std::string buf(1 << 20, '\0');
  for (const auto& f : *files) {
    // O_NOFOLLOW and the same inode as the path checked: a file swapped for
    // a symlink after the check is not followed.
    const int fd = ::open(f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat opened {}, checked {};
    if (fd < 0 || ::fstat(fd, &opened) != 0 || ::lstat(f.path.c_str(), &checked) != 0 || !S_ISREG(opened.st_mode) ||
        opened.st_ino != checked.st_ino || opened.st_dev != checked.st_dev) {
      if (fd >= 0) ::close(fd);
      return rec(grpc::Status(grpc::PERMISSION_DENIED, absl::StrCat(f.relative, ": changed while it was read; refused")));
    }
    common::Sha256Stream sha;
    int64_t offset = 0;
    for (;;) {
      if (ctx->IsCancelled()) {
        ::close(fd);
        return rec(grpc::Status(grpc::CANCELLED, "download cancelled"));
      }
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ::close(fd);
        return rec(grpc::Status(grpc::INTERNAL, absl::StrCat(f.relative, ": read failed")));
      }
      v1::ArtifactChunk chunk;
      chunk.set_path(f.relative);
      chunk.set_offset(offset);
      if (n > 0) {
        chunk.set_data(buf.data(), static_cast<size_t>(n));
        sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
        offset += n;
      }
      if (n == 0) {
        chunk.set_last(true);
        chunk.set_sha256(sha.HexDigest());
        chunk.set_size(offset);
      }
      if (!writer->Write(chunk)) {
        ::close(fd);
        return rec(grpc::Status(grpc::CANCELLED, "the client went away"));
      }
      if (n == 0) break;
    }
    ::close(fd);
  }
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::ListJobEvents(grpc::ServerContext* ctx, const v1::ListJobEventsRequest* req,
                                           v1::ListJobEventsResponse* out) {
  CallRecorder rec(metrics_, "ListJobEvents");
  if (auto a = Authorize(ctx, req->job_id()); !a.ok()) return rec(a);
  if (req->page_size() < 0 || req->from_index() < 0) {
    return rec(grpc::Status(grpc::INVALID_ARGUMENT, "page_size and from_index: must be >= 0"));
  }
  const int page = req->page_size() == 0 ? 1000 : std::min(req->page_size(), 10000);
  auto events = manager_.WaitEvents(req->job_id(), req->from_index(), absl::ZeroDuration());
  if (!events.ok()) return rec(ToGrpc(events.status()));
  int64_t next = req->from_index();
  for (const Event& e : *events) {
    if (out->events_size() == page) break;
    *out->add_events() = ToProto(e);
    next = e.index + 1;
  }
  out->set_next_index(next);
  return rec(grpc::Status::OK);
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest*,
                                         v1::ListWorkersResponse* out) {
  CallRecorder rec(metrics_, "ListWorkers");
  if (auto a = auth_.Check(ctx, Api::kJobs); !a.ok()) return rec(a);
  for (const WorkerListing& w : manager_.Workers()) {
    auto* o = out->add_workers();
    o->set_worker_id(w.info.id);
    o->set_host(w.info.host);
    o->set_cpus(static_cast<int32_t>(w.info.cpus));
    o->set_gpus(static_cast<int32_t>(w.info.gpus));
    for (const auto& [k, v] : w.info.labels) (*o->mutable_labels())[k] = v;
    o->set_state(w.state == WorkerListing::State::kLost   ? v1::WorkerStatus::LOST
                 : w.state == WorkerListing::State::kBusy ? v1::WorkerStatus::BUSY
                                                       : v1::WorkerStatus::IDLE);
    o->set_last_heartbeat_unix_ms(w.last_heartbeat_ms);
    for (const auto& j : w.jobs) o->add_jobs(j);
  }
  return rec(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                         v1::RegisterResponse* out) {
  CallRecorder rec(metrics_, "Register");
  Caller who;
  if (auto a = auth_.Check(ctx, Api::kWorkers, &who); !a.ok()) return rec(a);
  if (auto a = CheckWorkerId(who, req->worker_id()); !a.ok()) {
    manager_.CountRefused("certificate_mismatch");
    return rec(a);
  }
  if (!registrations_.TryAcquire()) {
    manager_.CountRefused("registration_rate");
    return rec(grpc::Status(grpc::RESOURCE_EXHAUSTED, "too many registrations at once; retry in a second"));
  }
  // Everything a worker registers is kept and shown: bounded like a spec.
  if (!common::IsValidName(req->worker_id())) {
    return rec(grpc::Status(grpc::INVALID_ARGUMENT, "worker_id: must match [A-Za-z0-9._-]{1,128}"));
  }
  if (req->cpus() <= 0 || req->cpus() > 4096) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "cpus: must be in (0, 4096]"));
  if (req->gpus() < 0 || req->gpus() > 64) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "gpus: must be in [0, 64]"));
  if (req->host().size() > 253) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "host: longer than 253 bytes"));
  // Shown in `attune workers` and joined into rendezvous addresses: a name
  // or an address, never control characters or spaces.
  if (req->host().find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:[]%") !=
      std::string::npos) {
    return rec(grpc::Status(grpc::INVALID_ARGUMENT, "host: must be a host name or an IP address"));
  }
  if (req->rendezvous_port() < 0 || req->rendezvous_port() > 65535) {
    return rec(grpc::Status(grpc::INVALID_ARGUMENT, "rendezvous_port: must be in [0, 65535]"));
  }
  if (req->labels_size() > 64) return rec(grpc::Status(grpc::INVALID_ARGUMENT, "labels: more than 64"));
  for (const auto& [k, v] : req->labels()) {
    if (k.size() > 256 || v.size() > 256) {
      return rec(grpc::Status(grpc::INVALID_ARGUMENT, "labels: keys and values are at most 256 bytes"));
    }
  }
  WorkerInfo w;
  w.id = req->worker_id();
  w.host = req->host().empty() ? "127.0.0.1" : req->host();
  w.cpus = req->cpus();
  w.gpus = req->gpus();
  w.rendezvous_port = req->rendezvous_port();
  w.labels.insert(req->labels().begin(), req->labels().end());
  auto session = manager_.RegisterSession(w, req->session());
  if (!session.ok()) return rec(ToGrpc(session.status()));
  out->set_heartbeat_interval_ms(1000);
  out->set_session(*session);
  return rec(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* out) {
  CallRecorder rec(metrics_, "Heartbeat");
  Caller who;
  if (auto a = auth_.Check(ctx, Api::kWorkers, &who); !a.ok()) return rec(a);
  if (auto a = CheckWorkerId(who, req->worker_id()); !a.ok()) {
    manager_.CountRefused("certificate_mismatch");
    return rec(a);
  }
  if (auto s = manager_.CheckSession(req->worker_id(), req->session()); !s.ok()) return rec(ToGrpc(s));
  std::vector<TaskReport> tasks;
  for (const auto& t : req->tasks()) {
    TaskReport r;
    r.job_id = t.job_id();
    r.generation = t.generation();
    r.rank = t.rank();
    r.running = t.running();
    r.exit_code = t.exit_code();
    r.error = t.error();
    r.stopped_unreachable = !t.running() && t.stopped_unreachable();
    r.log_lines.assign(t.log_lines().begin(), t.log_lines().end());
    tasks.push_back(std::move(r));
  }
  HeartbeatOut hb = manager_.Heartbeat(req->worker_id(), tasks);
  out->set_reregister(hb.reregister);
  for (const auto& a : hb.start) {
    auto* o = out->add_start();
    o->set_job_id(a.job_id);
    o->set_generation(a.generation);
    o->set_rank(a.rank);
    o->set_world_size(a.world_size);
    o->set_rendezvous(a.rendezvous);
    o->set_backend(a.backend);
    o->set_spec_json(a.spec_json);
    o->set_rendezvous_secret(a.rendezvous_secret);
  }
  for (const auto& s : hb.stop) {
    auto* o = out->add_stop();
    o->set_job_id(s.job_id);
    o->set_generation(s.generation);
    o->set_reason(s.reason);
  }
  return rec(grpc::Status::OK);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* ctx, const v1::ProgressReport* req,
                                               v1::ProgressAck*) {
  CallRecorder rec(metrics_, "ReportProgress");
  Caller who;
  if (auto a = auth_.Check(ctx, Api::kWorkers, &who); !a.ok()) return rec(a);
  if (auto a = CheckWorkerId(who, req->worker_id()); !a.ok()) {
    manager_.CountRefused("certificate_mismatch");
    return rec(a);
  }
  if (auto s = manager_.CheckSession(req->worker_id(), req->session()); !s.ok()) return rec(ToGrpc(s));
  absl::Status st = manager_.Report(req->worker_id(), req->job_id(), req->generation(), req->rank(),
                                    FromProto(req->event()));
  return rec(ToGrpc(st));
}

}  // namespace attune::coordinator::rpc
