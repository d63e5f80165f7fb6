#include "cli/sweeps.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/rpc/job_spec.h"

namespace attune::cli {
namespace {

std::string ValueText(const google::protobuf::Value& v) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(v, &out);
  return out;
}

// "RUNNING", "SUCCEEDED", ...: the enum's name without its SWEEP_ prefix.
std::string StateText(v1::SweepState state) {
  std::string name = v1::SweepState_Name(state);
  return name.rfind("SWEEP_", 0) == 0 ? name.substr(6) : name;
}

std::string TrialState(const v1::Trial& t) {
  if (t.stopped_early() && t.state() == v1::CANCELLED) return "STOPPED_EARLY";
  return v1::JobState_Name(t.state());
}

void PrintTable(const v1::Sweep& s) {
  std::printf("sweep %s %s %s%s%s\n", s.id().c_str(), s.spec().name().c_str(), StateText(s.state()).c_str(),
              s.message().empty() ? "" : ": ", s.message().c_str());
  std::vector<std::string> paths;
  for (const auto& [p, _] : s.spec().parameters()) paths.push_back(p);
  std::sort(paths.begin(), paths.end());
  std::printf("%-5s %-20s %-13s", "TRIAL", "JOB", "STATE");
  for (const auto& p : paths) std::printf(" %-14s", p.substr(p.rfind('.') + 1).substr(0, 14).c_str());
  std::printf(" %10s %6s\n", s.spec().objective().metric().substr(0, 10).c_str(), "STEPS");
  for (const auto& t : s.trials()) {
    std::printf("%-5lld %-20s %-13s", static_cast<long long>(t.trial()), t.job_id().c_str(), TrialState(t).c_str());
    for (const auto& p : paths) {
      auto it = t.parameters().find(p);
      std::string v = it == t.parameters().end() ? "-" : ValueText(it->second);
      if (it != t.parameters().end() && it->second.has_number_value()) v = absl::StrFormat("%.4g", it->second.number_value());
      if (it != t.parameters().end() && it->second.has_string_value()) v = it->second.string_value();
      std::printf(" %-14s", v.substr(0, 14).c_str());
    }
    std::printf(" %10s %6lld\n", t.has_objective() ? absl::StrFormat("%.4f", t.objective()).c_str() : "-",
                static_cast<long long>(t.steps()));
  }
  std::printf("trial-steps %lld\n", static_cast<long long>(s.trial_steps()));
  if (s.has_best()) {
    std::printf("best: trial %lld, %s %.4f, model %s\n", static_cast<long long>(s.best().trial()),
                s.spec().objective().metric().c_str(), s.best().objective(), s.best().model_dir().c_str());
  }
}

bool Terminal(v1::SweepState s) {
  return s == v1::SWEEP_SUCCEEDED || s == v1::SWEEP_FAILED || s == v1::SWEEP_CANCELLED;
}

}  // namespace

nlohmann::json SweepDocument(const v1::Sweep& s) {
  nlohmann::json trials = nlohmann::json::array();
  for (const auto& t : s.trials()) {
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [p, v] : t.parameters()) params[p] = nlohmann::json::parse(ValueText(v), nullptr, false);
    trials.push_back({{"trial", t.trial()},
                      {"job_id", t.job_id()},
                      {"parameters", params},
                      {"state", TrialState(t)},
                      {"objective", t.has_objective() ? nlohmann::json(t.objective()) : nlohmann::json(nullptr)},
                      {"best_objective", t.has_best_objective() ? nlohmann::json(t.best_objective()) : nlohmann::json(nullptr)},
                      {"steps", t.steps()},
                      {"stopped_early", t.stopped_early()},
                      {"stopped_reason", t.stopped_reason()},
                      {"message", t.message()}});
  }
  nlohmann::json best = nullptr;
  if (s.has_best()) {
    best = {{"trial", s.best().trial()}, {"objective", s.best().objective()}, {"model_dir", s.best().model_dir()},
            {"job_id", s.best().job_id()}};
  }
  return {{"id", s.id()},
          {"name", s.spec().name()},
          {"owner", s.owner()},
          {"state", StateText(s.state())},
          {"message", s.message()},
          {"objective", {{"metric", s.spec().objective().metric()}, {"goal", s.spec().objective().goal()}}},
          {"trial_steps", s.trial_steps()},
          {"trials", trials},
          {"best", best}};
}

SweepClient::SweepClient(const ClientOptions& o) : o_(o), stub_(v1::SweepService::NewStub(MakeChannel(o))) {}

int SweepClient::Submit(const std::string& file, bool watch, const std::string& key) {
  auto text = common::ReadFile(file, 1 << 20);
  if (!text.ok()) {
    std::cerr << "attune: " << text.status() << "\n";
    return 2;
  }
  auto spec = common::ParseSweepSpec(*text, file);
  if (!spec.ok()) {
    std::cerr << "attune: " << spec.status() << "\n";
    return 3;
  }
  AbsolutizePaths(spec->mutable_spec());
  v1::SubmitSweepRequest req;
  *req.mutable_spec() = *spec;
  std::string idem = key;
  if (idem.empty()) {
    std::random_device rd;
    idem = absl::StrFormat("cli-%08x%08x", rd(), rd());
  }
  req.set_idempotency_key(idem);
  v1::Sweep sweep;
  grpc::Status s;
  // Retried only when unavailable, with the same key, within --timeout_s in all.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(o_.timeout_s);
  for (int attempt = 0; attempt < 5; ++attempt) {
    grpc::ClientContext ctx;
    PrepareContext(o_, &ctx, false);
    s = stub_->SubmitSweep(&ctx, req, &sweep);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    const auto pause = std::chrono::milliseconds(500 << attempt);
    if (std::chrono::steady_clock::now() + pause >= give_up) break;
    std::this_thread::sleep_for(pause);
  }
  if (!s.ok()) return Fail(s, o_.coordinator);
  // As `attune submit`: the id alone for a table, or the whole document
  // (only it, so that it parses).
  if (o_.output == "table") {
    std::cout << sweep.id() << std::endl;
  } else {
    PrintDocument(SweepDocument(sweep), o_.output);
  }
  return watch ? Watch(sweep.id()) : 0;
}

int SweepClient::Get(const std::string& id) {
  v1::GetSweepRequest req;
  req.set_sweep_id(id);
  v1::Sweep sweep;
  grpc::ClientContext ctx;
  PrepareContext(o_, &ctx, false);
  if (auto s = stub_->GetSweep(&ctx, req, &sweep); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") {
    PrintTable(sweep);
  } else {
    PrintDocument(SweepDocument(sweep), o_.output);
  }
  return 0;
}

int SweepClient::List() {
  v1::ListSweepsResponse resp;
  grpc::ClientContext ctx;
  PrepareContext(o_, &ctx, false);
  if (auto s = stub_->ListSweeps(&ctx, v1::ListSweepsRequest(), &resp); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output != "table") {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& s : resp.sweeps()) all.push_back(SweepDocument(s));
    PrintDocument({{"sweeps", all}}, o_.output);
    return 0;
  }
  std::printf("%-20s %-24s %-11s %7s %10s  %s\n", "ID", "NAME", "STATE", "TRIALS", "BEST", "OBJECTIVE");
  for (const auto& s : resp.sweeps()) {
    std::printf("%-20s %-24s %-11s %7d %10s  %s\n", s.id().c_str(), s.spec().name().substr(0, 24).c_str(),
                StateText(s.state()).c_str(), s.trials_size(),
                s.has_best() ? absl::StrFormat("%.4f", s.best().objective()).c_str() : "-",
                s.spec().objective().metric().c_str());
  }
  return 0;
}

int SweepClient::Cancel(const std::string& id) {
  v1::CancelSweepRequest req;
  req.set_sweep_id(id);
  v1::Sweep sweep;
  grpc::ClientContext ctx;
  PrepareContext(o_, &ctx, false);
  if (auto s = stub_->CancelSweep(&ctx, req, &sweep); !s.ok()) return Fail(s, o_.coordinator);
  if (o_.output == "table") {
    std::cout << sweep.id() << " " << StateText(sweep.state()) << "\n";
  } else {
    PrintDocument(SweepDocument(sweep), o_.output);
  }
  return 0;
}

int SweepClient::Watch(const std::string& id) {
  v1::Sweep last;
  std::map<int64_t, std::string> shown;  // trial -> the state last printed
  for (int reconnects = 0; reconnects < 30; ++reconnects) {
    v1::WatchSweepRequest req;
    req.set_sweep_id(id);
    grpc::ClientContext ctx;
    PrepareContext(o_, &ctx, true);
    auto reader = stub_->WatchSweep(&ctx, req);
    v1::Sweep s;
    while (reader->Read(&s)) {
      last = s;
      if (o_.output != "table") {
        std::cout << SweepDocument(s).dump() << std::endl;
        continue;
      }
      for (const auto& t : s.trials()) {
        const std::string state = TrialState(t);
        if ((t.job_id().empty() && t.state() != v1::FAILED) || shown[t.trial()] == state) continue;
        shown[t.trial()] = state;
        std::printf("trial %lld %s %s%s\n", static_cast<long long>(t.trial()), t.job_id().c_str(), state.c_str(),
                    t.stopped_early() ? (": " + t.stopped_reason()).c_str()
                    : t.has_objective() && t.state() == v1::SUCCEEDED
                        ? absl::StrFormat(": %s %.4f", s.spec().objective().metric(), t.objective()).c_str()
                    : !t.message().empty() ? (": " + t.message()).c_str()
                                           : "");
        std::fflush(stdout);
      }
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) break;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return Fail(st, o_.coordinator);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // coordinator restarting
  }
  if (o_.output == "table") PrintTable(last);
  if (!Terminal(last.state())) return 1;
  return last.state() == v1::SWEEP_SUCCEEDED ? 0 : 1;
}

}  // namespace attune::cli
