// The rendezvous store: its semantics (those of c10d's Store; comm_test
// checks them against a real TCPStore), where it listens, and what it does
// with a peer that sends garbage.

#include "worker/comm/kv_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"

namespace attune::worker::comm {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;
using ::attune::testing::IsOkAndHolds;
using ::testing::Optional;

std::unique_ptr<KvServer> Serve(const std::string& host = "127.0.0.1", KvLimits limits = {}) {
  auto s = KvServer::Start(host, 0, limits);
  EXPECT_THAT(s, IsOk());
  return s.ok() ? *std::move(s) : nullptr;
}

std::unique_ptr<KvClient> Client(const KvServer& server, absl::Duration timeout = absl::Seconds(5)) {
  auto c = KvClient::Connect(server.address(), server.port(), timeout);
  EXPECT_THAT(c, IsOk());
  return c.ok() ? *std::move(c) : nullptr;
}

int RawConnect(const std::string& ip, int port) { return attune::testing::ConnectTcp(ip, port); }

// True when the server closed `fd` (recv sees end of stream within 5 s).
bool ClosedByPeer(int fd) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[64];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

TEST(KvStoreTest, SetGetAddCompareSetDeleteCheckCount) {
  auto server = Serve();
  auto c = Client(*server);
  EXPECT_THAT(c->Get("a"), IsOkAndHolds(std::optional<std::string>()));
  ASSERT_THAT(c->Set("a", std::string("x\0y", 3)), IsOk());
  EXPECT_THAT(c->Get("a"), IsOkAndHolds(Optional(std::string("x\0y", 3))));
  EXPECT_THAT(c->Add("n", 5), IsOkAndHolds(5));
  EXPECT_THAT(c->Add("n", -7), IsOkAndHolds(-2));
  EXPECT_THAT(c->Get("n"), IsOkAndHolds(Optional(std::string("-2"))));
  EXPECT_THAT(c->Add("a", 1), StatusIs(absl::StatusCode::kInvalidArgument, "does not hold an integer"));
  ASSERT_THAT(c->Set("big", "9223372036854775807"), IsOk());
  EXPECT_THAT(c->Add("big", 1), StatusIs(absl::StatusCode::kInvalidArgument, "overflows"));
  // compareSet: absent + empty expected sets; absent + other expected returns expected; match sets; else current.
  EXPECT_THAT(c->CompareSet("k", "", "v1"), IsOkAndHolds(std::string("v1")));
  EXPECT_THAT(c->CompareSet("j", "zz", "v1"), IsOkAndHolds(std::string("zz")));
  EXPECT_THAT(c->Get("j"), IsOkAndHolds(std::optional<std::string>()));
  EXPECT_THAT(c->CompareSet("k", "v1", "v2"), IsOkAndHolds(std::string("v2")));
  EXPECT_THAT(c->CompareSet("k", "v1", "v3"), IsOkAndHolds(std::string("v2")));
  EXPECT_THAT(c->Check({"a", "k"}), IsOkAndHolds(true));
  EXPECT_THAT(c->Check({"a", "j"}), IsOkAndHolds(false));
  EXPECT_THAT(c->NumKeys(), IsOkAndHolds(4));
  EXPECT_THAT(c->Delete("a"), IsOkAndHolds(true));
  EXPECT_THAT(c->Delete("a"), IsOkAndHolds(false));
  EXPECT_THAT(c->NumKeys(), IsOkAndHolds(3));
}

TEST(KvStoreTest, WaitReturnsWhenAnotherClientSetsTheKeyAndTimesOutNamingIt) {
  auto server = Serve();
  auto waiter = Client(*server);
  auto setter = Client(*server);
  std::thread t([&] {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_THAT(setter->Set("late", "here"), IsOk());
  });
  EXPECT_THAT(waiter->WaitGet("late", absl::Seconds(10)), IsOkAndHolds(std::string("here")));
  t.join();
  const absl::Time start = absl::Now();
  EXPECT_THAT(waiter->Wait({"late", "never"}, absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "waiting for key 'never'"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(KvStoreTest, ListensOnItsHostsAddressOnlyNeverEveryInterface) {
  // 127.0.0.2 is this machine too: a socket bound to every interface (as
  // c10d's TCPStore binds) answers there; ours, bound to 127.0.0.1, must not.
  auto server = Serve("127.0.0.1");
  EXPECT_EQ(server->address(), "127.0.0.1");
  int ok = RawConnect("127.0.0.1", server->port());
  EXPECT_GE(ok, 0);
  if (ok >= 0) close(ok);
  EXPECT_EQ(RawConnect("127.0.0.2", server->port()), -1) << "the store answers on an address it was not given";
  EXPECT_THAT(KvClient::Connect("127.0.0.2", server->port(), absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "cannot connect to the rendezvous store at 127.0.0.2"));
  EXPECT_THAT(KvServer::Start("0.0.0.0", 0), StatusIs(absl::StatusCode::kInvalidArgument, "every interface"));
  EXPECT_THAT(KvServer::Start("::", 0), StatusIs(absl::StatusCode::kInvalidArgument, "every interface"));
  EXPECT_THAT(KvServer::Start("", 0), StatusIs(absl::StatusCode::kInvalidArgument, "host"));
  EXPECT_THAT(KvServer::Start("127.0.0.1", server->port()),
              StatusIs(absl::StatusCode::kUnavailable, "cannot listen at 127.0.0.1"));
}

TEST(KvStoreTest, GarbageFromOnePeerClosesThatConnectionOnly) {
  auto server = Serve();
  auto good = Client(*server);
  ASSERT_THAT(good->Set("k", "v"), IsOk());
  const std::vector<std::string> probes = {
      std::string("\xff\xff\xff\xff", 4),                                 // a 4 GiB frame
      std::string("\x00\x00\x00\x00", 4),                                 // an empty frame
      std::string("\x01\x00\x00\x00\x63", 5),                             // unknown op 99
      std::string("\x06\x00\x00\x00\x01\x10\x00\x00\x00\x6b", 10),        // a field longer than the frame
      std::string("\x05\x00\x00\x00\x01\x00\x00\x00\x00", 9),             // set with one field
  };
  for (const auto& p : probes) {
    int fd = RawConnect("127.0.0.1", server->port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, p.data(), p.size(), 0), static_cast<ssize_t>(p.size()));
    EXPECT_TRUE(ClosedByPeer(fd)) << "probe of " << p.size() << " bytes";
    close(fd);
  }
  EXPECT_THAT(good->Get("k"), IsOkAndHolds(Optional(std::string("v"))));
}

TEST(KvStoreTest, SizesAndConnectionsAreBounded) {
  KvLimits l;
  l.max_key_bytes = 8;
  l.max_value_bytes = 16;
  l.max_keys = 3;
  l.max_total_bytes = 30;
  l.max_connections = 2;
  auto server = Serve("127.0.0.1", l);
  auto c = Client(*server);
  EXPECT_THAT(c->Set("123456789", "v"), StatusIs(absl::StatusCode::kInvalidArgument, "a key of 9 bytes"));
  EXPECT_THAT(c->Set("", "v"), StatusIs(absl::StatusCode::kInvalidArgument, "a key of 0 bytes"));
  EXPECT_THAT(c->Set("k", std::string(17, 'x')), StatusIs(absl::StatusCode::kInvalidArgument, "a value of 17 bytes"));
  ASSERT_THAT(c->Set("a", std::string(16, 'x')), IsOk());
  EXPECT_THAT(c->Set("b", std::string(16, 'x')), StatusIs(absl::StatusCode::kInvalidArgument, "more than 30 bytes"));
  ASSERT_THAT(c->Set("b", "1"), IsOk());
  ASSERT_THAT(c->Set("c", "1"), IsOk());
  EXPECT_THAT(c->Set("d", "1"), StatusIs(absl::StatusCode::kInvalidArgument, "3 keys"));
  ASSERT_THAT(c->Set("c", "22"), IsOk()) << "replacing a key is not a new key";
  // A frame larger than any well-formed request is not read to its end.
  int fd = RawConnect("127.0.0.1", server->port());
  ASSERT_GE(fd, 0);
  std::string big("\x00\x10\x00\x00", 4);  // 4 KiB announced; no request can exceed 45 bytes here
  ASSERT_EQ(send(fd, big.data(), big.size(), 0), 4);
  EXPECT_TRUE(ClosedByPeer(fd));
  close(fd);
  // Connections beyond the limit are closed at once; the held ones carry on.
  auto second = Client(*server);
  int third = RawConnect("127.0.0.1", server->port());
  ASSERT_GE(third, 0);
  EXPECT_TRUE(ClosedByPeer(third));
  close(third);
  EXPECT_THAT(second->NumKeys(), IsOkAndHolds(3));
  EXPECT_THAT(c->NumKeys(), IsOkAndHolds(3));
}

// NOTE [rendezvous secret]: what a peer without the generation's secret gets.
TEST(KvStoreTest, WithASecretOnlyConnectionsThatPresentItReadOrWrite) {
  const std::string secret(32, 'a'), other(32, 'b');
  auto started = KvServer::Start("127.0.0.1", 0, {}, secret);
  ASSERT_THAT(started, IsOk());
  auto& server = *started;
  auto rank = KvClient::Connect("127.0.0.1", server->port(), absl::Seconds(5), secret);
  ASSERT_THAT(rank, IsOk());
  ASSERT_THAT((*rank)->Set("attune/gloo/0", "10.0.0.1:4000"), IsOk());
  EXPECT_THAT((*rank)->Add("attune/arrived", 1), IsOkAndHolds(1));

  // A wrong secret, and none at all: denied, naming why; the table is untouched.
  EXPECT_THAT(KvClient::Connect("127.0.0.1", server->port(), absl::Seconds(5), other),
              StatusIs(absl::StatusCode::kPermissionDenied, "secret does not match"));
  auto anonymous = KvClient::Connect("127.0.0.1", server->port(), absl::Seconds(5));
  ASSERT_THAT(anonymous, IsOk()) << "the TCP connection itself is accepted";
  EXPECT_THAT((*anonymous)->Set("attune/gloo/0", "6.6.6.6:4000"),
              StatusIs(absl::StatusCode::kPermissionDenied, "admits only the job's ranks"));
  EXPECT_THAT((*anonymous)->Get("attune/gloo/0"), StatusIs(absl::StatusCode::kUnavailable, "failed earlier"));
  // Raw probes: a table op first, and a hello carrying a table op's frame.
  for (const std::string& request : {EncodeKvRequest(kKvGet, {"attune/gloo/0"}),
                                     EncodeKvRequest(kKvAdd, {"attune/arrived", "5"}),
                                     EncodeKvRequest(kKvHello, {other})}) {
    int fd = RawConnect("127.0.0.1", server->port());
    ASSERT_GE(fd, 0);
    std::string frame(4, '\0');
    for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((request.size() >> (8 * i)) & 0xff);
    frame += request;
    ASSERT_EQ(send(fd, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
    char code = 0;
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char head[5];
    ASSERT_EQ(recv(fd, head, 5, MSG_WAITALL), 5);
    code = head[4];
    EXPECT_EQ(code, 3) << "denied";
    EXPECT_TRUE(ClosedByPeer(fd));
    close(fd);
  }
  EXPECT_THAT((*rank)->Get("attune/gloo/0"), IsOkAndHolds(Optional(std::string("10.0.0.1:4000"))));
  EXPECT_THAT((*rank)->Add("attune/arrived", 0), IsOkAndHolds(1));
  EXPECT_GE(server->refused_connections(), 5);
  // The secret cannot be longer than a hello frame carries.
  EXPECT_THAT(KvServer::Start("127.0.0.1", 0, {}, std::string(129, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, "129 bytes"));
}

TEST(KvStoreTest, SilentAndFloodingPeersCannotHoldAStoreThatHasASecret) {
  const std::string secret(32, 'c');
  KvLimits l;
  l.max_connections = 8;
  l.max_unauthenticated = 4;
  l.hello_timeout = absl::Milliseconds(300);
  auto started = KvServer::Start("127.0.0.1", 0, l, secret);
  ASSERT_THAT(started, IsOk());
  auto& server = *started;
  // A peer that connects and says nothing is closed after the hello timeout.
  const absl::Time t0 = absl::Now();
  int silent = RawConnect("127.0.0.1", server->port());
  ASSERT_GE(silent, 0);
  EXPECT_TRUE(ClosedByPeer(silent));
  EXPECT_GE(absl::Now() - t0, absl::Milliseconds(250));
  close(silent);
  // 50 silent connections, more than max_connections: each new one pushes out
  // the oldest waiting, so the ranks still get in and carry on.
  std::vector<int> flood;
  for (int i = 0; i < 50; ++i) flood.push_back(RawConnect("127.0.0.1", server->port()));
  std::vector<std::unique_ptr<KvClient>> ranks;
  for (int r = 0; r < 4; ++r) {
    auto c = KvClient::Connect("127.0.0.1", server->port(), absl::Seconds(5), secret);
    ASSERT_THAT(c, IsOk()) << "rank " << r;
    ranks.push_back(*std::move(c));
  }
  for (int i = 0; i < 50; ++i) flood.push_back(RawConnect("127.0.0.1", server->port()));
  for (auto& c : ranks) EXPECT_THAT(c->Add("attune/arrived", 1), IsOk());
  EXPECT_THAT(ranks[0]->Add("attune/arrived", 0), IsOkAndHolds(4));
  int closed = 0;
  for (int fd : flood) {
    if (fd >= 0 && ClosedByPeer(fd)) ++closed;
    if (fd >= 0) close(fd);
  }
  EXPECT_EQ(closed, 100) << "every silent connection is closed, by eviction or its hello timeout";
  EXPECT_GE(server->refused_connections(), 101);
}

TEST(KvStoreTest, WithoutASecretAHelloIsAnsweredAndChangesNothing) {
  auto server = Serve();
  auto c = KvClient::Connect(server->address(), server->port(), absl::Seconds(5), std::string(32, 'd'));
  ASSERT_THAT(c, IsOk());
  EXPECT_THAT((*c)->Set("k", "v"), IsOk());
  auto plain = Client(*server);
  EXPECT_THAT(plain->Get("k"), IsOkAndHolds(Optional(std::string("v"))));
  EXPECT_THAT(plain->NumKeys(), IsOkAndHolds(1));
  EXPECT_EQ(server->refused_connections(), 0);
}

TEST(KvStoreTest, AClientOfAServerThatStopsFailsWithinItsTimeout) {
  auto server = Serve();
  auto c = Client(*server, absl::Seconds(2));
  ASSERT_THAT(c->Set("k", "v"), IsOk());
  server.reset();
  EXPECT_THAT(c->Get("k"), StatusIs(absl::StatusCode::kUnavailable, "rendezvous store"));
  EXPECT_THAT(KvClient::Connect("127.0.0.1", 0, absl::Seconds(1)), StatusIs(absl::StatusCode::kInvalidArgument, "port"));
}

// A server that answers late: the late answer must not be taken as the next
// call's. The first call times out; every later call fails at once.
TEST(KvStoreTest, AfterATimeoutALateAnswerIsNeverReadAsTheNextCallsAnswer) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(lfd, 1), 0);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::thread slow([lfd] {
    int fd = accept(lfd, nullptr, nullptr);
    char buf[256];
    (void)!recv(fd, buf, sizeof(buf), 0);
    absl::SleepFor(absl::Milliseconds(600));
    const std::string late("\x06\x00\x00\x00\x00\x01\x00\x00\x00" "9", 10);  // ok, "9"
    (void)!send(fd, late.data(), late.size(), MSG_NOSIGNAL);
    absl::SleepFor(absl::Milliseconds(300));
    close(fd);
  });
  auto c = KvClient::Connect("127.0.0.1", ntohs(a.sin_port), absl::Milliseconds(300));
  ASSERT_THAT(c, IsOk());
  EXPECT_THAT((*c)->NumKeys(), StatusIs(absl::StatusCode::kDeadlineExceeded, "timed out"));
  absl::SleepFor(absl::Milliseconds(700));  // the late answer has arrived by now
  EXPECT_THAT((*c)->NumKeys(), StatusIs(absl::StatusCode::kUnavailable, "failed earlier"));
  slow.join();
  close(lfd);
}

}  // namespace
}  // namespace attune::worker::comm
