// attune-coordinator: the gRPC control plane.
//
//   attune-coordinator --listen HOST:PORT --state FILE [--data-root DIR]
//                      [--heartbeat-timeout-s 10]

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <memory>
#include <vector>
#include <chrono>
#include <iostream>
#include <set>
#include <thread>

#include <glog/logging.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/flags_compat.h"
#include "common/metrics.h"
#include "common/process_stats.h"
#include "common/prometheus/prometheus_metrics.h"
#include "common/rpc/tls.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_store.h"
#include "coordinator/rpc/services.h"
#include "coordinator/rpc/sweep_service.h"
#include "coordinator/sweep/sweep_manager.h"
#include "coordinator/sweep/trial_jobs.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "address to serve gRPC on");
ABSL_FLAG(std::string, state, "attune-state.db", "SQLite state file (WAL)");
ABSL_FLAG(std::string, data_root, "", "when set, every path in a job spec must resolve inside this directory");
ABSL_FLAG(int, heartbeat_timeout_s, 10, "a worker that misses heartbeats this long is lost");
ABSL_FLAG(int, restart_backoff_ms, 1000, "first restart backoff; doubles per restart, capped at 30 s");
ABSL_FLAG(std::string, submit_token_file, "", "tokens (one per line) allowed to use the job API");
ABSL_FLAG(std::string, worker_token_file, "", "tokens allowed to use the worker API");
ABSL_FLAG(std::string, admin_token_file, "", "tokens allowed to use both APIs");
ABSL_FLAG(std::string, metrics_listen, "", "serve Prometheus metrics at http://HOST:PORT/metrics");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA: require client certificates signed by it (mTLS)");
ABSL_FLAG(std::string, health_listen, "",
          "also serve only grpc.health.v1 in plaintext here (for Kubernetes probes when --listen uses TLS)");
ABSL_FLAG(int, max_message_mb, 16, "gRPC send and receive message size limit");
ABSL_FLAG(int, max_workers, 10000, "registered workers held at most; a new worker id beyond it is refused");
ABSL_FLAG(int, max_queued_jobs_per_owner, 100,
          "queued jobs one submitter may hold (0: no limit); a submit beyond it is RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_queued_spec_mb_per_owner, 16,
          "MiB of spec one submitter's queued jobs may hold (0: no limit); a submit beyond it is RESOURCE_EXHAUSTED");
ABSL_FLAG(int, registrations_per_s, 100, "Register calls served per second (a burst of 5 s worth); more are asked to retry");
ABSL_FLAG(bool, certificate_identities, false,
          "with --tls-client-ca: a caller is who its client certificate names; a worker may only use a worker id "
          "its certificate names, and a job's owner is the certificate's CN");
ABSL_FLAG(bool, certificate_roles, false,
          "with --certificate-identities: a client certificate whose subject has O=attune:submit, attune:worker or "
          "attune:admin has that role without a token; one naming no role falls back to the bearer token");
ABSL_FLAG(bool, grpc_reflection, false,
          "serve gRPC server reflection (for grpcurl); it answers without a token, so it is off unless asked for");

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }
}  // namespace

namespace {

// The coordinator's own series, refreshed once a second.
void ExportClusterStats(const attune::coordinator::JobManager::ClusterStats& st, attune::common::Metrics& m,
                        int64_t* restarts_seen, std::set<std::string>* workers_exported) {
  static const char* kStates[] = {"VALIDATING", "QUEUED",    "SCHEDULED", "RUNNING",  "RECOVERING",
                                  "CANCELLING", "SUCCEEDED", "FAILED",    "CANCELLED", "UNSCHEDULABLE"};
  int waiting = 0;
  for (int i = 1; i <= 10; ++i) {
    const auto state = static_cast<attune::coordinator::JobState>(i);
    auto it = st.jobs.find(state);
    const int n = it == st.jobs.end() ? 0 : it->second;
    m.SetGauge("attune_coordinator_jobs", "jobs known to the coordinator, by state", {{"state", kStates[i - 1]}}, n);
    if (state == attune::coordinator::JobState::kQueued || state == attune::coordinator::JobState::kRecovering) {
      waiting += n;
    }
  }
  m.SetGauge("attune_coordinator_queue_depth", "jobs waiting for workers (QUEUED or RECOVERING)", {}, waiting);
  m.SetGauge("attune_coordinator_workers", "registered workers by state", {{"state", "idle"}}, st.workers_idle);
  m.SetGauge("attune_coordinator_workers", "registered workers by state", {{"state", "busy"}}, st.workers_busy);
  m.SetGauge("attune_coordinator_workers", "registered workers by state", {{"state", "lost"}}, st.workers_lost);
  std::set<std::string> now;
  for (const auto& [worker, age] : st.heartbeat_age_seconds) {
    m.SetGauge("attune_coordinator_worker_heartbeat_age_seconds", "seconds since the worker's last heartbeat",
               {{"worker", worker}}, age);
    now.insert(worker);
  }
  for (const auto& gone : *workers_exported) {
    if (!now.count(gone)) m.Forget({{"worker", gone}});  // forgotten by the coordinator
  }
  workers_exported->swap(now);
  // Restarts are stored per job, so the total survives a coordinator restart;
  // the counter counts the ones seen by this process.
  if (*restarts_seen < 0) *restarts_seen = st.restarts;
  m.AddCounter("attune_coordinator_job_restarts_total", "job attempts restarted after a failure", {},
               static_cast<double>(std::max<int64_t>(0, st.restarts - *restarts_seen)));
  *restarts_seen = std::max(*restarts_seen, st.restarts);
  for (const auto& [reason, n] : st.refused_reports) {
    m.AddCounter("attune_coordinator_refused_reports_total",
                 "worker calls refused: reports for a job that does not exist or a rank not assigned to that worker, "
                 "registrations taking a live worker's id or over the rate or worker limit, calls without the worker's "
                 "session, stops blamed on a coordinator outage that the coordinator did not see",
                 {{"reason", reason}}, static_cast<double>(n));
  }
  m.AddCounter("attune_coordinator_outage_resumes_total",
               "job attempts that agents stopped while the coordinator was unreachable, resumed from their last "
               "checkpoint without spending a restart",
               {}, static_cast<double>(st.outage_resumes));
  for (double secs : st.scheduling_seconds) {
    m.Observe("attune_coordinator_scheduling_latency_seconds",
              "time from a job becoming eligible (queued, or its restart backoff over) to its placement", {},
              {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}, secs);
  }
}

// attune_sweep_*: each sweep's trials by state, its best objective so far,
// its trials stopped early, and each trial's latest objective.
void ExportSweepStats(const std::vector<attune::coordinator::sweep::SweepRecord>& sweeps, attune::common::Metrics& m) {
  using attune::coordinator::JobState;
  for (const auto& s : sweeps) {
    std::map<std::string, int> by_state = {{"pending", 0}, {"running", 0}, {"succeeded", 0},
                                           {"failed", 0},  {"cancelled", 0}, {"stopped_early", 0}};
    int stopped = 0;
    for (const auto& t : s.trials) {
      stopped += t.stopped_early;
      std::string state = t.stopped_early && t.terminal          ? "stopped_early"
                          : t.state == JobState::kSucceeded     ? "succeeded"
                          : t.state == JobState::kFailed        ? "failed"
                          : t.state == JobState::kCancelled     ? "cancelled"
                          : t.state == JobState::kRunning || t.state == JobState::kRecovering ||
                                  t.state == JobState::kScheduled || t.state == JobState::kCancelling
                              ? "running"
                              : "pending";
      ++by_state[state];
      double v = 0;
      if (attune::coordinator::sweep::TrialObjective(t, &v)) {
        m.SetGauge("attune_sweep_trial_objective", "a trial's objective: its exported model's, else its last evaluation's",
                   {{"sweep_id", s.id}, {"trial", std::to_string(t.index)}}, v);
      }
    }
    for (const auto& [state, n] : by_state) {
      m.SetGauge("attune_sweep_trials", "a sweep's trials by state", {{"sweep_id", s.id}, {"state", state}}, n);
    }
    m.SetGauge("attune_sweep_trials_stopped_early", "a sweep's trials stopped early (ASHA or median)",
               {{"sweep_id", s.id}}, stopped);
    if (s.best_trial >= 0) {
      m.SetGauge("attune_sweep_best_objective", "the best completed trial's objective", {{"sweep_id", s.id}},
                 s.best_objective);
    }
  }
}

}  // namespace

// Linking gRPC's reflection library registers its plugin with every server
// builder (a static initialiser); this option takes it out again, so that
// reflection, which answers without a token, is served only when asked for.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const auto& p) { return p->name() == "proto_server_reflection"; }),
                   plugins->end());
  }
};

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  absl::SetProgramUsageMessage("attune-coordinator --listen HOST:PORT --state FILE [--data-root DIR]");
  if (attune::common::WantsHelp(argc, argv)) {
    std::cout << "usage: attune-coordinator --listen HOST:PORT --state FILE [--data-root DIR]\n"
              << "examples:\n"
                 "  attune-coordinator --listen 127.0.0.1:50051 --state attune.db --data-root \"$PWD\"\n"
                 "  attune-coordinator --listen 0.0.0.0:50051 --state /var/lib/attune/state.db --data-root /data \\\n"
                 "      --submit-token-file submit.tokens --worker-token-file worker.tokens --metrics-listen 0.0.0.0:9464\n"
              << attune::common::FlagsHelp();
    return 0;
  }
  std::vector<std::string> storage;
  auto args = attune::common::DashesToUnderscores(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (std::string bad = attune::common::CheckFlagRanges(
          {{"heartbeat_timeout_s", 1, 3600}, {"restart_backoff_ms", 0, 3'600'000}, {"max_message_mb", 1, 1024},
           {"max_workers", 1, 1'000'000}, {"registrations_per_s", 1, 100'000},
           {"max_queued_jobs_per_owner", 0, 1'000'000}, {"max_queued_spec_mb_per_owner", 0, 1 << 20}});
      !bad.empty()) {
    std::cerr << "attune-coordinator: " << bad << "\n";
    return 2;
  }
  for (const auto& [flag, may_be_empty] : {std::pair<const char*, bool>{"listen", false},
                                           {"metrics_listen", true},
                                           {"health_listen", true}}) {
    if (std::string bad = attune::common::CheckListenFlag(flag, may_be_empty); !bad.empty()) {
      std::cerr << "attune-coordinator: " << bad << "\n";
      return 2;
    }
  }

  // Composition root: members in dependency order (store, manager, services, server).
  auto store = attune::coordinator::JobStore::Open(absl::GetFlag(FLAGS_state));
  if (!store.ok()) {
    std::cerr << "attune-coordinator: " << store.status() << "\n";
    return 1;
  }
  attune::coordinator::ManagerOptions mo;
  mo.heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout_s));
  mo.restart_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_restart_backoff_ms));
  mo.data_root = absl::GetFlag(FLAGS_data_root);
  mo.max_workers = static_cast<size_t>(absl::GetFlag(FLAGS_max_workers));
  mo.max_queued_jobs_per_owner = static_cast<size_t>(absl::GetFlag(FLAGS_max_queued_jobs_per_owner));
  mo.max_queued_spec_bytes_per_owner = static_cast<size_t>(absl::GetFlag(FLAGS_max_queued_spec_mb_per_owner)) << 20;
  attune::coordinator::JobManager manager(**store, mo);
  if (auto s = manager.Recover(); !s.ok()) {
    std::cerr << "attune-coordinator: " << s << "\n";
    return 1;
  }
  attune::coordinator::sweep::JobManagerTrialJobs trial_jobs(manager, attune::coordinator::rpc::MakeSpecCompiler());
  attune::coordinator::sweep::SweepManager sweeps(**store, trial_jobs, {mo.data_root});
  if (auto s = sweeps.Recover(); !s.ok()) {
    std::cerr << "attune-coordinator: " << s << "\n";
    return 1;
  }
  auto auth = attune::coordinator::rpc::TokenAuthorizer::FromFiles({{"submit", absl::GetFlag(FLAGS_submit_token_file)},
                                                                   {"worker", absl::GetFlag(FLAGS_worker_token_file)},
                                                                   {"admin", absl::GetFlag(FLAGS_admin_token_file)}});
  if (!auth.ok()) {
    std::cerr << "attune-coordinator: " << auth.status() << "\n";
    return 1;
  }
  if (absl::GetFlag(FLAGS_certificate_identities)) {
    if (absl::GetFlag(FLAGS_tls_client_ca).empty()) {
      std::cerr << "attune-coordinator: --certificate-identities needs --tls-client-ca (mutual TLS)\n";
      return 2;
    }
    auth->set_certificate_identities(true);
  }
  if (absl::GetFlag(FLAGS_certificate_roles)) {
    if (!absl::GetFlag(FLAGS_certificate_identities)) {
      std::cerr << "attune-coordinator: --certificate-roles needs --certificate-identities (and so mutual TLS)\n";
      return 2;
    }
    auth->set_certificate_roles(true);
  }
  auto served = attune::common::PrometheusMetrics::ServeIfSet(absl::GetFlag(FLAGS_metrics_listen));
  if (!served.ok()) {
    std::cerr << "attune-coordinator: " << served.status() << "\n";
    return 1;
  }
  std::unique_ptr<attune::common::Metrics> metrics = std::move(*served);
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    LOG(INFO) << "metrics at http://" << absl::GetFlag(FLAGS_metrics_listen) << "/metrics";
  }
  attune::coordinator::rpc::JobServiceImpl jobs(manager, *auth, *metrics);
  attune::coordinator::rpc::WorkerServiceImpl workers(manager, *auth, *metrics, absl::GetFlag(FLAGS_registrations_per_s));
  attune::coordinator::rpc::SweepServiceImpl sweep_service(sweeps, *auth, *metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto creds = attune::common::MakeServerCredentials(
      {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)});
  if (!creds.ok()) {
    std::cerr << "attune-coordinator: " << creds.status() << "\n";
    return 2;
  }
  grpc::ServerBuilder builder;
  if (!absl::GetFlag(FLAGS_grpc_reflection)) builder.SetOption(std::make_unique<WithoutReflection>());
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *creds, &port);
  const int limit = absl::GetFlag(FLAGS_max_message_mb) << 20;
  builder.SetMaxReceiveMessageSize(limit);
  // Agents and watchers keep idle connections alive through proxies with
  // pings every 10 s; accept them rather than answering GOAWAY too_many_pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.SetMaxSendMessageSize(limit);
  builder.RegisterService(&jobs);
  builder.RegisterService(&workers);
  builder.RegisterService(&sweep_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "attune-coordinator: cannot listen on " << absl::GetFlag(FLAGS_listen) << "\n";
    return 1;
  }
  LOG(INFO) << "attune-coordinator serving on port " << port << ", state " << absl::GetFlag(FLAGS_state)
            << (mo.data_root.empty() ? "" : ", data root " + mo.data_root)
            << (auth->enabled() ? ", bearer tokens required" : ", no authentication")
            << (absl::GetFlag(FLAGS_tls_cert).empty() ? ", plaintext"
                : absl::GetFlag(FLAGS_tls_client_ca).empty() ? ", TLS" : ", mutual TLS");
  // The kubelet probes in plaintext without tokens: a second server that
  // carries nothing but the default health service.
  std::unique_ptr<grpc::Server> health_server;
  // The default health service runs on its own completion queue, but gRPC
  // builds a server only if something polls one: with no sync service here,
  // this queue (never given work) and its thread do.
  std::unique_ptr<grpc::ServerCompletionQueue> health_cq;
  std::thread health_poller;
  if (!absl::GetFlag(FLAGS_health_listen).empty()) {
    grpc::ServerBuilder hb;
    if (!absl::GetFlag(FLAGS_grpc_reflection)) hb.SetOption(std::make_unique<WithoutReflection>());
    int hport = 0;
    hb.AddListeningPort(absl::GetFlag(FLAGS_health_listen), grpc::InsecureServerCredentials(), &hport);
    health_cq = hb.AddCompletionQueue(/*is_frequently_polled=*/true);
    health_server = hb.BuildAndStart();
    if (!health_server || hport == 0) {
      std::cerr << "attune-coordinator: cannot listen on " << absl::GetFlag(FLAGS_health_listen) << "\n";
      std::_Exit(1);
    }
    health_poller = std::thread([cq = health_cq.get()] {
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) {
      }
    });
    LOG(INFO) << "health checks (plaintext) on port " << hport;
  }
  std::cout << "listening on port " << port << std::endl;
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  metrics->SetGauge("attune_build_info", "always 1; labels give the build",
                    {{"version", ATTUNE_VERSION}, {"component", "coordinator"}}, 1);
  int ticks = 0;
  int64_t restarts_seen = -1;
  double cpu_reported = 0;
  std::set<std::string> workers_exported;
  while (!g_stop.load()) {
    manager.Tick();
    sweeps.Tick();  // after the job manager's tick, without its lock
    if (++ticks % 5 == 0) {
      ExportClusterStats(manager.TakeStats(), *metrics, &restarts_seen, &workers_exported);
      ExportSweepStats(sweeps.List(), *metrics);
      attune::common::ExportOwnProcessStats(*metrics, &cpu_reported);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  LOG(INFO) << "attune-coordinator shutting down";
  // Probes see NOT_SERVING first; then RPCs drain and Watch streams end.
  server->GetHealthCheckService()->Shutdown();
  if (health_server) health_server->GetHealthCheckService()->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (health_cq) health_cq->Shutdown();
  if (health_poller.joinable()) health_poller.join();
  return 0;
}
