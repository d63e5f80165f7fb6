// The real attune-coordinator, attune-worker agents and attune CLI on
// loopback: jobs run to SUCCEEDED, are cancelled, rejected, recovered after a
// trainer or coordinator is killed, and fail when the restart budget is spent.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "common/task_catalog.h"
#include "tests/testing/json_lines.h"
#include "tests/testing/process.h"
#include "tests/testing/task_data.h"
#include "tests/testing/tcp_proxy.h"

namespace attune {
namespace {

using testing::Bin;
using testing::RunCommand;
using testing::FreePort;
using testing::Spawn;
using testing::TempDir;

// proto3 JSON writes int64 as a string.
int64_t Int(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return -1;
  const auto& v = j[key];
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
}

// A pgrep/pkill pattern for this test's trainers that does not match the
// shell running pgrep itself ("[a]" matches "a" but not "[a]").
std::string TrainerPattern(const std::string& dir, const std::string& extra = "") {
  return "'[a]ttune-worker train --spec " + dir + extra + "'";
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
}

// Kills and reaps a process when the test leaves its scope.
struct Reaper {
  pid_t pid;
  ~Reaper() { KillAndReap(pid); }
};

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() : dir_("svc_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    port_ = FreePort();
    addr_ = "127.0.0.1:" + std::to_string(port_);
    std::mt19937 rng(7);
    std::ostringstream train, valid;
    train << "text,label\n";
    valid << "text,label\n";
    const char* pos[] = {"great", "lovely", "tasty", "superb"};
    const char* neg[] = {"awful", "stale", "bland", "broken"};
    for (int i = 0; i < 400; ++i) {
      const char* w = i % 2 ? pos[rng() % 4] : neg[rng() % 4];
      (i < 320 ? train : valid) << "the food was " << w << " number " << i << "," << (i % 2 ? "pos" : "neg") << "\n";
    }
    testing::WriteText(dir_ / "train.csv", train.str());
    testing::WriteText(dir_ / "valid.csv", valid.str());
  }
  ~ServiceTest() override {
    for (pid_t p : agents_) KillAndReap(p);
    KillAndReap(coordinator_);
    RunCommand("pkill -9 -f " + TrainerPattern(dir_.path()) + " || true");
  }

  void StartCoordinator(const std::string& extra = "") {
    coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                             " --heartbeat-timeout-s 3 --restart-backoff-ms 200 --data-root " + dir_.path() + " " + extra,
                         dir_ / "coordinator.log");
    WaitForPort();
  }
  void StartCoordinatorWithTokens(const std::string& extra = "") {
    coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                             " --data-root " + dir_.path() + " --submit-token-file " + (dir_ / "submit.tokens") +
                             " --worker-token-file " + (dir_ / "worker.tokens") + " " + extra,
                         dir_ / "coordinator.log");
    WaitForPort(" --token_file " + (dir_ / "submit.tokens"));
  }
  // Until `attune list` answers, with the client flags given (a token, a certificate).
  void WaitForPort(const std::string& client = "") {
    for (int i = 0; i < 100; ++i) {
      if (RunCommand(Bin("attune") + " list --coordinator " + addr_ + " --timeout_s 1" + client).exit_code == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "coordinator did not come up: " << testing::ReadText(dir_ / "coordinator.log");
  }
  // Client flags presenting `who`'s certificate (MakeCertificates) under mutual TLS.
  std::string TlsClient(const std::string& who) const {
    const std::string d = dir_.path();
    return " --tls-ca " + d + "/ca.pem --tls-cert " + d + "/" + who + ".pem --tls-key " + d + "/" + who + ".key";
  }
  // Agents confine jobs to the test's directory, as the coordinator does,
  // unless the test gives its own --data-root.
  std::string Confinement(const std::vector<std::string>& extra, int i) const {
    if (i < static_cast<int>(extra.size()) && extra[i].find("--data-root") != std::string::npos) return "";
    return "--data-root " + dir_.path() + " ";
  }
  void StartAgents(int n, const std::vector<std::string>& extra = {}) {
    for (int i = 0; i < n; ++i) {
      std::string id = "w" + std::to_string(i);
      agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id " + id +
                                  " --cpus 1 --work-dir " + (dir_ / ("agent-" + id)) + " " + Confinement(extra, i) +
                                  (i < static_cast<int>(extra.size()) ? extra[i] : ""),
                              dir_ / ("agent-" + id + ".log")));
    }
  }
  // Submits a long one-rank job that checkpoints every 20 steps and returns
  // it once RUNNING past `min_step` (or as it is after 60 s).
  nlohmann::json SubmitLongOneRankJob(const std::string& name, int min_step) {
    std::string spec = testing::ReadText(Spec(name, 200000, 3, 20));
    spec.replace(spec.find("workers: {count: 2}"), 19, "workers: {count: 1}");
    testing::WriteText(dir_ / (name + "1.yaml"), spec);
    const std::string id = Submit(dir_ / (name + "1.yaml"));
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    nlohmann::json j;
    while (std::chrono::steady_clock::now() < until) {
      j = GetJob(id);
      if (j.value("state", "") == "RUNNING" && j.contains("progress") && Int(j["progress"], "step") >= min_step) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return j;
  }
  std::string Spec(const std::string& name, int steps, int max_restarts, int ckpt_every = 0,
                   const std::string& extra = "") {
    std::string s = "name: " + name +
                    "\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
                    "intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 100\n"
                    "data: {train: " + (dir_ / "train.csv") + ", validation: " + (dir_ / "valid.csv") +
                    ", max_length: 24}\nmethod: {type: full}\n"
                    "hyperparameters: {epochs: 100, max_steps: " + std::to_string(steps) +
                    ", batch_size: 4, learning_rate: 5.0e-3}\n"
                    "evaluation: {every_steps: 20}\ncheckpoint: {every_steps: " + std::to_string(ckpt_every) +
                    "}\nworkers: {count: 2}\nmax_restarts: " + std::to_string(max_restarts) +
                    "\noutput_dir: " + (dir_ / ("out-" + name)) + "\n" + extra;
    std::string path = dir_ / (name + ".yaml");
    testing::WriteText(path, s);
    return path;
  }
  // Spec() with one rank.
  std::string OneRankSpec(const std::string& name, int steps) {
    const std::string spec = Spec(name, steps, 0);
    std::string text = testing::ReadText(spec);
    text.replace(text.find("workers: {count: 2}"), 19, "workers: {count: 1}");
    testing::WriteText(spec, text);
    return spec;
  }
  testing::CommandResult Cli(const std::string& args, int timeout_s = 120) {
    return RunCommand(Bin("attune") + " " + args + " --coordinator " + addr_, timeout_s);
  }
  nlohmann::json GetJob(const std::string& id) {
    auto r = Cli("get " + id + " -o json");
    if (r.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(r.output, nullptr, false);
  }
  std::string Submit(const std::string& spec) {
    auto r = Cli("submit -f " + spec);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string id = r.output.substr(0, r.output.find('\n'));
    return id;
  }
  // Waits until the job's state is `state` (or the limit passes).
  bool WaitState(const std::string& id, const std::string& state, int limit_s) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
    while (std::chrono::steady_clock::now() < until) {
      auto j = GetJob(id);
      if (j.is_object() && j.value("state", "") == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  int TrainersRunning() {
    auto r = RunCommand("pgrep -f " + TrainerPattern(dir_.path()) + " | wc -l");
    return std::stoi(r.output);
  }

  TempDir dir_;
  int port_ = 0;
  std::string addr_;
  pid_t coordinator_ = -1;
  std::vector<pid_t> agents_;
};

TEST_F(ServiceTest, EveryTaskRunsThroughTheService) {
  StartCoordinator();
  StartAgents(2);
  testing::WriteMultiLabelData(dir_ / "ml_train.jsonl", 120, 1);
  testing::WriteMultiLabelData(dir_ / "ml_valid.jsonl", 30, 2);
  testing::WriteRegressionData(dir_ / "rg_train.csv", 120, 1);
  testing::WriteRegressionData(dir_ / "rg_valid.csv", 30, 2);
  testing::WriteNerData(dir_ / "ner_train.jsonl", 120, 1);
  testing::WriteNerData(dir_ / "ner_valid.conll", 30, 2);
  struct Case {
    std::string task, train, valid, column, objective;
  };
  for (const Case& c : {Case{"multi_label_classification", "ml_train.jsonl", "ml_valid.jsonl", "topics", "micro_f1"},
                        Case{"sequence_regression", "rg_train.csv", "rg_valid.csv", "score", "mse"},
                        Case{"masked_lm", "ml_train.jsonl", "ml_valid.jsonl", "", "perplexity"},
                        Case{"token_classification", "ner_train.jsonl", "ner_valid.conll", "tags", "f1"}}) {
    SCOPED_TRACE(c.task);
    const std::string name = c.task.substr(0, c.task.find('_'));
    const std::string spec =
        "name: " + name + "\ntask: {type: " + c.task +
        "}\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, "
        "max_position_embeddings: 64}\n  vocab_size: 100\ndata: {train: " + (dir_ / c.train) + ", validation: " +
        (dir_ / c.valid) + (c.column.empty() ? "" : ", label_column: " + c.column) +
        (c.column == "tags" ? ", text_column: words" : "") +
        ", max_length: 24}\nhyperparameters: {epochs: 2, batch_size: 4, learning_rate: 5.0e-3}\n"
        "evaluation: {every_steps: 10, early_stopping: {patience: 5}}\nworkers: {count: 2}\noutput_dir: " +
        (dir_ / ("out-" + name)) + "\n";
    testing::WriteText(dir_ / (name + ".yaml"), spec);
    auto r = Cli("submit -f " + (dir_ / (name + ".yaml")) + " --watch", 240);
    ASSERT_EQ(r.exit_code, 0) << r.output << testing::ReadText(dir_ / "coordinator.log");
    EXPECT_NE(r.output.find("SUCCEEDED"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.objective + " "), std::string::npos) << r.output;  // the watch line's headline
    const std::string id = r.output.substr(0, r.output.find('\n'));
    auto j = GetJob(id);
    EXPECT_EQ(j["spec"]["task"]["type"], c.task);
    // The job's last evaluation is the exported model's, as the report has it.
    auto report = nlohmann::json::parse(testing::ReadText(dir_ / ("out-" + name + "/eval_report.json")));
    EXPECT_EQ(report["task"], c.task);
    const auto* info = common::FindTask(c.task);
    ASSERT_NE(info, nullptr);
    ASSERT_TRUE(report["final"].contains(c.objective)) << report;
    for (const auto& m : info->metrics) {
      if (!report["final"].contains(m.name) || report["final"][m.name].is_null()) continue;
      EXPECT_NEAR(j["last_eval"]["values"][m.name].get<double>(), report["final"][m.name].get<double>(), 1e-12)
          << m.name;
    }
    const std::string got = Cli("get " + id).output;
    EXPECT_NE(got.find(c.objective), std::string::npos);
    EXPECT_NE(Cli("list").output.find(c.objective + "="), std::string::npos);
    // Classification: the TF-IDF baseline travels with the job, as the report has it.
    if (c.task == "multi_label_classification") {
      EXPECT_EQ(j["baseline_method"], "tfidf_logreg") << j;
      EXPECT_NEAR(j["baseline"]["values"]["micro_f1"].get<double>(), report["baseline"]["micro_f1"].get<double>(), 1e-12);
      EXPECT_NE(r.output.find("baseline tfidf_logreg: micro_f1"), std::string::npos) << r.output;
      EXPECT_NE(got.find("baseline tfidf_logreg: micro_f1"), std::string::npos) << got;
    } else {
      EXPECT_EQ(j.value("baseline_method", ""), "") << j;  // no text baseline for these tasks
    }
  }
}

// A decoder through the service, as a domain team would run one: continued
// pretraining on plain text, then chat SFT from its export (model.from_job),
// each on two ranks of two agents over Gloo, the SFT job answering its
// validation prompts and a multiple-choice file at every evaluation; the
// figures the coordinator holds are the report's.
TEST_F(ServiceTest, ADecoderPretrainedOnTextIsFineTunedOnConversationsThroughTheService) {
  StartCoordinator();
  StartAgents(2);
  namespace fs = std::filesystem;
  // Inputs must lie under the data root: the Llama 3.1 tokenizer is copied in.
  fs::create_directories(dir_ / "tok");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(testing::NpmTokenizer("tokenizer-llama3_1") + "/" + f, dir_ / ("tok/" + std::string(f)));
  }
  const char* facts[] = {"Aspirin eases pain and fever.", "A contract needs an offer and an acceptance.",
                         "Revenue rose in the third quarter.", "Indemnity covers another party's loss.",
                         "Hypertension is high blood pressure."};
  std::string docs, docs_valid, chats, chats_valid, mc;
  for (int i = 0; i < 40; ++i) {
    const std::string fact = facts[i % 5];
    (i < 32 ? docs : docs_valid) += fact + " Note " + std::to_string(i) + " says so again: " + fact + "\n\n";
    const nlohmann::json chat = {{"messages",
                                  {{{"role", "user"}, {"content", "Tell me fact " + std::to_string(i % 5) + "."}},
                                   {{"role", "assistant"}, {"content", fact}}}}};
    (i < 32 ? chats : chats_valid) += chat.dump() + "\n";
  }
  for (int q = 0; q < 5; ++q) {
    mc += nlohmann::json{{"question", "Tell me fact " + std::to_string(q) + "."},
                         {"choices", {facts[q], facts[(q + 1) % 5], facts[(q + 2) % 5]}},
                         {"answer", 0}}
              .dump() +
          "\n";
  }
  testing::WriteText(dir_ / "docs.txt", docs);
  testing::WriteText(dir_ / "docs_valid.txt", docs_valid);
  testing::WriteText(dir_ / "chat_train.jsonl", chats);
  testing::WriteText(dir_ / "chat_valid.jsonl", chats_valid);
  testing::WriteText(dir_ / "mc.jsonl", mc);
  const std::string run = "hyperparameters: {max_steps: 6, batch_size: 4, learning_rate: 1.0e-2}\n"
                          "workers: {count: 2}\n";
  testing::WriteText(dir_ / "clm-pre.yaml",
                     "name: clm-pre\ntask: {type: causal_lm}\nmodel:\n  config: {model_type: llama, hidden_size: 32, "
                     "num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64, "
                     "max_position_embeddings: 128, tie_word_embeddings: true}\n  tokenizer: " + (dir_ / "tok") +
                         "\ndata: {train: " + (dir_ / "docs.txt") + ", validation: " + (dir_ / "docs_valid.txt") +
                         ", format: text, max_length: 64, packing: true}\n" + run + "output_dir: " +
                         (dir_ / "out-clm-pre") + "\n");
  testing::WriteText(dir_ / "clm-sft.yaml",
                     "name: clm-sft\ntask: {type: causal_lm}\nmodel: {from_job: clm-pre}\ndata: {train: " +
                         (dir_ / "chat_train.jsonl") + ", validation: " + (dir_ / "chat_valid.jsonl") +
                         ", format: messages, max_length: 64}\nevaluation: {every_steps: 3, generate: {max_new_tokens: "
                         "8}, multiple_choice: " + (dir_ / "mc.jsonl") + "}\n" + run + "output_dir: " +
                         (dir_ / "out-clm-sft") + "\n");
  const std::string pre = Submit(dir_ / "clm-pre.yaml");
  const std::string sft = Submit(dir_ / "clm-sft.yaml");
  ASSERT_TRUE(WaitState(pre, "SUCCEEDED", 240)) << GetJob(pre).dump() << testing::ReadText(dir_ / "coordinator.log");
  ASSERT_TRUE(WaitState(sft, "SUCCEEDED", 240)) << GetJob(sft).dump() << testing::ReadText(dir_ / "coordinator.log");
  auto j = GetJob(sft);
  EXPECT_EQ(j["spec"]["model"]["path"], dir_ / "out-clm-pre/model") << j;
  // The pretraining export's tokenizer and shape carried into the SFT export.
  EXPECT_EQ(testing::ReadText(dir_ / "out-clm-sft/model/tokenizer.json"),
            testing::ReadText(dir_ / "out-clm-pre/model/tokenizer.json"));
  const auto config = nlohmann::json::parse(testing::ReadText(dir_ / "out-clm-sft/model/config.json"));
  EXPECT_EQ(config["architectures"], nlohmann::json::array({"LlamaForCausalLM"})) << config;
  const auto pre_report = nlohmann::json::parse(testing::ReadText(dir_ / "out-clm-pre/eval_report.json"));
  EXPECT_EQ(pre_report["trivial_baseline"]["method"], "bigram") << pre_report;
  const auto report = nlohmann::json::parse(testing::ReadText(dir_ / "out-clm-sft/eval_report.json"));
  // Cleaning kept one of each validation conversation's copies: 5 of 8.
  EXPECT_EQ(report["answers"]["answered"], 5) << report["answers"];
  EXPECT_EQ(report["answers"]["questions"], 5) << report["answers"];
  // Every evaluation (steps 3, 4 at the epoch's end, and 6) has the answer metrics.
  ASSERT_GE(report["history"].size(), 2u) << report["history"];
  for (const char* m : {"loss", "perplexity", "token_accuracy", "exact_match", "rouge_l", "mc_accuracy",
                        "mc_accuracy_norm"}) {
    ASSERT_TRUE(report["final"].contains(m)) << m << " " << report["final"];
    EXPECT_TRUE(report["history"][0].contains(m)) << m;
    EXPECT_NEAR(j["last_eval"]["values"][m].get<double>(), report["final"][m].get<double>(), 1e-12) << m << " " << j;
  }
  for (const char* m : {"exact_match", "rouge_l", "mc_accuracy"}) {
    EXPECT_TRUE(report["trivial_baseline"].contains(m)) << m << " " << report["trivial_baseline"];
  }
  const std::string got = Cli("get " + sft).output;
  EXPECT_NE(got.find("loss"), std::string::npos) << got;
  const std::string html = testing::ReadText(dir_ / "out-clm-sft/eval_report.html");
  EXPECT_NE(html.find("<h2>Answers</h2>"), std::string::npos);
  EXPECT_NE(html.find("Tell me fact"), std::string::npos);
}

// NOTE [job chaining]: pretraining and the fine-tuning that starts from its
// model, submitted together; a dependency that fails takes its dependents with it.
TEST_F(ServiceTest, AJobChainedToAnotherRunsOnItsModelOrFailsWithIt) {
  StartCoordinator();
  StartAgents(2);
  const std::string data = "data: {train: " + (dir_ / "train.csv") + ", validation: " + (dir_ / "valid.csv") +
                           ", max_length: 24}\n";
  const std::string run = "hyperparameters: {max_steps: 8, batch_size: 4, learning_rate: 5.0e-3}\nworkers: {count: 2}\n";
  testing::WriteText(dir_ / "pre.yaml",
                     "name: pre\ntask: {type: masked_lm}\nmodel:\n  config: {hidden_size: 16, num_hidden_layers: 1, "
                     "num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64}\n  vocab_size: 100\n" +
                         data + run + "output_dir: " + (dir_ / "out-pre") + "\n");
  testing::WriteText(dir_ / "ft.yaml", "name: ft\nmodel: {from_job: pre}\n" + data + run + "output_dir: " +
                                           (dir_ / "out-ft") + "\n");
  const std::string pre = Submit(dir_ / "pre.yaml");
  const std::string ft = Submit(dir_ / "ft.yaml");  // by name, while pre is still queued or running
  // ft is read before pre: unless pre has succeeded by then, ft must still be
  // waiting (a slow, sanitized CLI may see pre finish first; its events below
  // show the wait either way).
  auto waiting = GetJob(ft);
  if (GetJob(pre)["state"] != "SUCCEEDED") {
    EXPECT_EQ(waiting["state"], "QUEUED") << waiting;
  }
  EXPECT_TRUE(WaitState(pre, "SUCCEEDED", 180)) << GetJob(pre).dump();
  EXPECT_TRUE(WaitState(ft, "SUCCEEDED", 180)) << GetJob(ft).dump() << testing::ReadText(dir_ / "coordinator.log");
  auto j = GetJob(ft);
  EXPECT_EQ(j["spec"]["model"]["path"], dir_ / "out-pre/model") << j;
  // The classifier really started from pre's model: its tokenizer is pre's.
  EXPECT_EQ(testing::ReadText(dir_ / "out-ft/model/vocab.txt"), testing::ReadText(dir_ / "out-pre/model/vocab.txt"));
  const std::string events = Cli("watch " + ft + " -o json").output;
  EXPECT_NE(events.find("waiting for job " + pre), std::string::npos) << events;
  EXPECT_NE(events.find("model.from_job: job " + pre + " succeeded"), std::string::npos) << events;

  // A dependency that is cancelled fails its dependent, with the reason.
  std::string big = Spec("big", 10, 0);
  std::string text = testing::ReadText(big);
  text.replace(text.find("workers: {count: 2}"), 19, "workers: {count: 3}");  // never schedulable here
  testing::WriteText(big, text);
  const std::string big_id = Submit(big);
  testing::WriteText(dir_ / "dep.yaml", "name: dep\nmodel: {from_job: " + big_id + "}\n" + data + run +
                                            "output_dir: " + (dir_ / "out-dep") + "\n");
  const std::string dep = Submit(dir_ / "dep.yaml");
  ASSERT_EQ(Cli("cancel " + big_id).exit_code, 0);
  EXPECT_TRUE(WaitState(dep, "FAILED", 30)) << GetJob(dep).dump();
  EXPECT_NE(GetJob(dep)["message"].get<std::string>().find("model.from_job: job " + big_id + " ended CANCELLED"),
            std::string::npos)
      << GetJob(dep).dump();
  // Naming a job that already failed, or none, is refused at submit.
  testing::WriteText(dir_ / "dep2.yaml", "name: dep2\nmodel: {from_job: " + big_id + "}\n" + data + run +
                                             "output_dir: " + (dir_ / "out-dep2") + "\n");
  auto r = Cli("submit -f " + (dir_ / "dep2.yaml"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("ended CANCELLED"), std::string::npos) << r.output;
  testing::WriteText(dir_ / "dep3.yaml", "name: dep3\nmodel: {from_job: nope}\n" + data + run + "output_dir: " +
                                             (dir_ / "out-dep3") + "\n");
  r = Cli("submit -f " + (dir_ / "dep3.yaml"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model.from_job: no job 'nope'"), std::string::npos) << r.output;
}

// NOTE [unschedulable]: a job the cluster can never hold waits UNSCHEDULABLE
// with the reason, does not block the jobs behind it, is listed by that state,
// and runs once a worker that makes it placeable registers.
TEST_F(ServiceTest, AJobTheClusterCannotHoldWaitsWithTheReasonAndBlocksNothing) {
  StartCoordinator();
  StartAgents(2);
  std::string big = Spec("big", 10, 0);
  std::string text = testing::ReadText(big);
  text.replace(text.find("workers: {count: 2}"), 19, "workers: {count: 3}");
  testing::WriteText(big, text);
  auto b = Cli("submit -f " + big);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const std::string big_id = b.output.substr(0, b.output.find('\n'));
  auto small = Cli("submit -f " + Spec("small", 10, 0) + " --watch", 120);
  EXPECT_EQ(small.exit_code, 0) << small.output << testing::ReadText(dir_ / "coordinator.log");
  auto j = GetJob(big_id);
  EXPECT_EQ(j["state"], "UNSCHEDULABLE") << j;
  auto listed = Cli("list --state UNSCHEDULABLE");
  EXPECT_NE(listed.output.find(big_id), std::string::npos) << listed.output;
  EXPECT_EQ(listed.output.find("small"), std::string::npos) << listed.output;
  EXPECT_NE(j["message"].get<std::string>().find("unschedulable: needs 3 ranks of 1 CPUs and 0 GPUs each; the 2 "
                                                  "registered workers hold at most 2 such ranks"),
            std::string::npos)
      << j;
  // A third worker makes it placeable, and it runs.
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w2 --cpus 1 --unconfined --work-dir " +
                              (dir_ / "agent-w2"),
                          dir_ / "agent-w2.log"));
  EXPECT_TRUE(WaitState(big_id, "SUCCEEDED", 120)) << GetJob(big_id).dump();
}

// NOTE [worker sessions]: a second agent claiming a live worker's id (from
// another host, with more CPUs) is refused and never gets its assignments.
TEST_F(ServiceTest, AnAgentCannotTakeALiveWorkersId) {
  StartCoordinator();
  StartAgents(1);
  for (int i = 0; i < 100 && Cli("workers").output.find("w0") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ +
                               " --worker-id w0 --host 10.6.6.6 --cpus 64 --unconfined --work-dir " + (dir_ / "impostor"),
                          dir_ / "impostor.log"));
  // Up to 60 s for its refusal (a sanitized agent under load starts slowly).
  for (int i = 0; i < 600 && testing::ReadText(dir_ / "impostor.log").find("is registered and alive") ==
                                 std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(testing::ReadText(dir_ / "impostor.log").find("is registered and alive"), std::string::npos)
      << testing::ReadText(dir_ / "impostor.log");
  auto w = nlohmann::json::parse(Cli("workers -o json").output, nullptr, false);
  ASSERT_TRUE(w.is_object() && w.contains("workers")) << w;
  ASSERT_EQ(w["workers"].size(), 1u) << w;
  EXPECT_EQ(w["workers"][0].value("cpus", 0), 1) << w;
  std::string spec = testing::ReadText(Spec("mine", 10, 0));
  spec.replace(spec.find("workers: {count: 2}"), 19, "workers: {count: 1}");
  testing::WriteText(dir_ / "mine1.yaml", spec);
  auto r = Cli("submit -f " + (dir_ / "mine1.yaml") + " --watch", 120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::error_code ec;
  EXPECT_TRUE(!std::filesystem::exists(dir_ / "impostor", ec) || std::filesystem::is_empty(dir_ / "impostor", ec))
      << "the impostor received an assignment";
}

TEST_F(ServiceTest, SubmitAndWatchToSucceededWithMetrics) {
  StartCoordinator();
  StartAgents(2);
  auto r = Cli("submit -f " + Spec("ok", 30, 0) + " --watch", 180);
  ASSERT_EQ(r.exit_code, 0) << r.output << testing::ReadText(dir_ / "coordinator.log");
  EXPECT_NE(r.output.find("SUCCEEDED"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 30/30"), std::string::npos) << r.output;
  std::string id = r.output.substr(0, r.output.find('\n'));
  auto j = GetJob(id);
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_GT(j["last_eval"]["values"]["accuracy"].get<double>(), 0.0);
  // The job's last evaluation is the exported model's, reported by the trainer as a named map.
  auto report = nlohmann::json::parse(testing::ReadText(dir_ / "out-ok/eval_report.json"));
  for (const char* k : {"loss", "accuracy", "f1", "precision", "recall", "macro_f1", "micro_f1"}) {
    EXPECT_NEAR(j["last_eval"]["values"][k].get<double>(), report["final"][k].get<double>(), 1e-12) << k;
  }
  auto shown = Cli("get " + id);
  EXPECT_NE(shown.output.find("macro_f1"), std::string::npos) << shown.output;
  EXPECT_EQ(j["workers"].size(), 2u);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "out-ok/model/model.safetensors"));
  auto logs = Cli("logs " + id + " --rank 1");
  EXPECT_NE(logs.output.find("[rank 1]"), std::string::npos) << logs.output;
  // NOTE [rendezvous secret]: the coordinator's secret reached the trainers through the agents.
  EXPECT_NE(logs.output.find("its store admits only this generation's ranks"), std::string::npos) << logs.output;
  // Idempotency: the same key returns the same job.
  auto a = Cli("submit -f " + Spec("idem", 30, 0) + " --idempotency_key k1 -o json");
  auto b = Cli("submit -f " + Spec("idem", 30, 0) + " --idempotency_key k1 -o json");
  EXPECT_EQ(nlohmann::json::parse(a.output)["id"], nlohmann::json::parse(b.output)["id"]);
}

TEST_F(ServiceTest, LogsFollowPrintsLinesAsTheyComeUntilTheJobEnds) {
  StartCoordinator();
  StartAgents(2);
  const std::string id = Submit(Spec("follow", 300, 0));
  // Started while the job is queued or running; returns when it has ended.
  auto r = Cli("logs " + id + " --follow --rank 0", 240);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(GetJob(id).value("state", ""), "SUCCEEDED");
  int lines = 0;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    EXPECT_EQ(line.rfind("[rank 0] ", 0), 0u) << line;
    ++lines;
  }
  EXPECT_GT(lines, 3) << r.output;
  // Each line once: following asks only for lines after the last one seen.
  auto all = Cli("logs " + id + " --rank 0 --tail 1000");
  EXPECT_EQ(r.output, all.output);
}

TEST_F(ServiceTest, SetOverridesReachTheJobsSpecAndABadPathIsRefused) {
  StartCoordinator();
  const std::string spec = Spec("overridden", 30, 0);
  auto r = Cli("submit -f " + spec + " --set hyperparameters.learning_rate=3e-4 --set method.type=lora "
               "--set method.lora.rank=4 -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto job = GetJob(nlohmann::json::parse(r.output)["id"]);
  EXPECT_DOUBLE_EQ(job["spec"]["hyperparameters"]["learning_rate"].get<double>(), 3e-4);
  EXPECT_EQ(job["spec"]["method"]["type"], "lora");
  EXPECT_EQ(Int(job["spec"]["method"]["lora"], "rank"), 4);
  auto bad = Cli("submit -f " + spec + " --set method.typ=lora");
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  EXPECT_NE(bad.output.find("method.typ: unknown field"), std::string::npos) << bad.output;
  EXPECT_EQ(nlohmann::json::parse(Cli("list -o json").output)["jobs"].size(), 1u);
  Cli("cancel " + job["id"].get<std::string>());
}

TEST_F(ServiceTest, ADownloadEqualsTheFilesOnDiskAndALinkOutOfTheJobIsRefused) {
  StartCoordinator();
  StartAgents(2);
  auto r = Cli("submit -f " + Spec("dl", 30, 0) + " --watch", 180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string id = r.output.substr(0, r.output.find('\n'));
  auto d = Cli("download " + id + " --what all --to " + (dir_ / "dl"));
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_NE(d.output.find("SHA-256 checked"), std::string::npos) << d.output;
  int compared = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ / "out-dl")) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), dir_ / "out-dl").string();
    const bool wanted = rel.rfind("model/", 0) == 0 || rel == "eval_report.json" || rel == "eval_report.html" ||
                        rel == "data_report.json";
    EXPECT_EQ(std::filesystem::exists(dir_ / ("dl/" + rel)), wanted) << rel;
    if (!wanted) continue;
    EXPECT_EQ(testing::ReadText(dir_ / ("dl/" + rel)), testing::ReadText(e.path().string())) << rel;
    ++compared;
  }
  EXPECT_GE(compared, 6);
  // A link planted in the model directory is refused, naming it; nothing is followed out of the job.
  std::filesystem::create_symlink("/etc/hostname", dir_ / "out-dl/model/leak.txt");
  auto leak = Cli("download " + id + " --to " + (dir_ / "dl2"));
  EXPECT_EQ(leak.exit_code, 7) << leak.output;  // PERMISSION_DENIED
  EXPECT_NE(leak.output.find("model/leak.txt: a symbolic link"), std::string::npos) << leak.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dl2/model/leak.txt"));
  std::filesystem::remove(dir_ / "out-dl/model/leak.txt");
  // The output_dir itself swapped, after the job, for a link out of the data root.
  testing::TempDir elsewhere("dl_elsewhere");
  std::filesystem::rename(dir_ / "out-dl", elsewhere / "moved");
  std::filesystem::create_directory_symlink(elsewhere / "moved", dir_ / "out-dl");
  auto swapped = Cli("download " + id + " --to " + (dir_ / "dl3"));
  EXPECT_EQ(swapped.exit_code, 7) << swapped.output;
  EXPECT_NE(swapped.output.find("resolves outside the data root"), std::string::npos) << swapped.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dl3"));
  EXPECT_EQ(Cli("download j-000999-none").exit_code, 5);  // NOT_FOUND
  std::string spec = testing::ReadText(Spec("waits", 30, 0));
  spec.replace(spec.find("workers: {count: 2}"), 19, "workers: {count: 3}");
  testing::WriteText(dir_ / "waits3.yaml", spec);
  const std::string queued = Submit(dir_ / "waits3.yaml");
  auto early = Cli("download " + queued);
  EXPECT_EQ(early.exit_code, 9) << early.output;  // FAILED_PRECONDITION: not SUCCEEDED
  // QUEUED, or UNSCHEDULABLE once the scheduler has seen that 2 workers cannot hold 3 ranks.
  EXPECT_TRUE(early.output.find("is QUEUED") != std::string::npos ||
              early.output.find("is UNSCHEDULABLE") != std::string::npos)
      << early.output;
}

TEST_F(ServiceTest, InvalidSpecIsRejectedAndNothingIsStored) {
  StartCoordinator();
  auto r = Cli("submit -f " + Spec("bad", 30, 0) + " -o json");
  ASSERT_EQ(r.exit_code, 0);  // a valid one first, to have something stored
  std::string text = testing::ReadText(dir_ / "bad.yaml");
  text.replace(text.find("batch_size: 4"), 13, "batch_size: 0");
  testing::WriteText(dir_ / "bad2.yaml", text);
  auto before = Cli("list -o json");
  auto bad = Cli("submit -f " + (dir_ / "bad2.yaml"));
  EXPECT_EQ(bad.exit_code, 3) << bad.output;  // INVALID_ARGUMENT
  EXPECT_NE(bad.output.find("hyperparameters.batch_size: must be > 0"), std::string::npos) << bad.output;
  // A path outside the data root is refused too.
  text.replace(text.find("batch_size: 0"), 13, "batch_size: 4");
  text.replace(text.find("output_dir: "), std::string("output_dir: ").size(), "output_dir: /etc/attune-escape#");
  testing::WriteText(dir_ / "bad3.yaml", text);
  auto esc = Cli("submit -f " + (dir_ / "bad3.yaml"));
  EXPECT_EQ(esc.exit_code, 3) << esc.output;
  EXPECT_NE(esc.output.find("output_dir"), std::string::npos) << esc.output;
  EXPECT_EQ(Cli("list -o json").output, before.output);
  EXPECT_EQ(Cli("get j-404").exit_code, 5);  // NOT_FOUND
}

// Two jobs with a 9 MB label value each made `attune list` fail for every
// user ("Sent message larger than max"). Specs are capped at submit, and a
// listing page ends before it outgrows a default client's 4 MiB.
TEST_F(ServiceTest, ListingLargeSpecsPagesWithinTheMessageLimit) {
  StartCoordinator("--max-message-mb 4");  // what a default gRPC client accepts
  // A spec whose data.labels lists `n` names of 200 bytes.
  auto with_labels = [&](const std::string& name, int n) {
    std::string names;
    for (int i = 0; i < n; ++i) {
      const std::string l = "label" + std::to_string(i);
      names += (i ? ", " : "") + l + std::string(200 - l.size(), 'x');
    }
    std::string text = testing::ReadText(Spec(name, 30, 0));
    text.replace(text.find(", max_length: 24}"), 17, ", max_length: 24,\n  labels: [" + names + "]}");
    testing::WriteText(dir_ / (name + ".yaml"), text);
    return dir_ / (name + ".yaml");
  };
  auto big = Cli("submit -f " + with_labels("huge", 1500));
  EXPECT_EQ(big.exit_code, 3) << big.output.substr(0, 500);
  EXPECT_NE(big.output.find("bytes as JSON; at most 262144"), std::string::npos) << big.output.substr(0, 500);
  std::set<std::string> ids;
  for (int i = 0; i < 24; ++i) ids.insert(Submit(with_labels("big" + std::to_string(i), 1000)));
  ASSERT_EQ(ids.size(), 24u);
  // 24 specs of about 200 KB: 4.8 MB in all, more than one reply may carry.
  auto list = Cli("list -o json");
  ASSERT_EQ(list.exit_code, 0) << list.output.substr(0, 500);
  auto j = nlohmann::json::parse(list.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << list.output.substr(0, 500);
  std::set<std::string> listed;
  for (const auto& job : j["jobs"]) listed.insert(job.value("id", ""));
  EXPECT_EQ(listed, ids);
}

TEST_F(ServiceTest, CancelStopsEveryTrainer) {
  StartCoordinator();
  StartAgents(2);
  std::string id = Submit(Spec("long", 100000, 0));
  ASSERT_TRUE(WaitState(id, "RUNNING", 60)) << GetJob(id).dump();
  EXPECT_EQ(TrainersRunning(), 2);
  auto c = Cli("cancel " + id);
  EXPECT_EQ(c.exit_code, 0) << c.output;
  ASSERT_TRUE(WaitState(id, "CANCELLED", 30)) << GetJob(id).dump();
  EXPECT_EQ(TrainersRunning(), 0);
  EXPECT_EQ(Cli("cancel " + id).exit_code, 9);  // FAILED_PRECONDITION: already terminal
  EXPECT_NE(Cli("watch " + id).exit_code, 0);   // watch exits non-zero for a job that did not succeed
}

TEST_F(ServiceTest, KilledTrainerRecoversFromItsCheckpoint) {
  StartCoordinator();
  StartAgents(2);
  std::string id = Submit(Spec("recover", 1200, 2, 50));
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (Int(GetJob(id), "last_checkpoint_step") < 50 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(Int(GetJob(id), "last_checkpoint_step"), 50) << GetJob(id).dump();
  RunCommand("pkill -9 -f " + TrainerPattern(dir_.path(), ".*--rank=1"));
  ASSERT_TRUE(WaitState(id, "SUCCEEDED", 150)) << GetJob(id).dump() << testing::ReadText(dir_ / "coordinator.log");
  auto j = GetJob(id);
  EXPECT_EQ(Int(j, "restarts"), 1);
  auto events = Cli("watch " + id + " -o json");
  EXPECT_NE(events.output.find("RECOVERING"), std::string::npos);
  // The second attempt's trainers resumed from a committed checkpoint.
  auto logs = Cli("logs " + id + " --rank 0 --tail 2000");
  EXPECT_NE(logs.output.find("resumed from"), std::string::npos) << logs.output;
}

// What Kubernetes does to a worker pod: SIGTERM to the agent. Its trainer
// finishes the step, the ranks stop together, rank 0 commits a checkpoint at
// that step, and the coordinator resumes the job from it on the other workers.
// NOTE [agent lease]: a network cut between an agent and the coordinator. The
// agent stops its trainer within its lease, before the coordinator declares
// the worker lost and restarts the job elsewhere.
TEST_F(ServiceTest, AnAgentCutOffFromTheCoordinatorStopsItsTrainers) {
  StartCoordinator();  // heartbeat timeout 3 s
  testing::TcpProxy link(port_);
  // w0 (2 CPUs, so it gets the job) talks through the link; w1 directly.
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator 127.0.0.1:" + std::to_string(link.port()) +
                               " --worker-id w0 --cpus 2 --coordinator_lease_s 2 --unconfined --work-dir " + (dir_ / "agent-w0"),
                          dir_ / "agent-w0.log"));
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ +
                               " --worker-id w1 --cpus 1 --coordinator_lease_s 2 --unconfined --work-dir " + (dir_ / "agent-w1"),
                          dir_ / "agent-w1.log"));
  for (int i = 0; i < 100; ++i) {
    auto w = nlohmann::json::parse(Cli("workers -o json").output, nullptr, false);
    if (w.is_object() && w.contains("workers") && w["workers"].size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  nlohmann::json j = SubmitLongOneRankJob("cut", 20);
  ASSERT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  const std::string id = j["id"];
  auto until = std::chrono::steady_clock::now();
  ASSERT_EQ(j["workers"][0], "w0") << j.dump();
  link.Cut();
  const auto cut = std::chrono::steady_clock::now();
  const std::string old_trainer = TrainerPattern(dir_.path(), ".*" + id + "-g1-r0");
  until = cut + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until && RunCommand("pgrep -f " + old_trainer).exit_code == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut).count();
  EXPECT_NE(RunCommand("pgrep -f " + old_trainer).exit_code, 0) << "generation 1's trainer still runs after the cut";
  RecordProperty("stopped_after_cut_seconds", std::to_string(secs));
  EXPECT_NE(testing::ReadText(dir_ / "agent-w0.log").find("no contact with the coordinator for"), std::string::npos)
      << testing::ReadText(dir_ / "agent-w0.log");
  // The job goes on elsewhere.
  until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until &&
         !(Int(GetJob(id), "generation") >= 2 && GetJob(id).value("state", "") == "RUNNING")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  j = GetJob(id);
  EXPECT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  EXPECT_EQ(j["workers"][0], "w1") << j.dump();
  Cli("cancel " + id);
}

TEST_F(ServiceTest, AHungAgentsTrainerIsFencedWhenTheJobRestartsElsewhere) {
  StartCoordinator();
  StartAgents(2);
  // One rank, long, checkpointing often: the old attempt would keep committing.
  nlohmann::json j = SubmitLongOneRankJob("hung", 40);
  ASSERT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  const std::string id = j["id"];
  auto until = std::chrono::steady_clock::now();
  const std::string hung = j["workers"][0].get<std::string>();
  const pid_t agent = agents_[static_cast<size_t>(std::stoi(hung.substr(1)))];
  // A hung node: the agent stops, its trainer (its own process group) runs on.
  ::kill(agent, SIGSTOP);
  until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until && !(Int(GetJob(id), "generation") >= 2 &&
                                                        GetJob(id).value("state", "") == "RUNNING")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  j = GetJob(id);
  ASSERT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  ASSERT_GE(Int(j, "generation"), 2) << j.dump();
  const auto restarted = std::chrono::steady_clock::now();
  // The old attempt's trainer sees the newer generation's lease and stops by itself.
  const std::string old_trainer = TrainerPattern(dir_.path(), ".*" + id + "-g1-r0");
  until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until && RunCommand("pgrep -f " + old_trainer).exit_code == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const bool old_gone = RunCommand("pgrep -f " + old_trainer).exit_code != 0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count();
  const std::string where =
      RunCommand("pgrep -a -f " + old_trainer + "; for p in $(pgrep -f " + old_trainer +
                 "); do ps -o pid,stat,wchan:30 -p $p; done").output +
      testing::ReadText(dir_ / "out-hung/.attune-lease.json");
  ::kill(agent, SIGCONT);
  EXPECT_TRUE(old_gone) << "generation 1's trainer still runs " << secs << " s after the restart: " << where;
  RecordProperty("fenced_exit_seconds", std::to_string(secs));
  // Every committed checkpoint from here on is the new attempt's, and says so.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  int newer = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / "out-hung/checkpoints")) {
    if (e.path().filename().string().rfind("step-", 0) != 0) continue;
    auto m = nlohmann::json::parse(testing::ReadText(e.path().string() + "/manifest.json"));
    EXPECT_EQ(m["job_id"], id);
    newer += m["generation"].get<int64_t>() >= 2;
  }
  EXPECT_GE(newer, 1);
  auto lease = nlohmann::json::parse(testing::ReadText(dir_ / "out-hung/.attune-lease.json"));
  EXPECT_GE(lease["generation"].get<int64_t>(), 2);
}

TEST_F(ServiceTest, AHungTrainerIsKilledByTheProgressWatchdogAndTheJobRestarts) {
  StartCoordinator();
  StartAgents(2, {"--progress_timeout_s 6", "--progress_timeout_s 6"});
  const std::string id = Submit(Spec("stuck", 200000, 2, 50));
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  nlohmann::json j;
  while (std::chrono::steady_clock::now() < until) {
    j = GetJob(id);
    if (j.value("state", "") == "RUNNING" && j.contains("progress") && Int(j["progress"], "step") >= 20) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  // Rank 1's trainer hangs: no step, no heartbeat, no exit.
  const std::string rank1 = TrainerPattern(dir_.path(), ".*" + id + "-g1-r1");
  ASSERT_EQ(RunCommand("pkill -STOP -f " + rank1).exit_code, 0);
  const auto stopped = std::chrono::steady_clock::now();
  until = stopped + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until &&
         !(Int(GetJob(id), "restarts") >= 1 && GetJob(id).value("state", "") == "RUNNING")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  j = GetJob(id);
  EXPECT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  EXPECT_EQ(Int(j, "restarts"), 1) << j.dump();
  const std::string log = testing::ReadText(dir_ / "coordinator.log");
  EXPECT_NE(log.find("rank 1 made no progress for"), std::string::npos) << log;
  EXPECT_NE(RunCommand("pgrep -f " + rank1).exit_code, 0) << "the hung trainer still exists";
  RecordProperty("hang_to_running_seconds", std::to_string(secs));
}

TEST_F(ServiceTest, ANewJobDoesNotSilentlyResumeAnotherJobsCheckpoints) {
  StartCoordinator();
  StartAgents(2);
  const std::string spec = Spec("own", 30, 0, 10);
  auto first = Cli("submit -f " + spec + " --watch", 180);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string a = first.output.substr(0, first.output.find('\n'));
  // The same spec again: it used to "succeed" at once by resuming job a's final checkpoint.
  const std::string b = Submit(spec);
  ASSERT_TRUE(WaitState(b, "FAILED", 60)) << GetJob(b).dump();
  const std::string why = GetJob(b)["message"];
  EXPECT_NE(why.find("holds the checkpoints of job " + a + " (newest: step 30)"), std::string::npos) << why;
  EXPECT_NE(why.find("checkpoint.resume_from"), std::string::npos) << why;
  EXPECT_NE(why.find("checkpoint.overwrite: true"), std::string::npos) << why;
  // overwrite: trains from scratch.
  std::string text = testing::ReadText(spec);
  text.replace(text.find("checkpoint: {every_steps: 10}"), 29, "checkpoint: {every_steps: 10, overwrite: true}");
  testing::WriteText(dir_ / "own-overwrite.yaml", text);
  auto c = Cli("submit -f " + (dir_ / "own-overwrite.yaml") + " --watch", 180);
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const std::string c_id = c.output.substr(0, c.output.find('\n'));
  EXPECT_EQ(Cli("logs " + c_id + " --rank 0 --tail 5000").output.find("resumed from"), std::string::npos);
  // resume_from: continues from the newest checkpoint (step 30) to 40.
  text = testing::ReadText(spec);
  text.replace(text.find("checkpoint: {every_steps: 10}"), 29,
               "checkpoint: {every_steps: 10, resume_from: " + (dir_ / "out-own") + "}");
  text.replace(text.find("max_steps: 30"), 13, "max_steps: 40");
  testing::WriteText(dir_ / "own-resume.yaml", text);
  auto d = Cli("submit -f " + (dir_ / "own-resume.yaml") + " --watch", 180);
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string d_id = d.output.substr(0, d.output.find('\n'));
  const std::string logs = Cli("logs " + d_id + " --rank 0 --tail 5000").output;
  EXPECT_NE(logs.find("resumed from"), std::string::npos) << logs;
  EXPECT_NE(logs.find("at step 30"), std::string::npos) << logs;
  EXPECT_NE(d.output.find("step 40/40"), std::string::npos) << d.output;
}

TEST_F(ServiceTest, SigtermedAgentCheckpointsAndTheJobResumesOnTheOtherWorkers) {
  StartCoordinator();
  StartAgents(3);
  std::string id = Submit(Spec("drain", 800, 3));  // no periodic checkpoints
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  nlohmann::json j;
  while (std::chrono::steady_clock::now() < until) {
    j = GetJob(id);
    if (j.value("state", "") == "RUNNING" && j.contains("progress") && Int(j["progress"], "step") >= 30) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(j.value("state", ""), "RUNNING") << j.dump();
  ASSERT_EQ(j["workers"].size(), 2u) << j.dump();
  const std::string drained = j["workers"][1].get<std::string>();  // "wN"
  const pid_t agent = agents_[static_cast<size_t>(std::stoi(drained.substr(1)))];
  ::kill(agent, SIGTERM);
  int status = 0;
  ::waitpid(agent, &status, 0);
  ASSERT_TRUE(WaitState(id, "SUCCEEDED", 150)) << GetJob(id).dump() << testing::ReadText(dir_ / "coordinator.log");
  j = GetJob(id);
  EXPECT_GE(Int(j, "restarts"), 1);
  for (const auto& w : j["workers"]) EXPECT_NE(w.get<std::string>(), drained) << j.dump();
  // The drained attempt stopped on request and committed its step; the next one resumed from it.
  const std::string agent_log = testing::ReadText(dir_ / ("agent-" + drained + ".log"));
  EXPECT_NE(agent_log.find("trainer exited with 143"), std::string::npos) << agent_log;
  auto logs = Cli("logs " + id + " --rank 0 --tail 5000");
  const size_t stop = logs.output.find("stopping on request after step ");
  ASSERT_NE(stop, std::string::npos) << logs.output;
  const std::string step = logs.output.substr(stop + 31, logs.output.find_first_not_of("0123456789", stop + 31) - stop - 31);
  EXPECT_NE(logs.output.find("resumed from"), std::string::npos) << logs.output;
  EXPECT_NE(logs.output.find("at step " + step), std::string::npos) << "resumed from step " << step << ":\n" << logs.output;
}

TEST_F(ServiceTest, RestartBudgetExhaustedFailsWithTheReason) {
  StartCoordinator();
  StartAgents(2);
  std::string id = Submit(Spec("doomed", 100000, 1));
  for (int attempt = 0; attempt < 2; ++attempt) {
    // Wait for this attempt's ranks to run, then kill rank 0.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!(GetJob(id).value("state", "") == "RUNNING" && Int(GetJob(id), "restarts") == attempt) &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_EQ(Int(GetJob(id), "restarts"), attempt) << GetJob(id).dump();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    RunCommand("pkill -9 -f " + TrainerPattern(dir_.path(), ".*--rank=0"));
  }
  ASSERT_TRUE(WaitState(id, "FAILED", 60)) << GetJob(id).dump();
  auto j = GetJob(id);
  EXPECT_NE(j["message"].get<std::string>().find("restart budget exhausted"), std::string::npos) << j.dump();
  EXPECT_EQ(Int(j, "restarts"), 1);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(TrainersRunning(), 0);
}

TEST_F(ServiceTest, ATrainersOwnReasonBecomesTheJobsMessageAndPermanentFailuresAreNotRetried) {
  StartCoordinator();
  StartAgents(2);
  // A malformed row deep in the file: only the trainer finds it, and retrying cannot help.
  testing::WriteText(dir_ / "broken.csv", testing::ReadText(dir_ / "train.csv") + "\"unterminated,pos\n");
  std::string spec = testing::ReadText(Spec("typo", 30, 5));
  spec.replace(spec.find(dir_ / "train.csv"), (dir_ / "train.csv").size(), dir_ / "broken.csv");
  testing::WriteText(dir_ / "typo2.yaml", spec);
  const std::string bad = Submit(dir_ / "typo2.yaml");
  ASSERT_TRUE(WaitState(bad, "FAILED", 60)) << GetJob(bad).dump();
  auto j = GetJob(bad);
  const std::string message = j["message"];
  EXPECT_NE(message.find("exited with code 65 (invalid input; not retried)"), std::string::npos) << message;
  EXPECT_NE(message.find("broken.csv:322: unterminated quoted field"), std::string::npos) << message;
  EXPECT_EQ(Int(j, "restarts"), 0) << j.dump();  // max_restarts 5, none spent
  EXPECT_NE(Cli("get " + bad).output.find("unterminated quoted field"), std::string::npos);
  // A column that is not in the file is refused at submit (the coordinator sees the data root).
  spec = testing::ReadText(dir_ / "typo.yaml");
  spec.replace(spec.find("max_length: 24}"), 15, "max_length: 24, label_column: stars}");
  testing::WriteText(dir_ / "typo3.yaml", spec);
  auto refused = Cli("submit -f " + (dir_ / "typo3.yaml"));
  EXPECT_EQ(refused.exit_code, 3) << refused.output;  // INVALID_ARGUMENT
  EXPECT_NE(refused.output.find("has no column named 'stars'"), std::string::npos) << refused.output;
}

TEST_F(ServiceTest, CoordinatorKilledMidJobRecoversWithoutLosingJobs) {
  StartCoordinator();
  StartAgents(2);
  std::string id = Submit(Spec("survive", 1000, 0, 100));
  std::string other = Submit(Spec("queued", 10, 0));
  ASSERT_TRUE(WaitState(id, "RUNNING", 60)) << GetJob(id).dump();
  KillAndReap(coordinator_);
  // A second coordinator on the same file refuses while the first holds it...
  StartCoordinator();
  auto second = RunCommand(Bin("attune-coordinator") + " --listen 127.0.0.1:0 --state " + (dir_ / "state.db"), 10);
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.output.find("another coordinator"), std::string::npos) << second.output;
  ASSERT_TRUE(WaitState(id, "SUCCEEDED", 150)) << GetJob(id).dump() << testing::ReadText(dir_ / "coordinator.log");
  EXPECT_EQ(Int(GetJob(id), "restarts"), 0);  // healthy work was re-adopted, not restarted
  ASSERT_TRUE(WaitState(other, "SUCCEEDED", 120)) << GetJob(other).dump();
  auto list = nlohmann::json::parse(Cli("list -o json").output);
  EXPECT_EQ(list["jobs"].size(), 2u);
}

// NOTE [coordinator outages]: what an upgrade of the coordinator does to a
// running job. Down for 3x the agents' lease, the coordinator finds the ranks
// stopped by their agents (each committed a checkpoint first); the job resumes
// from it without spending a restart, so max_restarts 0 still SUCCEEDS.
TEST_F(ServiceTest, ACoordinatorDownLongerThanTheLeaseResumesItsJobsWithoutSpendingARestart) {
  StartCoordinator();
  const int lease_s = 2;
  const std::string lease = "--coordinator_lease_s " + std::to_string(lease_s);
  StartAgents(2, {lease, lease});
  const std::string id = Submit(Spec("upgrade", 800, 0, 20));
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (Int(GetJob(id), "last_checkpoint_step") < 20 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(GetJob(id).value("state", ""), "RUNNING") << GetJob(id).dump();
  KillAndReap(coordinator_);
  std::this_thread::sleep_for(std::chrono::seconds(3 * lease_s));
  EXPECT_EQ(TrainersRunning(), 0) << "the agents' lease should have stopped the trainers";
  StartCoordinator();
  ASSERT_TRUE(WaitState(id, "SUCCEEDED", 180))
      << GetJob(id).dump() << testing::ReadText(dir_ / "coordinator.log") << testing::ReadText(dir_ / "agent-w0.log")
      << testing::ReadText(dir_ / "agent-w1.log");
  const nlohmann::json j = GetJob(id);
  EXPECT_EQ(Int(j, "restarts"), 0) << j.dump();
  EXPECT_GE(Int(j, "generation"), 2) << j.dump();
  const std::string events = Cli("watch " + id + " -o json").output;
  EXPECT_NE(events.find("was stopped by its agent while the coordinator was unreachable (no contact with the "
                        "coordinator for"),
            std::string::npos)
      << events;
  EXPECT_NE(events.find("resuming from the last checkpoint without spending a restart (0 of 0 used)"),
            std::string::npos)
      << events;
  const std::string logs = Cli("logs " + id + " --rank 0 --tail 2000").output;
  EXPECT_NE(logs.find("resumed from"), std::string::npos) << logs;
}

TEST_F(ServiceTest, TokensAreRequiredWhenConfigured) {
  testing::WriteText(dir_ / "submit.tokens", "s3cr3t-submit-token\n");
  testing::WriteText(dir_ / "worker.tokens", "# agents\nw0rker-token\n");
  StartCoordinatorWithTokens();
  auto none = Cli("list");
  EXPECT_EQ(none.exit_code, 16) << none.output;  // UNAUTHENTICATED
  EXPECT_NE(none.output.find("UNAUTHENTICATED"), std::string::npos) << none.output;
  auto wrong = Cli("list --token_file " + (dir_ / "worker.tokens"));
  EXPECT_EQ(wrong.exit_code, 7) << wrong.output;  // PERMISSION_DENIED: a worker token on the job API
  auto ok = Cli("list --token_file " + (dir_ / "submit.tokens"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  // An agent without its token is refused; with it, it registers and runs a job.
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w0 --cpus 1 --unconfined",
                          dir_ / "agent-notoken.log"));
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ +  " --worker-id w1 --cpus 1 --unconfined " +
                              "--token-file " + (dir_ / "worker.tokens"),
                          dir_ / "agent-w1.log"));
  const std::string spec = OneRankSpec("tok", 10);
  // Priority is an admin's decision: a submit token may not set it.
  testing::WriteText(dir_ / "urgent.yaml", testing::ReadText(spec) + "priority: 5\n");
  auto urgent = Cli("submit -f " + (dir_ / "urgent.yaml") + " --token_file " + (dir_ / "submit.tokens"));
  EXPECT_EQ(urgent.exit_code, 7) << urgent.output;  // PERMISSION_DENIED
  EXPECT_NE(urgent.output.find("priority: only an admin may do this"), std::string::npos) << urgent.output;
  auto run = Cli("submit -f " + spec + " --watch --token_file " + (dir_ / "submit.tokens"), 120);
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(testing::ReadText(dir_ / "agent-notoken.log").find("UNAUTHENTICATED"), std::string::npos);
  // Tokens never reach the logs.
  EXPECT_EQ(testing::ReadText(dir_ / "coordinator.log").find("s3cr3t"), std::string::npos);
  EXPECT_EQ(testing::ReadText(dir_ / "coordinator.log").find("w0rker"), std::string::npos);
}

// Jobs and sweeps belong to the identity that submitted them (the name in the
// token file): another submitter can neither see nor touch them, an admin can.
TEST_F(ServiceTest, SubmittersSeeAndChangeOnlyTheirOwnJobsAndSweeps) {
  testing::WriteText(dir_ / "submit.tokens", "alice tok-alice\nbob tok-bob\n");
  testing::WriteText(dir_ / "admin.tokens", "ops tok-ops\n");
  testing::WriteText(dir_ / "worker.tokens", "tok-worker\n");
  for (const char* who : {"alice", "bob", "ops"}) testing::WriteText(dir_ / (std::string(who) + ".token"), std::string("tok-") + who + "\n");
  StartCoordinatorWithTokens("--admin-token-file " + (dir_ / "admin.tokens"));
  auto as = [&](const std::string& who, const std::string& args) {
    return Cli(args + " --token_file " + (dir_ / (who + ".token")));
  };
  auto alice_sub = as("alice", "submit -f " + Spec("mine", 10, 0) + " --idempotency_key k1 -o json");
  ASSERT_EQ(alice_sub.exit_code, 0) << alice_sub.output;
  const auto alice_job = nlohmann::json::parse(alice_sub.output, nullptr, false);
  ASSERT_TRUE(alice_job.is_object()) << alice_sub.output;
  const std::string a = alice_job.value("id", "");
  EXPECT_EQ(alice_job.value("owner", ""), "alice");
  // The same idempotency key from bob is bob's own job, not a retry of alice's.
  auto bob_sub = as("bob", "submit -f " + Spec("theirs", 10, 0) + " --idempotency_key k1 -o json");
  ASSERT_EQ(bob_sub.exit_code, 0) << bob_sub.output;
  const auto bob_job = nlohmann::json::parse(bob_sub.output, nullptr, false);
  ASSERT_TRUE(bob_job.is_object()) << bob_sub.output;
  const std::string b = bob_job.value("id", "");
  EXPECT_NE(a, b);
  // Every call bob makes on alice's job is refused (7, PERMISSION_DENIED).
  for (const std::string& call : {"get " + a, "cancel " + a, "logs " + a, "watch " + a, "download " + a + " --to " +
                                  (dir_ / "stolen")}) {
    auto r = as("bob", call);
    EXPECT_EQ(r.exit_code, 7) << call << "\n" << r.output;
    EXPECT_NE(r.output.find("belongs to another submitter"), std::string::npos) << call << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "stolen"));
  // Nor can bob build on alice's model.
  testing::WriteText(dir_ / "chain.yaml",
                     "name: chain\nmodel: {from_job: " + a + "}\ndata: {train: " + (dir_ / "train.csv") +
                         ", validation: " + (dir_ / "valid.csv") + "}\noutput_dir: " + (dir_ / "out-chain") + "\n");
  auto chain = as("bob", "submit -f " + (dir_ / "chain.yaml"));
  EXPECT_EQ(chain.exit_code, 7) << chain.output;
  EXPECT_NE(chain.output.find("model.from_job: job " + a + " belongs to another submitter"), std::string::npos)
      << chain.output;
  auto ids = [&](const std::string& who) {
    std::set<std::string> out;
    auto r = as(who, "list -o json");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (j.is_object() && j.contains("jobs")) {
      for (const auto& job : j["jobs"]) out.insert(job.value("id", ""));
    }
    return out;
  };
  EXPECT_EQ(ids("bob"), std::set<std::string>{b});
  EXPECT_EQ(ids("alice"), std::set<std::string>{a});
  EXPECT_EQ(ids("ops"), (std::set<std::string>{a, b}));
  // A sweep is its submitter's too, with every trial.
  std::string base = testing::ReadText(Spec("swept", 10, 0));
  std::string sweep = "name: owned-sweep\nspec:\n";
  for (absl::string_view line : absl::StrSplit(base, '\n')) {
    if (!line.empty()) sweep += "  " + std::string(line) + "\n";
  }
  sweep += "parameters:\n  hyperparameters.learning_rate: {choice: [1.0e-3, 2.0e-3]}\nobjective: {metric: accuracy}\n"
           "max_trials: 2\n";
  testing::WriteText(dir_ / "owned.sweep.yaml", sweep);
  auto sw = as("alice", "sweep submit -f " + (dir_ / "owned.sweep.yaml") + " -o json");
  ASSERT_EQ(sw.exit_code, 0) << sw.output;
  const auto sweep_json = nlohmann::json::parse(sw.output, nullptr, false);
  ASSERT_TRUE(sweep_json.is_object()) << sw.output;
  const std::string sweep_id = sweep_json.value("id", "");
  auto bob_get = as("bob", "sweep get " + sweep_id);
  EXPECT_EQ(bob_get.exit_code, 7) << bob_get.output;
  EXPECT_EQ(as("bob", "sweep cancel " + sweep_id).exit_code, 7);
  EXPECT_EQ(as("bob", "sweep list -o json").output.find(sweep_id), std::string::npos);
  EXPECT_NE(as("ops", "sweep list -o json").output.find(sweep_id), std::string::npos);
  // Its trials are alice's jobs: she lists them, bob does not.
  for (int i = 0; i < 50 && ids("alice").size() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_GE(ids("alice").size(), 2u);
  EXPECT_EQ(ids("bob"), std::set<std::string>{b});
}

TEST_F(ServiceTest, MetricsEndpointsServeCoordinatorAndPerRankTrainingSeries) {
  const int cport = FreePort(), w0 = FreePort(), w1 = FreePort();
  coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                           " --metrics-listen 127.0.0.1:" + std::to_string(cport),
                       dir_ / "coordinator.log");
  WaitForPort();
  StartAgents(2, {"--metrics-listen 127.0.0.1:" + std::to_string(w0), "--metrics-listen 127.0.0.1:" + std::to_string(w1)});
  std::string spec = Spec("metrics", 30, 0, 10);
  ASSERT_EQ(Cli("submit -f " + spec + " --watch", 120).exit_code, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // one more gauge refresh
  auto fetch = [&](int port, const std::string& out) {
    return RunCommand("/usr/bin/python3 -c \"import urllib.request,sys; "
                      "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:" + std::to_string(port) +
                      "/metrics').read().decode())\" > " + out + " && cat " + out);
  };
  auto coord = fetch(cport, dir_ / "coordinator.prom");
  ASSERT_EQ(coord.exit_code, 0) << coord.output;
  EXPECT_NE(coord.output.find("attune_coordinator_jobs{state=\"SUCCEEDED\"} 1"), std::string::npos) << coord.output;
  EXPECT_NE(coord.output.find("attune_coordinator_workers{state=\"idle\"} 2"), std::string::npos);
  EXPECT_NE(coord.output.find("attune_coordinator_queue_depth 0"), std::string::npos);
  EXPECT_NE(coord.output.find("attune_coordinator_scheduling_latency_seconds_count 1"), std::string::npos);
  EXPECT_NE(coord.output.find("attune_coordinator_worker_heartbeat_age_seconds{worker=\"w1\"}"), std::string::npos);
  EXPECT_NE(coord.output.find("attune_coordinator_grpc_requests_total{code=\"OK\",method=\"Heartbeat\"}"),
            std::string::npos);
  EXPECT_NE(coord.output.find("attune_coordinator_grpc_request_seconds_bucket"), std::string::npos);
  // `attune workers` lists both agents, idle again, with a recent heartbeat.
  auto workers = Cli("workers -o json");
  ASSERT_EQ(workers.exit_code, 0) << workers.output;
  auto wj = nlohmann::json::parse(workers.output, nullptr, false);
  ASSERT_TRUE(wj.contains("workers")) << workers.output;
  ASSERT_EQ(wj["workers"].size(), 2u) << workers.output;
  for (const auto& w : wj["workers"]) {
    EXPECT_EQ(w.value("state", ""), "IDLE") << w.dump();
    EXPECT_EQ(w.value("cpus", 0), 1) << w.dump();
  }
  auto table = Cli("workers");
  EXPECT_NE(table.output.find("w0"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("IDLE"), std::string::npos) << table.output;
  // Each agent serves its own rank's series; the counters count every step.
  std::string job_label;
  for (int r = 0; r < 2; ++r) {
    const std::string out = dir_ / ("worker" + std::to_string(r) + ".prom");
    auto w = fetch(r == 0 ? w0 : w1, out);
    ASSERT_EQ(w.exit_code, 0) << w.output;
    const std::string ranks = "rank=\"" + std::to_string(r) + "\"";
    const bool has_rank = w.output.find(ranks) != std::string::npos;
    EXPECT_TRUE(has_rank) << w.output;
    EXPECT_NE(w.output.find("attune_train_steps_total{job_id=\""), std::string::npos) << w.output;
    EXPECT_NE(w.output.find("\"} 30\n"), std::string::npos) << "30 steps counted: " << w.output;
    EXPECT_NE(w.output.find("attune_train_step_duration_seconds_count{job_id=\""), std::string::npos);
    EXPECT_NE(w.output.find("attune_allreduce_duration_seconds_count{backend=\"gloo\",job_id=\""),
              std::string::npos);
    EXPECT_NE(w.output.find("attune_train_phase_seconds_total{job_id=\""), std::string::npos);
    EXPECT_NE(w.output.find("attune_eval_metric{job_id=\""), std::string::npos) << w.output;
    EXPECT_NE(w.output.find("metric=\"accuracy\""), std::string::npos) << w.output;
    EXPECT_NE(w.output.find("attune_collective_last_success_timestamp_seconds{job_id=\""), std::string::npos);
    EXPECT_NE(w.output.find("attune_worker_trainer_exits_total{code=\"0\"} 1"), std::string::npos);
    if (r == 0) {
      EXPECT_NE(w.output.find("attune_checkpoint_duration_seconds_count{job_id=\""), std::string::npos);
    }
  }
  // Every metric an endpoint exposes is documented in docs/observability.md.
  const std::string doc = testing::ReadText(std::string(ATTUNE_SOURCE_DIR) + "/docs/observability.md");
  for (const char* f : {"coordinator.prom", "worker0.prom", "worker1.prom"}) {
    std::istringstream lines(testing::ReadText(dir_ / f));
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("# TYPE ", 0) != 0) continue;
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_NE(doc.find("`" + name + "`"), std::string::npos) << name << " (" << f << ") is not in docs/observability.md";
    }
  }
  // promtool, from Debian's prometheus package (scripts/install-deps.sh), lints every exposition.
  for (const char* f : {"coordinator.prom", "worker0.prom", "worker1.prom"}) {
    auto lint = RunCommand("sh -c 'promtool check metrics < " + (dir_ / f) + "'");
    EXPECT_EQ(lint.exit_code, 0) << f << ": " << lint.output;
  }
}

// A real Prometheus (Debian's package) scrapes a coordinator and two agents
// while a 2-rank job trains, evaluating deploy/prometheus/rules.yml; every
// panel query of both dashboards and every rule expression must come back
// well-formed, and the training dashboard's must return data.
TEST_F(ServiceTest, RealPrometheusScrapesTheJobAndAnswersEveryDashboardAndRuleQuery) {
  ASSERT_EQ(RunCommand("sh -c 'command -v prometheus'").exit_code, 0) << "run scripts/install-deps.sh";
  const std::string src = ATTUNE_SOURCE_DIR;
  const int cport = FreePort(), w0 = FreePort(), w1 = FreePort(), pport = FreePort();
  coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                           " --metrics-listen 127.0.0.1:" + std::to_string(cport),
                       dir_ / "coordinator.log");
  WaitForPort();
  StartAgents(2, {"--metrics-listen 127.0.0.1:" + std::to_string(w0), "--metrics-listen 127.0.0.1:" + std::to_string(w1)});
  // The shipped deploy/prometheus/prometheus.yml, with this test's ports and a 1 s interval.
  std::string config = testing::ReadText(src + "/deploy/prometheus/prometheus.yml");
  for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"127.0.0.1:9464", "127.0.0.1:" + std::to_string(cport)},
           {"127.0.0.1:9465", "127.0.0.1:" + std::to_string(w0)},
           {"127.0.0.1:9466", "127.0.0.1:" + std::to_string(w1)},
           {"scrape_interval: 15s", "scrape_interval: 1s"},
           {"evaluation_interval: 15s", "evaluation_interval: 1s"},
           {"  - rules.yml", "  - " + src + "/deploy/prometheus/rules.yml"}}) {
    const size_t at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from << " not in deploy/prometheus/prometheus.yml";
    config.replace(at, from.size(), to);
  }
  testing::WriteText(dir_ / "prometheus.yml", config);
  pid_t prom = Spawn("prometheus --config.file=" + (dir_ / "prometheus.yml") + " --storage.tsdb.path=" +
                         (dir_ / "tsdb") + " --web.listen-address=127.0.0.1:" + std::to_string(pport),
                     dir_ / "prometheus.log");
  Reaper reap{prom};
  const std::string url = "http://127.0.0.1:" + std::to_string(pport);
  // A job long enough to be scraped while it trains; cancelled at the end.
  // (Spec's 100 epochs would end it first: their 4,000 steps took under 50 s.)
  std::string spec = Spec("scraped", 1000000, 0, 50);
  std::string text = testing::ReadText(spec);
  text.replace(text.find("epochs: 100,"), 12, "epochs: 10000,");
  testing::WriteText(spec, text);
  std::string id = Submit(spec);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitState(id, "RUNNING", 60));
  auto query = [&](const std::string& expr) {
    return RunCommand("promtool query instant " + url + " '" + expr + "'", 20).output;
  };
  // Wait for what the slowest panels need: a recording rule (15 s group
  // interval) over rates of two scrapes, and an evaluation and a checkpoint.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool ready = false;
  while (!ready && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    ready = query("attune:train_compute_relative_to_median:ratio").find("=>") != std::string::npos &&
            query("attune:allreduce_hidden:ratio5m").find("=>") != std::string::npos &&
            query("attune_checkpoint_last_success_timestamp_seconds").find("=>") != std::string::npos &&
            query("attune_eval_metric{metric=\"accuracy\"}").find("=>") != std::string::npos &&
            query("rate(attune_checkpoint_duration_seconds_count[1m]) > 0").find("=>") != std::string::npos;
  }
  ASSERT_TRUE(ready) << "no training data in Prometheus after 120 s:\n" << testing::ReadText(dir_ / "prometheus.log");
  EXPECT_NE(query("up{job=\"attune-worker\"} == 1").find("=> 1"), std::string::npos);
  EXPECT_NE(query("up{job=\"attune-coordinator\"} == 1").find("=> 1"), std::string::npos);

  auto run = RunCommand("/usr/bin/python3 " + testing::Fixture("query_prometheus.py") + " " + url + " --dashboards " + src +
                            "/deploy/grafana/training.json " + src + "/deploy/grafana/cluster.json --rules " + src +
                            "/deploy/prometheus/rules.yml",
                        120);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // Training panels that are rightly empty for a healthy job.
  const std::set<std::string> may_be_empty = {"NaN / Inf steps"};
  int checked = 0, with_data = 0;
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    ++checked;
    const std::string where = j["source"].get<std::string>() + ": " + j["name"].get<std::string>() + ": " +
                              j["expr"].get<std::string>();
    EXPECT_EQ(j["status"], "success") << where << " -> " << j["error"];
    EXPECT_TRUE(j["result_type"] == "vector" || j["result_type"] == "scalar") << where;
    const int series = j["series"].get<int>();
    with_data += series > 0;
    if (j["source"] == "training.json" && !may_be_empty.count(j["name"].get<std::string>())) {
      EXPECT_GT(series, 0) << "no data: " << where;
    }
  }
  EXPECT_GE(checked, 50);
  RecordProperty("queries_checked", checked);
  RecordProperty("queries_with_data", with_data);
  // Rules load and evaluate without errors.
  auto rules = RunCommand("/usr/bin/python3 -c \"import json,urllib.request; "
                          "g=json.load(urllib.request.urlopen('" + url + "/api/v1/rules'))['data']['groups']; "
                          "print(sum(len(x['rules']) for x in g), [r['name'] for x in g for r in x['rules'] "
                          "if r.get('health') != 'ok'])\"");
  EXPECT_NE(rules.output.find("14 []"), std::string::npos) << rules.output;
  EXPECT_EQ(Cli("cancel " + id).exit_code, 0);
  EXPECT_TRUE(WaitState(id, "CANCELLED", 30));
}

// A CA, a server certificate for 127.0.0.1 and a client certificate
// <name>.pem / <name>.key with CN=<name> for each of `clients`, in the test's directory.
void MakeCertificates(const testing::TempDir& dir, const std::vector<std::string>& clients) {
  std::string script = "set -e\ncd " + dir.path() + "\n"
                       "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=attune-ca\n"
                       "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost\n"
                       "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext\n"
                       "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
                       "-days 2 -extfile san.ext\n";
  // "name" or "name/O=..." (more subject entries after the CN).
  for (const auto& entry : clients) {
    const std::string c = entry.substr(0, entry.find('/'));
    const std::string more = entry.find('/') == std::string::npos ? "" : entry.substr(entry.find('/'));
    script += "openssl req -newkey rsa:2048 -nodes -keyout " + c + ".key -out " + c + ".csr -subj '/CN=" + c + more +
              "'\n" + "openssl x509 -req -in " + c + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out " + c +
              ".pem -days 2\n";
  }
  testing::WriteText(dir / "certs.sh", script);
  auto gen = RunCommand("sh " + (dir / "certs.sh"));
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
}

TEST_F(ServiceTest, MutualTlsRefusesClientsWithoutCertificatesAndProbesUseThePlaintextHealthPort) {
  const std::string d = dir_.path();
  MakeCertificates(dir_, {"client"});
  const int health_port = FreePort();
  coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                           " --tls-cert " + d + "/server.pem --tls-key " + d + "/server.key --tls-client-ca " + d +
                           "/ca.pem --health-listen 127.0.0.1:" + std::to_string(health_port),
                       dir_ / "coordinator.log");
  const std::string client = TlsClient("client");
  ASSERT_NO_FATAL_FAILURE(WaitForPort(client));
  EXPECT_EQ(Cli("list --timeout_s 2").exit_code, 14);                            // plaintext: UNAVAILABLE
  // The plaintext health port answers a probe (as the kubelet sends it) and serves nothing else.
  auto probe = RunCommand("/usr/bin/python3 " + testing::Fixture("grpc_health.py") + " 127.0.0.1:" +
                          std::to_string(health_port));
  EXPECT_NE(probe.output.find("health SERVING"), std::string::npos) << probe.output;
  EXPECT_NE(probe.output.find("jobs UNIMPLEMENTED"), std::string::npos) << probe.output;
  EXPECT_EQ(Cli("list --timeout_s 2 --tls-ca " + d + "/ca.pem").exit_code, 14);  // TLS without a client certificate
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w0 --cpus 1 --unconfined" + client,
                          dir_ / "agent-w0.log"));
  const std::string spec = OneRankSpec("tls", 10);
  auto run = Cli("submit -f " + spec + " --watch" + client, 120);
  EXPECT_EQ(run.exit_code, 0) << run.output << testing::ReadText(dir_ / "agent-w0.log");
}

// NOTE [certificate identities]: a worker may only use an id its client
// certificate names, and two users sharing a team token are still two owners.
TEST_F(ServiceTest, CertificateIdentitiesBindWorkerIdsAndOwners) {
  const std::string d = dir_.path();
  MakeCertificates(dir_, {"w0", "alice", "bob"});
  testing::WriteText(dir_ / "submit.tokens", "team tok-team\n");
  testing::WriteText(dir_ / "worker.tokens", "agents tok-worker\n");
  coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                           " --data-root " + d + " --tls-cert " + d + "/server.pem --tls-key " + d +
                           "/server.key --tls-client-ca " + d + "/ca.pem --certificate-identities" +
                           " --submit-token-file " + (dir_ / "submit.tokens") + " --worker-token-file " +
                           (dir_ / "worker.tokens"),
                       dir_ / "coordinator.log");
  auto as = [&](const std::string& who) { return TlsClient(who) + " --token_file " + (dir_ / "submit.tokens"); };
  ASSERT_NO_FATAL_FAILURE(WaitForPort(as("alice")));
  const std::string w0_cert = TlsClient("w0") + " --token-file " + (dir_ / "worker.tokens");
  // w0's certificate, claiming to be w1: refused, and never listed.
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w1 --cpus 1 --data-root " + d + w0_cert,
                          dir_ / "agent-w1.log"));
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w0 --cpus 1 --data-root " + d + w0_cert,
                          dir_ / "agent-w0.log"));
  const std::string spec = OneRankSpec("certified", 10);
  auto run = Cli("submit -f " + spec + " --watch -o json" + as("alice"), 120);
  EXPECT_EQ(run.exit_code, 0) << run.output << testing::ReadText(dir_ / "agent-w0.log");
  auto listed = Cli("list -o json" + as("alice"));
  auto jobs = nlohmann::json::parse(listed.output, nullptr, false);
  ASSERT_TRUE(jobs.is_object() && jobs.contains("jobs") && jobs["jobs"].size() == 1) << listed.output;
  const std::string id = jobs["jobs"][0].value("id", "");
  EXPECT_EQ(jobs["jobs"][0].value("owner", ""), "alice");
  EXPECT_EQ(jobs["jobs"][0].value("state", ""), "SUCCEEDED");
  // bob holds the same team token, but is not alice.
  auto stolen = Cli("get " + id + as("bob"));
  EXPECT_EQ(stolen.exit_code, 7) << stolen.output;
  EXPECT_NE(stolen.output.find("belongs to another submitter"), std::string::npos) << stolen.output;
  auto workers = Cli("workers -o json" + as("alice"));
  EXPECT_NE(workers.output.find("\"w0\""), std::string::npos) << workers.output;
  EXPECT_EQ(workers.output.find("\"w1\""), std::string::npos) << workers.output;
  EXPECT_NE(testing::ReadText(dir_ / "agent-w1.log").find("is not named by the client certificate"), std::string::npos)
      << testing::ReadText(dir_ / "agent-w1.log");
}

// NOTE [certificate roles]: the certificate's O=attune:ROLE is the role, no
// token needed; a certificate naming no role, or an unknown one, is refused.
TEST_F(ServiceTest, CertificateRolesAuthorizeWithoutTokens) {
  const std::string d = dir_.path();
  MakeCertificates(dir_, {"w0/O=attune:worker", "alice/O=attune:submit", "ops/O=Example Corp/O=attune:admin", "plain",
                          "bogus/O=attune:root"});
  coordinator_ = Spawn(Bin("attune-coordinator") + " --listen " + addr_ + " --state " + (dir_ / "state.db") +
                           " --data-root " + d + " --tls-cert " + d + "/server.pem --tls-key " + d +
                           "/server.key --tls-client-ca " + d + "/ca.pem --certificate-identities --certificate-roles",
                       dir_ / "coordinator.log");
  ASSERT_NO_FATAL_FAILURE(WaitForPort(TlsClient("alice")));
  // alice's certificate says submit: it may not register as a worker.
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id alice --cpus 1 --data-root " + d +
                              TlsClient("alice"),
                          dir_ / "agent-alice.log"));
  agents_.push_back(Spawn(Bin("attune-worker") + " agent --coordinator " + addr_ + " --worker-id w0 --cpus 1 --data-root " + d + TlsClient("w0"),
                          dir_ / "agent-w0.log"));
  auto run = Cli("submit -f " + OneRankSpec("by-role", 10) + " --watch -o json" + TlsClient("alice"), 120);
  EXPECT_EQ(run.exit_code, 0) << run.output << testing::ReadText(dir_ / "agent-w0.log");
  // The admin sees alice's job; the worker's certificate may not use the job API.
  auto listed = Cli("list -o json" + TlsClient("ops"));
  auto jobs = nlohmann::json::parse(listed.output, nullptr, false);
  ASSERT_TRUE(jobs.is_object() && jobs.contains("jobs") && jobs["jobs"].size() == 1) << listed.output;
  EXPECT_EQ(jobs["jobs"][0].value("owner", ""), "alice");
  EXPECT_EQ(jobs["jobs"][0].value("state", ""), "SUCCEEDED");
  auto as_worker = Cli("list" + TlsClient("w0"));
  EXPECT_EQ(as_worker.exit_code, 7) << as_worker.output;
  EXPECT_NE(as_worker.output.find("role worker may not call this API"), std::string::npos) << as_worker.output;
  auto no_role = Cli("list" + TlsClient("plain"));
  EXPECT_EQ(no_role.exit_code, 7) << no_role.output;
  EXPECT_NE(no_role.output.find("names no role"), std::string::npos) << no_role.output;
  auto bogus = Cli("list" + TlsClient("bogus"));
  EXPECT_EQ(bogus.exit_code, 7) << bogus.output;
  EXPECT_NE(bogus.output.find("unknown role 'attune:root'"), std::string::npos) << bogus.output;
  auto workers = Cli("workers -o json" + TlsClient("ops"));
  EXPECT_NE(workers.output.find("\"w0\""), std::string::npos) << workers.output;
  EXPECT_EQ(workers.output.find("\"alice\""), std::string::npos) << workers.output;
  EXPECT_NE(testing::ReadText(dir_ / "agent-alice.log").find("role submit may not call this API"), std::string::npos)
      << testing::ReadText(dir_ / "agent-alice.log");
}

}  // namespace
}  // namespace attune

namespace attune {
namespace {

// A sweep file over the fixture's data: `trials` trials of a tiny model,
// learning rate log-uniform in [1e-5, 1e-2] and method full or lora.
std::string SweepFile(const testing::TempDir& dir, const std::string& name, int trials, int max_steps,
                      const std::string& early_stopping) {
  std::string s = "name: " + name +
                  "\nspec:\n  name: " + name +
                  "\n  model:\n    config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
                  "intermediate_size: 32, max_position_embeddings: 64}\n    vocab_size: 100\n"
                  "  data: {train: " + (dir / "train.csv") + ", validation: " + (dir / "valid.csv") +
                  ", max_length: 24}\n  method: {type: full}\n"
                  "  hyperparameters: {epochs: 100, max_steps: " + std::to_string(max_steps) +
                  ", batch_size: 4, learning_rate: 1.0e-3}\n"
                  "  evaluation: {every_steps: 20, baseline: false}\n  checkpoint: {every_steps: 20}\n"
                  "  workers: {count: 1}\n  output_dir: " + (dir / ("sweep-" + name)) +
                  "\nparameters:\n  hyperparameters.learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}\n"
                  "  method.type: {choice: [full, lora]}\n"
                  "objective: {metric: roc_auc, goal: max}\nalgorithm: {type: random, seed: 3}\n"
                  "max_trials: " + std::to_string(trials) + "\nparallel_trials: 2\nearly_stopping: " + early_stopping + "\n";
  const std::string path = dir / (name + ".sweep.yaml");
  testing::WriteText(path, s);
  return path;
}

class SweepServiceTest : public ServiceTest {
 protected:
  nlohmann::json GetSweep(const std::string& id) {
    auto r = Cli("sweep get " + id + " -o json");
    if (r.exit_code != 0) return nlohmann::json::object();
    return nlohmann::json::parse(r.output, nullptr, false);
  }
  bool WaitSweep(const std::string& id, const std::string& state, int limit_s) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
    while (std::chrono::steady_clock::now() < until) {
      if (GetSweep(id).value("state", "") == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return false;
  }
};

TEST_F(SweepServiceTest, AnAshaSweepThroughTheCliStopsWeakTrialsAndExportsTheBest) {
  const int cport = FreePort();
  StartCoordinator("--metrics-listen 127.0.0.1:" + std::to_string(cport));
  StartAgents(2);
  const std::string file =
      SweepFile(dir_, "lr-and-method", 6, 100000, "{type: asha, grace_steps: 20, reduction_factor: 3, max_steps: 1000}");
  auto r = Cli("sweep submit -f " + file + " --watch", 600);
  ASSERT_EQ(r.exit_code, 0) << r.output << testing::ReadText(dir_ / "coordinator.log");
  const std::string id = r.output.substr(0, r.output.find('\n'));
  ASSERT_EQ(id.rfind("s-", 0), 0u) << r.output;
  nlohmann::json s = GetSweep(id);
  ASSERT_EQ(s["state"], "SUCCEEDED") << s.dump(2);
  ASSERT_EQ(s["trials"].size(), 6u);
  // ASHA stopped at least one trial at a rung; it was cancelled cleanly and
  // kept its last committed checkpoint.
  int stopped = 0;
  for (const auto& t : s["trials"]) {
    if (!t["stopped_early"].get<bool>()) continue;
    ++stopped;
    EXPECT_EQ(t["state"], "STOPPED_EARLY") << t.dump();
    EXPECT_NE(t["stopped_reason"].get<std::string>().find("asha: roc_auc"), std::string::npos) << t.dump();
    EXPECT_LT(t["steps"].get<int64_t>(), 1000) << t.dump();
    EXPECT_EQ(GetJob(t["job_id"])["state"], "CANCELLED");
    const std::string ckpt = dir_ / ("sweep-lr-and-method/trial-" + std::to_string(t["trial"].get<int>()) + "/checkpoints");
    EXPECT_TRUE(std::filesystem::exists(ckpt) && !std::filesystem::is_empty(ckpt)) << ckpt;
  }
  EXPECT_GE(stopped, 1) << s.dump(2);
  // The best trial has the best objective among the completed ones.
  int best = -1;
  double best_value = -1;
  for (const auto& t : s["trials"]) {
    if (t["state"] != "SUCCEEDED") continue;
    EXPECT_EQ(t["steps"].get<int64_t>(), 1000) << t.dump();  // ASHA's max_steps
    if (t["objective"].get<double>() > best_value) {
      best_value = t["objective"].get<double>();
      best = t["trial"].get<int>();
    }
  }
  ASSERT_GE(best, 0);
  EXPECT_EQ(s["best"]["trial"], best);
  EXPECT_DOUBLE_EQ(s["best"]["objective"].get<double>(), best_value);
  // ...and equals that trial job's own last evaluation (the exported model's).
  auto best_job = GetJob(s["best"]["job_id"]);
  EXPECT_DOUBLE_EQ(best_job["last_eval"]["values"]["roc_auc"].get<double>(), best_value);
  // best/model predicts.
  const std::string out = dir_ / "sweep-lr-and-method";
  auto pred = RunCommand(Bin("attune") + " predict --model " + out + "/best/model --input " + (dir_ / "valid.csv") +
                         " --output " + (dir_ / "pred.jsonl"));
  ASSERT_EQ(pred.exit_code, 0) << pred.output;
  EXPECT_EQ(RunCommand("wc -l < " + (dir_ / "pred.jsonl")).output, "80\n");
  EXPECT_NE(pred.output.find("attune predict: 80 records in"), std::string::npos) << pred.output;  // throughput
  auto report = nlohmann::json::parse(testing::ReadText(out + "/sweep_report.json"));
  EXPECT_EQ(report["best"]["trial"], best);
  EXPECT_NE(testing::ReadText(out + "/sweep_report.html").find("<table id='trials'>"), std::string::npos);
  // The parameters are the seed's, computed independently.
  auto ref = RunCommand("/usr/bin/python3 " + testing::Fixture("sweep_reference.py") +
                        " 3 6 '{\"hyperparameters.learning_rate\": {\"log_uniform\": [1e-5, 1e-2]}, "
                        "\"method.type\": {\"choice\": [\"full\", \"lora\"]}}'");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  std::istringstream lines(ref.output);
  for (int i = 0; i < 6; ++i) {
    std::string line;
    std::getline(lines, line);
    auto want = nlohmann::json::parse(line);
    const auto& got = s["trials"][i]["parameters"];
    EXPECT_EQ(got["method.type"], want["method.type"]) << i;
    EXPECT_NEAR(got["hyperparameters.learning_rate"].get<double>(), want["hyperparameters.learning_rate"].get<double>(),
                1e-12 * want["hyperparameters.learning_rate"].get<double>())
        << i;
    // Each trial is an ordinary job with the trial's values in its spec.
    auto job = GetJob(s["trials"][i]["job_id"]);
    EXPECT_EQ(job["spec"]["labels"]["attune.dev/sweep"], id);
    EXPECT_EQ(job["spec"]["labels"]["attune.dev/trial"], std::to_string(i));
    EXPECT_EQ(job["spec"]["method"]["type"], want["method.type"]);
  }
  auto listed = nlohmann::json::parse(Cli("list --selector attune.dev/sweep=" + id + " -o json").output);
  EXPECT_EQ(listed["jobs"].size(), 6u);
  // Users cannot forge a trial.
  std::string forged = testing::ReadText(Spec("forged", 10, 0));
  testing::WriteText(dir_ / "forged.yaml", forged + "labels: {attune.dev/sweep: " + id + "}\n");
  auto refused = Cli("submit -f " + (dir_ / "forged.yaml"));
  EXPECT_EQ(refused.exit_code, 3) << refused.output;
  EXPECT_NE(refused.output.find("labels.attune.dev/sweep: the attune.dev/ prefix is reserved"), std::string::npos)
      << refused.output;
  // The coordinator's series.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto metrics = RunCommand("/usr/bin/python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                            "'http://127.0.0.1:" + std::to_string(cport) + "/metrics').read().decode())\"");
  EXPECT_NE(metrics.output.find("attune_sweep_trials{state=\"stopped_early\",sweep_id=\"" + id + "\"} " +
                                std::to_string(stopped)),
            std::string::npos)
      << metrics.output;
  EXPECT_NE(metrics.output.find("attune_sweep_best_objective{sweep_id=\"" + id + "\"}"), std::string::npos);
  // The dashboard's Sweeps row, against a real Prometheus scraping this coordinator.
  const int pport = FreePort();
  testing::WriteText(dir_ / "prometheus.yml", "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: attune-coordinator\n"
                                              "    static_configs: [{targets: ['127.0.0.1:" + std::to_string(cport) + "']}]\n");
  pid_t prom = Spawn("prometheus --config.file=" + (dir_ / "prometheus.yml") + " --storage.tsdb.path=" + (dir_ / "tsdb") +
                         " --web.listen-address=127.0.0.1:" + std::to_string(pport),
                     dir_ / "prometheus.log");
  Reaper reap{prom};
  const std::string url = "http://127.0.0.1:" + std::to_string(pport);
  bool scraped = false;
  for (int i = 0; i < 60 && !scraped; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    scraped = RunCommand("promtool query instant " + url + " 'attune_sweep_best_objective'", 20).output.find("=>") !=
              std::string::npos;
  }
  ASSERT_TRUE(scraped) << testing::ReadText(dir_ / "prometheus.log");
  auto run = RunCommand("/usr/bin/python3 " + testing::Fixture("query_prometheus.py") + " " + url + " --dashboards " +
                            ATTUNE_SOURCE_DIR + "/deploy/grafana/cluster.json",
                        120);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::set<std::string> sweep_panels;
  std::istringstream panel_lines(run.output);
  for (std::string line; std::getline(panel_lines, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["expr"].get<std::string>().find("attune_sweep_") == std::string::npos) continue;
    EXPECT_EQ(j["status"], "success") << line;
    EXPECT_GT(j["series"].get<int>(), 0) << line;
    sweep_panels.insert(j["name"].get<std::string>());
  }
  EXPECT_EQ(sweep_panels, (std::set<std::string>{"Trial objective", "Best objective so far", "Stopped early", "Trials by state"}));
  // A bad parameter path or value is refused at submit, naming it.
  std::string bad = testing::ReadText(file);
  bad.replace(bad.find("method.type: {choice: [full, lora]}"), 35, "method.typo: {choice: [full, lora]}");
  testing::WriteText(dir_ / "bad.sweep.yaml", bad);
  auto b = Cli("sweep submit -f " + (dir_ / "bad.sweep.yaml"));
  EXPECT_EQ(b.exit_code, 3) << b.output;
  EXPECT_NE(b.output.find("parameters.method.typo = \"full\""), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("method.typo: unknown field"), std::string::npos) << b.output;
}

TEST_F(SweepServiceTest, ACoordinatorKilledMidSweepFinishesItWithExactlyMaxTrials) {
  StartCoordinator();
  StartAgents(2);
  const std::string file = SweepFile(dir_, "survive", 5, 200, "{type: none}");
  auto r = Cli("sweep submit -f " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string id = r.output.substr(0, r.output.find('\n'));
  // Kill it while trials run and more wait to be started.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < until) {
    auto s = GetSweep(id);
    int running = 0;
    for (const auto& t : s.value("trials", nlohmann::json::array())) running += t["state"] == "RUNNING";
    if (running > 0 && s["trials"].size() >= 2u && s["trials"].size() < 5u) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  KillAndReap(coordinator_);
  StartCoordinator();
  ASSERT_TRUE(WaitSweep(id, "SUCCEEDED", 300)) << GetSweep(id).dump(2) << testing::ReadText(dir_ / "coordinator.log");
  auto s = GetSweep(id);
  ASSERT_EQ(s["trials"].size(), 5u);
  std::set<std::string> jobs;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(s["trials"][i]["trial"], i);
    EXPECT_EQ(s["trials"][i]["state"], "SUCCEEDED") << s["trials"][i].dump();
    jobs.insert(s["trials"][i]["job_id"].get<std::string>());
  }
  EXPECT_EQ(jobs.size(), 5u);
  // None lost, none duplicated: exactly max_trials jobs carry the sweep's label.
  auto listed = nlohmann::json::parse(Cli("list --selector attune.dev/sweep=" + id + " -o json").output);
  EXPECT_EQ(listed["jobs"].size(), 5u);
  EXPECT_EQ(nlohmann::json::parse(Cli("sweep list -o json").output)["sweeps"].size(), 1u);
}

}  // namespace
}  // namespace attune
