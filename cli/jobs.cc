// The job commands of the attune CLI: submit, get, list, cancel, watch, logs.

#include "cli/jobs.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attune/v1/coordinator.grpc.pb.h"
#include "common/files.h"
#include "common/rpc/job_spec.h"
#include "common/task_catalog.h"

namespace attune::cli {
namespace {

namespace fs = std::filesystem;
using v1::JobService;

std::string StateName(v1::JobState s) { return v1::JobState_Name(s); }

// An evaluation's metrics in the task catalog's order, then any others by name.
const common::TaskInfo& TaskOf(const std::string& task) {
  const common::TaskInfo* t = common::FindTask(task);
  return t ? *t : *common::FindTask("");
}

// The task whose headline metrics an evaluation holds (watch events do not
// carry the job's spec).
std::string TaskFromMetrics(const v1::Metrics& m) {
  for (const auto& t : common::Tasks()) {
    bool all = true;
    for (const auto& name : t.headline) all &= m.values().count(name) > 0;
    if (all) return t.name;
  }
  return "";
}

std::vector<std::pair<std::string, double>> OrderedMetrics(const v1::Metrics& m, const std::string& task) {
  return common::InCatalogOrder(TaskOf(task).name, {m.values().begin(), m.values().end()});
}

// The task's headline metrics of an evaluation, "accuracy 0.7710  f1 0.6280 ...".
std::string Headline(const v1::Metrics& m, const std::string& task, const char* sep) {
  std::string out;
  for (const auto& name : TaskOf(task).headline) {
    auto it = m.values().find(name);
    if (it == m.values().end()) continue;
    absl::StrAppend(&out, out.empty() ? "" : "  ", name, sep, absl::StrFormat("%.4f", it->second));
  }
  return out.empty() ? "-" : out;
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  o.add_whitespace = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void EmitYaml(const nlohmann::json& j, YAML::Emitter& e) {
  if (j.is_object()) {
    e << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      e << YAML::Key << it.key() << YAML::Value;
      EmitYaml(it.value(), e);
    }
    e << YAML::EndMap;
  } else if (j.is_array()) {
    e << YAML::BeginSeq;
    for (const auto& v : j) EmitYaml(v, e);
    e << YAML::EndSeq;
  } else if (j.is_string()) {
    e << j.get<std::string>();
  } else {
    e << j.dump();
  }
}

}  // namespace

void PrintDocument(const nlohmann::json& j, const std::string& format) {
  if (format == "yaml") {
    YAML::Emitter e;
    EmitYaml(j, e);
    std::cout << e.c_str() << "\n";
  } else {
    std::cout << j.dump(2) << "\n";
  }
}

int Fail(const grpc::Status& s, const std::string& address) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  std::cerr << "attune: " << (code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN") << ": " << s.error_message() << "\n";
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE && !address.empty()) {
    std::cerr << "attune: cannot reach the coordinator at " << address
              << " (set --coordinator HOST:PORT or $ATTUNE_COORDINATOR)\n";
  }
  return code == 0 ? 1 : code;
}

namespace {

void Print(const google::protobuf::Message& m, const std::string& format) {
  PrintDocument(nlohmann::json::parse(ToJson(m)), format);
}

void PrintJobTable(const std::vector<v1::Job>& jobs) {
  std::printf("%-20s %-24s %-11s %9s  %s\n", "ID", "NAME", "STATE", "STEP", "LAST EVAL");
  for (const auto& j : jobs) {
    std::printf("%-20s %-24s %-11s %4lld/%-4lld  %s\n", j.id().c_str(), j.spec().name().substr(0, 24).c_str(),
                StateName(j.state()).c_str(), static_cast<long long>(j.progress().step()),
                static_cast<long long>(j.progress().total_steps()), Headline(j.last_eval(), j.spec().task().type(), "=").c_str());
  }
}

void PrintEvalTable(const v1::Job& j) {
  std::printf("\njob %s %s%s%s\n", j.id().c_str(), StateName(j.state()).c_str(), j.message().empty() ? "" : ": ",
              j.message().c_str());
  const std::string task = TaskOf(j.spec().task().type()).name;
  const auto& base = j.baseline().values();
  if (!j.last_eval().values().empty()) {
    std::printf("\nevaluation at step %lld\n%-16s %8s%s\n", static_cast<long long>(j.last_eval().step()), "metric",
                "model", base.empty() ? "" : "  baseline");
    for (const auto& [name, v] : OrderedMetrics(j.last_eval(), task)) {
      auto b = base.find(name);
      std::printf("%-16s %8.4f%s\n", name.c_str(), v, b == base.end() ? "" : absl::StrFormat("  %8.4f", b->second).c_str());
    }
  }
  if (!base.empty()) {
    std::printf("\n%s\n", common::BaselineLine(task, j.baseline_method(), {j.last_eval().values().begin(), j.last_eval().values().end()},
                                                {base.begin(), base.end()})
                                .c_str());
  }
  // Only a job that finished has written its model and reports.
  if (j.state() == v1::SUCCEEDED && !j.spec().output_dir().empty()) {
    std::printf("\nmodel:   %s/model\nreports: %s/eval_report.json, %s/eval_report.html, %s/data_report.json\n",
                j.spec().output_dir().c_str(), j.spec().output_dir().c_str(), j.spec().output_dir().c_str(),
                j.spec().output_dir().c_str());
  }
}

std::string Absolute(const std::string& p, const fs::path& base) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (base / p).lexically_normal().string();
}

}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  // `watch` streams can sit idle between events: keep them alive through L4 proxies.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  return grpc::CreateCustomChannel(o.coordinator, o.credentials ? o.credentials : grpc::InsecureChannelCredentials(),
                                   args);
}

void PrepareContext(const ClientOptions& o, grpc::ClientContext* ctx, bool stream) {
  if (!o.token.empty()) ctx->AddMetadata("authorization", "Bearer " + o.token);
  if (!stream) ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o.timeout_s));
}

void AbsolutizePaths(v1::JobSpec* spec) {
  const fs::path base = fs::current_path();
  spec->mutable_model()->set_path(Absolute(spec->model().path(), base));
  spec->mutable_model()->set_vocab(Absolute(spec->model().vocab(), base));
  spec->mutable_model()->set_tokenizer(Absolute(spec->model().tokenizer(), base));
  if (spec->has_evaluation()) {
    spec->mutable_evaluation()->set_multiple_choice(Absolute(spec->evaluation().multiple_choice(), base));
  }
  spec->mutable_data()->set_train(Absolute(spec->data().train(), base));
  spec->mutable_data()->set_validation(Absolute(spec->data().validation(), base));
  spec->set_output_dir(Absolute(spec->output_dir(), base));
}

Client::Client(const ClientOptions& o) : o_(o) {
  channel_ = MakeChannel(o);
  stub_ = JobService::NewStub(channel_);
}
Client::~Client() = default;

void Client::Prepare(grpc::ClientContext* ctx, bool stream) const { PrepareContext(o_, ctx, stream); }

int Client::Submit(const std::string& file, bool watch, const std::string& key, const std::vector<std::string>& sets) {
  auto text = common::ReadFile(file, 1 << 20);
  if (!text.ok()) {
    std::cerr << "attune: " << text.status() << "\n";
    return 2;
  }
  auto spec = common::ParseJobSpec(*text, file, sets);
  if (!spec.ok()) {
    std::cerr << "attune: " << spec.status() << "\n";
    return 3;
  }
  // Relative paths in the spec are relative to this command's directory.
  AbsolutizePaths(&*spec);
  v1::SubmitJobRequest req;
  *req.mutable_spec() = *spec;
  std::string idem = key;
  if (idem.empty()) {
    std::random_device rd;
    idem = absl::StrFormat("cli-%08x%08x", rd(), rd());
  }
  req.set_idempotency_key(idem);
  v1::Job job;
  grpc::Status s;
  // Retried only when unavailable, with the same key, within --timeout_s in all.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(o_.timeout_s);
  for (int attempt = 0; attempt < 5; ++attempt) {
    grpc::ClientContext ctx;
    Prepare(&ctx, false);
    s = stub_->SubmitJob(&ctx, req, &job);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    const auto pause = std::chrono::milliseconds(500 << attempt);
    if (std::chrono::steady_clock::now() + pause >= give_up) break;
    std::this_thread::sleep_for(pause);
  }
  if (!s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") {
    std::cout << job.id() << "\n";
  } else {
    Print(job, o_.output);
  }
  return watch ? Watch(job.id()) : 0;
}

int Client::Get(const std::string& id) {
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  grpc::ClientContext ctx;
  Prepare(&ctx, false);
  if (auto s = stub_->GetJob(&ctx, req, &job); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") {
    PrintJobTable({job});
    PrintEvalTable(job);
  } else {
    Print(job, o_.output);
  }
  return 0;
}

int Client::List(const std::string& state, const std::string& selector) {
  v1::ListJobsRequest req;
  if (!state.empty()) {
    v1::JobState st;
    if (!v1::JobState_Parse(state, &st)) {
      std::cerr << "attune: --state: '" << state << "' is not a job state (QUEUED, RUNNING, SUCCEEDED, ...)\n";
      return 2;
    }
    req.set_state(st);
  }
  req.set_label_selector(selector);
  std::vector<v1::Job> all;
  do {
    v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, false);
    if (auto s = stub_->ListJobs(&ctx, req, &resp); !s.ok()) return Fail(s, o_.coordinator);
    for (const auto& j : resp.jobs()) all.push_back(j);
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  if (o_.output == "table") {
    PrintJobTable(all);
  } else {
    v1::ListJobsResponse out;
    for (const auto& j : all) *out.add_jobs() = j;
    Print(out, o_.output);
  }
  return 0;
}

int Client::Cancel(const std::string& id) {
  v1::CancelJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  grpc::ClientContext ctx;
  Prepare(&ctx, false);
  if (auto s = stub_->CancelJob(&ctx, req, &job); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") {
    std::cout << job.id() << " " << StateName(job.state()) << "\n";
  } else {
    Print(job, o_.output);
  }
  return 0;
}

int Client::Watch(const std::string& id) {
  const bool tty = ::isatty(1);
  int64_t from = 0;
  for (int reconnects = 0; reconnects < 30; ++reconnects) {
    v1::WatchJobRequest req;
    req.set_job_id(id);
    req.set_from_index(from);
    grpc::ClientContext ctx;
    Prepare(&ctx, true);
    auto reader = stub_->WatchJob(&ctx, req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
      from = e.index() + 1;
      if (o_.output != "table") {
        google::protobuf::util::JsonPrintOptions po;
        po.preserve_proto_field_names = true;
        std::string line;
        (void)google::protobuf::util::MessageToJsonString(e, &line, po);
        std::cout << line << std::endl;
        continue;
      }
      const auto& p = e.progress();
      switch (e.type()) {
        case v1::JobEvent::PROGRESS: {
          const int width = 30;
          int filled = p.total_steps() > 0 ? static_cast<int>(width * p.step() / p.total_steps()) : 0;
          std::string bar = std::string(static_cast<size_t>(filled), '=') + (filled < width ? ">" : "") +
                            std::string(static_cast<size_t>(std::max(0, width - filled - 1)), ' ');
          std::printf("%s[%s] step %lld/%lld  epoch %.2f  loss %.4f  %.1f samples/s%s", tty ? "\r" : "", bar.c_str(),
                      static_cast<long long>(p.step()), static_cast<long long>(p.total_steps()), p.epoch(), p.loss(),
                      p.samples_per_second(), tty ? "" : "\n");
          std::fflush(stdout);
          break;
        }
        case v1::JobEvent::EVALUATION:
          std::printf("%seval at step %lld: loss %.4f  %s\n", tty ? "\n" : "", static_cast<long long>(e.metrics().step()),
                      e.metrics().values().count("loss") ? e.metrics().values().at("loss") : 0.0,
                      Headline(e.metrics(), TaskFromMetrics(e.metrics()), " ").c_str());
          break;
        case v1::JobEvent::CHECKPOINT:
          break;
        case v1::JobEvent::BASELINE:
          std::printf("%sbaseline %s: %s\n", tty ? "\n" : "", e.message().c_str(),
                      Headline(e.metrics(), TaskFromMetrics(e.metrics()), " ").c_str());
          break;
        default:
          std::printf("%s%s%s%s\n", tty ? "\n" : "", StateName(e.state()).c_str(), e.message().empty() ? "" : ": ",
                      e.message().c_str());
      }
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return Fail(s, o_.coordinator);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // coordinator restarting: resume from the last index
  }
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  grpc::ClientContext ctx;
  Prepare(&ctx, false);
  if (auto s = stub_->GetJob(&ctx, req, &job); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") PrintEvalTable(job);
  return job.state() == v1::SUCCEEDED ? 0 : 1;
}

int Client::Logs(const std::string& id, int rank, int tail, bool follow) {
  v1::GetJobLogsRequest req;
  req.set_job_id(id);
  req.set_rank(rank);
  req.set_tail(tail);
  for (;;) {
    v1::GetJobLogsResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, false);
    if (auto s = stub_->GetJobLogs(&ctx, req, &resp); !s.ok()) return Fail(s, o_.coordinator);
    if (o_.output != "table") {
      if (!follow) {
        Print(resp, o_.output);
        return 0;
      }
      for (const auto& l : resp.lines()) std::cout << nlohmann::json::parse(ToJson(l)).dump() << "\n";
    } else {
      for (const auto& l : resp.lines()) std::cout << "[rank " << l.rank() << "] " << l.line() << "\n";
    }
    std::cout.flush();
    if (!follow) return 0;
    if (resp.lines_size() > 0) req.set_after_seq(resp.lines(resp.lines_size() - 1).seq());
    req.set_tail(0);
    if (resp.lines_size() == 0) {
      // No new line: done once the job has ended (its last lines came with its end).
      v1::GetJobRequest g;
      g.set_job_id(id);
      v1::Job job;
      grpc::ClientContext gctx;
      Prepare(&gctx, false);
      if (auto s = stub_->GetJob(&gctx, g, &job); !s.ok()) return Fail(s, o_.coordinator);
      if (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

int Client::Download(const std::string& id, const std::string& what, const std::string& to) {
  v1::GetArtifactRequest req;
  req.set_job_id(id);
  req.set_what(what);
  grpc::ClientContext ctx;
  Prepare(&ctx, true);
  auto reader = stub_->GetArtifact(&ctx, req);
  const fs::path dest = to.empty() ? fs::path(id) : fs::path(to);
  std::ofstream out;
  std::string current;
  std::unique_ptr<common::Sha256Stream> sha;
  int64_t written = 0, total = 0;
  int files = 0;
  auto fail = [&](const std::string& why) {
    ctx.TryCancel();
    out.close();
    if (!current.empty()) fs::remove(dest / current);
    std::cerr << "attune download: " << why << "\n";
    return 1;
  };
  v1::ArtifactChunk c;
  while (reader->Read(&c)) {
    if (c.path() != current) {
      if (!current.empty()) return fail(current + ": ended without its checksum");
      // The path comes from the server: relative, and never out of `dest`.
      const fs::path rel(c.path());
      bool safe = !c.path().empty() && rel.is_relative();
      for (const auto& part : rel) safe = safe && part != ".." && part != ".";
      if (!safe) return fail("the coordinator sent an unsafe path '" + c.path() + "'; refused");
      current = c.path();
      std::error_code ec;
      fs::create_directories((dest / rel).parent_path(), ec);
      out.open(dest / rel, std::ios::binary | std::ios::trunc);
      if (!out) return fail("cannot write " + (dest / rel).string());
      sha = std::make_unique<common::Sha256Stream>();
      written = 0;
    }
    if (c.offset() != written) return fail(current + ": chunks out of order");
    out.write(c.data().data(), static_cast<std::streamsize>(c.data().size()));
    sha->Update(c.data());
    written += static_cast<int64_t>(c.data().size());
    if (c.last()) {
      out.close();
      if (!out) return fail("cannot write " + (dest / current).string());
      if (sha->HexDigest() != c.sha256() || written != c.size()) {
        return fail(current + ": SHA-256 or size mismatch; the file was removed");
      }
      ++files;
      total += written;
      current.clear();
    }
  }
  const grpc::Status s = reader->Finish();
  if (!s.ok()) {
    out.close();
    if (!current.empty()) fs::remove(dest / current);
    return Fail(s, o_.coordinator);
  }
  if (!current.empty()) return fail(current + ": the stream ended mid-file");
  std::cout << "wrote " << files << " files (" << total << " bytes, SHA-256 checked) to " << dest.string() << "\n";
  return 0;
}

int Client::Workers() {
  v1::ListWorkersRequest req;
  v1::ListWorkersResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx, false);
  if (auto s = stub_->ListWorkers(&ctx, req, &resp); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output != "table") {
    Print(resp, o_.output);
    return 0;
  }
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::printf("%-24s %-24s %5s %5s %-5s %10s  %s\n", "WORKER", "HOST", "CPUS", "GPUS", "STATE", "HEARTBEAT", "JOBS");
  for (const auto& w : resp.workers()) {
    std::string jobs;
    for (const auto& j : w.jobs()) jobs += (jobs.empty() ? "" : ",") + j;
    const std::string state = v1::WorkerStatus::State_Name(w.state());
    std::printf("%-24s %-24s %5d %5d %-5s %8.1fs  %s\n", w.worker_id().c_str(), w.host().c_str(), w.cpus(), w.gpus(),
                state.c_str(), (now_ms - w.last_heartbeat_unix_ms()) / 1000.0, jobs.empty() ? "-" : jobs.c_str());
  }
  return 0;
}

}  // namespace attune::cli
