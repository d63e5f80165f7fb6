// PrometheusMetrics served over real HTTP on loopback, linted by promtool, and
// the mapping of trainer events onto series (counters count every step).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <vector>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/prometheus/prometheus_metrics.h"
#include "worker/agent/trainer_metrics.h"

namespace attune {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// One HTTP/1.1 request over a plain socket; returns the whole response.
std::string HttpRequest(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  ::send(fd, request.data(), request.size(), 0);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string Get(int port, const std::string& path) {
  return HttpRequest(port, "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

TEST(PrometheusMetricsTest, ServesTextExpositionOverHttp) {
  auto m = common::PrometheusMetrics::Serve("127.0.0.1:0");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_GT((*m)->port(), 0);
  (*m)->SetGauge("attune_test_value", "a test gauge", {{"job_id", "j1"}}, 2.5);
  (*m)->AddCounter("attune_test_events_total", "a test counter", {}, 3);
  (*m)->Observe("attune_test_duration_seconds", "a test histogram", {}, {0.1, 1}, 0.5);
  const std::string r = Get((*m)->port(), "/metrics");
  EXPECT_THAT(r, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(r, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(r, HasSubstr("attune_test_value{job_id=\"j1\"} 2.5"));
  EXPECT_THAT(r, HasSubstr("attune_test_events_total 3"));
  EXPECT_THAT(r, HasSubstr("attune_test_duration_seconds_bucket{le=\"1\"} 1"));
  EXPECT_THAT(Get((*m)->port(), "/nope"), HasSubstr("404 Not Found"));
  EXPECT_THAT(HttpRequest((*m)->port(), "POST /metrics HTTP/1.1\r\n\r\n"), HasSubstr("405"));
}

// 15 idle sockets delayed every scrape by 30 s when connections were served
// one at a time. Now a scrape is answered while they are all still open
// (the server has not yet given up on the first of them).
TEST(PrometheusMetricsTest, IdleAndHalfSentConnectionsDelayNoScrape) {
  auto m = common::PrometheusMetrics::Serve("127.0.0.1:0");
  ASSERT_TRUE(m.ok()) << m.status();
  (*m)->SetGauge("attune_test_value", "a test gauge", {}, 1);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>((*m)->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> idle;
  for (int i = 0; i < 15; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    if (i % 3 == 0) ::send(fd, "GET /metr", 9, 0);  // a head that never ends
    idle.push_back(fd);
  }
  for (int k = 0; k < 3; ++k) EXPECT_THAT(Get((*m)->port(), "/metrics"), HasSubstr("attune_test_value 1"));
  char c;
  for (int fd : idle) {
    // -1/EAGAIN: still open, nothing to read. 0 would mean the server closed it.
    EXPECT_EQ(::recv(fd, &c, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
    ::close(fd);
  }
}

TEST(PrometheusMetricsTest, BadAddressesAreRefusedClearly) {
  auto busy = common::PrometheusMetrics::Serve("127.0.0.1:0");
  ASSERT_TRUE(busy.ok());
  auto again = common::PrometheusMetrics::Serve("127.0.0.1:" + std::to_string((*busy)->port()));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable) << again.status();
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("cannot serve metrics on 127.0.0.1:"));
  EXPECT_EQ(common::PrometheusMetrics::Serve("no-port").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(common::PrometheusMetrics::Serve("127.0.0.1:99999").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerMetricsTest, ProgressEventsFeedCountersHistogramsAndGauges) {
  auto m = common::PrometheusMetrics::Serve("127.0.0.1:0");
  ASSERT_TRUE(m.ok());
  worker::agent::TrainerLabels who{"job-7", 1, "gloo"};
  // Two progress events covering 3 steps: counters must count all three.
  worker::agent::ExportTrainerEvent(**m, who,
      R"({"type":"progress","step":2,"total":10,"epoch":0.2,"loss":0.7,"lr":0.001,"sps":30,"tps":900,)"
      R"("steps":2,"samples":16,"tokens":400,"step_seconds":[0.3,0.02],)"
      R"("phases":{"data":0.01,"forward":0.1,"backward":0.15,"allreduce":0.04,"optimizer":0.02},)"
      R"("reduce_seconds":[0.05,0.002],"reduce_exposed":0.03,"reduce_bytes":2000,)"
      R"("reduce_total_seconds":0.052,"reduce_total_exposed_seconds":0.03,"collective_ts":1700000000.5})");
  worker::agent::ExportTrainerEvent(**m, who,
      R"({"type":"progress","step":3,"total":10,"epoch":0.3,"loss":0.6,"lr":0.001,"sps":31,"tps":910,)"
      R"("steps":1,"samples":8,"tokens":200,"step_seconds":[0.2],"phases":{"data":0.5},"precision":"bf16"})");
  worker::agent::ExportTrainerEvent(
      **m, who, R"({"type":"eval","step":3,"metrics":{"accuracy":0.75,"f1":0.5,"roc_auc":0.8,"Bad-Name":1,"x":"y"}})");
  worker::agent::ExportTrainerEvent(**m, who, R"({"type":"checkpoint","step":3,"seconds":0.4,"unix_seconds":17e8})");
  worker::agent::ExportTrainerEvent(
      **m, who, R"({"type":"baseline","method":"tfidf_logreg","metrics":{"accuracy":0.8,"Bad-Name":1}})");
  worker::agent::ExportTrainerEvent(**m, who, R"({"type":"baseline","method":"Bad Method","metrics":{"f1":0.1}})");
  worker::agent::ExportTrainerEvent(**m, who, "not json");            // ignored
  worker::agent::ExportTrainerEvent(**m, who, R"({"type":"other"})");  // ignored
  const std::string t = (*m)->Render();
  const std::string l = "job_id=\"job-7\",rank=\"1\"";
  EXPECT_THAT(t, HasSubstr("attune_train_steps_total{" + l + "} 3"));
  EXPECT_THAT(t, HasSubstr("attune_train_samples_total{" + l + "} 24"));
  EXPECT_THAT(t, HasSubstr("attune_train_tokens_total{" + l + "} 600"));
  EXPECT_THAT(t, HasSubstr("attune_train_step_duration_seconds_count{" + l + "} 3"));
  EXPECT_THAT(t, HasSubstr("attune_train_step_duration_seconds_bucket{" + l + ",le=\"0.025\"} 1"));
  EXPECT_THAT(t, HasSubstr("attune_train_loss{" + l + "} 0.6"));
  EXPECT_THAT(t, HasSubstr("attune_train_info{job_id=\"job-7\",precision=\"bf16\",rank=\"1\"} 1"));
  EXPECT_THAT(t, HasSubstr("attune_train_phase_seconds_total{job_id=\"job-7\",phase=\"data\",rank=\"1\"} 0.51"));
  EXPECT_THAT(t, HasSubstr("attune_allreduce_duration_seconds_count{backend=\"gloo\"," + l + "} 2"));
  EXPECT_THAT(t, HasSubstr("attune_allreduce_bytes_total{backend=\"gloo\"," + l + "} 2000"));
  EXPECT_THAT(t, HasSubstr("attune_collective_last_success_timestamp_seconds{" + l + "} 1700000000.5"));
  EXPECT_THAT(t, HasSubstr("attune_eval_metric{job_id=\"job-7\",metric=\"roc_auc\",rank=\"1\"} 0.8"));
  EXPECT_THAT(t, HasSubstr("attune_eval_metric{job_id=\"job-7\",metric=\"accuracy\",rank=\"1\"} 0.75"));
  EXPECT_THAT(t, HasSubstr("attune_eval_step{" + l + "} 3"));
  EXPECT_THAT(t, HasSubstr("attune_eval_baseline_metric{job_id=\"job-7\",method=\"tfidf_logreg\",metric=\"accuracy\","
                           "rank=\"1\"} 0.8"));
  EXPECT_THAT(t, Not(HasSubstr("Bad Method")));
  EXPECT_THAT(t, Not(HasSubstr("Bad-Name")));  // names outside [a-z0-9_] are not exported
  EXPECT_THAT(t, Not(HasSubstr("metric=\"x\"")));
  EXPECT_THAT(t, HasSubstr("attune_checkpoint_duration_seconds_count{" + l + "} 1"));
  EXPECT_THAT(t, HasSubstr("attune_checkpoint_last_step{" + l + "} 3"));
  // hidden = 1 - 0.03 / 0.052
  EXPECT_THAT(t, HasSubstr("attune_allreduce_hidden_ratio{backend=\"gloo\"," + l + "} 0.4230769"));

  // The exposition passes promtool's lint (Debian's prometheus package, from scripts/install-deps.sh).
  const std::string path = ::testing::TempDir() + "/metrics.prom";
  std::ofstream(path) << t;
  EXPECT_EQ(std::system(("promtool check metrics < " + path).c_str()), 0) << t;

  // After the task ends its series go; others stay.
  worker::agent::ExportTrainerEvent(**m, {"job-8", 0, "gloo"},
                                    R"({"type":"progress","step":1,"total":1,"steps":1,"step_seconds":[0.1]})");
  worker::agent::ForgetTrainer(**m, who);
  const std::string after = (*m)->Render();
  EXPECT_THAT(after, Not(HasSubstr("job-7")));
  EXPECT_THAT(after, HasSubstr("attune_train_steps_total{job_id=\"job-8\",rank=\"0\"} 1"));
}

}  // namespace
}  // namespace attune
