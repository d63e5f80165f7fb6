// Ranks as threads over real Gloo TCP on loopback (c10d CollectiveTest
// style): collectives, variable-size gathers and the reducer.

#include <unistd.h>

#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include "common/testing/status_matchers.h"
#include "worker/comm/communicator.h"
#include "worker/comm/kv_store.h"
#include "tests/testing/process.h"
#include "worker/comm/reducer.h"

namespace attune::worker::comm {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

// Runs fn(rank, communicator) on `world` threads. The ranks share a
// rendezvous secret, as the agents' trainers do (NOTE [rendezvous secret]).
void OnRanks(int world, const std::function<void(int, Communicator&)>& fn, bool final_barrier = true) {
  const std::string secret = "0123456789abcdef0123456789abcdef";
  const int port = attune::testing::FreePort();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions o;
      o.rank = r;
      o.world_size = world;
      o.master_port = port;
      o.timeout = absl::Seconds(20);
      o.rendezvous_secret = secret;
      auto c = CreateGlooCommunicator(o);
      ASSERT_THAT(c, IsOk());
      fn(r, **c);
      if (final_barrier) {
        EXPECT_THAT((*c)->Barrier(), IsOk());
      }
    });
  }
  for (auto& t : threads) t.join();
}

class CommTest : public ::testing::TestWithParam<int> {};

TEST_P(CommTest, AllReduceBroadcastAndVariableGather) {
  const int world = GetParam();
  OnRanks(world, [world](int r, Communicator& c) {
    torch::Tensor t = torch::full({5}, static_cast<float>(r + 1));
    ASSERT_THAT(AllReduceSumBlocking(c, t), IsOk());
    EXPECT_FLOAT_EQ(t[3].item<float>(), world * (world + 1) / 2.0f);
    torch::Tensor b = torch::full({3}, static_cast<float>(r * 10));
    ASSERT_THAT(BroadcastBlocking(c, b, 0), IsOk());
    EXPECT_FLOAT_EQ(b[0].item<float>(), 0.0f);
    // Rank r contributes r + 1 values equal to r.
    auto all = AllGatherVariable(c, torch::full({r + 1}, static_cast<double>(r), torch::kFloat64));
    ASSERT_THAT(all, IsOk());
    ASSERT_EQ(all->size(0), world * (world + 1) / 2);
    int64_t k = 0;
    for (int q = 0; q < world; ++q) {
      for (int i = 0; i <= q; ++i) EXPECT_EQ((*all)[k++].item<double>(), q);
    }
  });
}

TEST_P(CommTest, ReducerSumsGradientsAndToleratesUnusedParameters) {
  const int world = GetParam();
  for (bool overlap : {true, false}) {
    OnRanks(world, [world, overlap](int r, Communicator& c) {
      torch::Tensor a = torch::ones({4}, torch::requires_grad());
      torch::Tensor unused = torch::ones({3}, torch::requires_grad());
      torch::Tensor b = torch::ones({2, 2}, torch::requires_grad());
      ReducerOptions o;
      o.bucket_cap_bytes = 20;  // several buckets
      o.overlap = overlap;
      Reducer reducer({a, unused, b}, c, o);
      EXPECT_GE(reducer.bucket_count(), 2u);
      for (int step = 0; step < 2; ++step) {
        a.mutable_grad() = torch::Tensor();
        b.mutable_grad() = torch::Tensor();
        reducer.PrepareForBackward(true);
        ((a * static_cast<float>(r + 1)).sum() + (b * 2).sum()).backward();
        ASSERT_THAT(reducer.FinishBackward(), IsOk());
        EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), world * (world + 1) / 2.0f);
        EXPECT_FLOAT_EQ(b.grad()[1][1].item<float>(), 2.0f * world);
        EXPECT_FLOAT_EQ(unused.grad()[0].item<float>(), 0.0f);
      }
    });
  }
}

TEST_P(CommTest, AccumulationCommunicatesOnlyOnTheLastMicroBatch) {
  const int world = GetParam();
  OnRanks(world, [world](int r, Communicator& c) {
    torch::Tensor a = torch::zeros({3}, torch::requires_grad());
    Reducer reducer({a}, c, {});
    reducer.PrepareForBackward(false);
    (a * 1.0f).sum().backward();
    EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 1.0f);  // local only
    reducer.PrepareForBackward(true);
    (a * 2.0f).sum().backward();
    ASSERT_THAT(reducer.FinishBackward(), IsOk());
    EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f * world);
    EXPECT_EQ(reducer.stats().steps, 1);
  });
}

TEST_P(CommTest, HalfPrecisionBucketsStillSum) {
  const int world = GetParam();
  OnRanks(world, [world](int r, Communicator& c) {
    torch::Tensor a = torch::zeros({8}, torch::requires_grad());
    ReducerOptions o;
    o.compression = "fp16";
    Reducer reducer({a}, c, o);
    reducer.PrepareForBackward(true);
    (a * 0.5f).sum().backward();
    ASSERT_THAT(reducer.FinishBackward(), IsOk());
    EXPECT_FLOAT_EQ(a.grad()[7].item<float>(), 0.5f * world);
    EXPECT_EQ(reducer.stats().bytes_per_step, 8 * 2);
  });
}

TEST_P(CommTest, ReduceScatterLeavesEachRankItsBlockOfTheSumAndAllGatherBringsThemBack) {
  const int world = GetParam();
  OnRanks(world, [world](int r, Communicator& c) {
    for (int64_t n : {1, 5, 1000}) {
      // Element j of rank r's input: (r + 1) * (j + 1).
      torch::Tensor in = torch::arange(1, world * n + 1, torch::kFloat32) * static_cast<float>(r + 1);
      torch::Tensor out = torch::empty({n}, torch::kFloat32);
      ASSERT_THAT(ReduceScatterSumBlocking(c, in, out), IsOk());
      const torch::Tensor want = torch::arange(r * n + 1, (r + 1) * n + 1, torch::kFloat32) * (world * (world + 1) / 2.0f);
      EXPECT_TRUE(torch::equal(out, want)) << "n=" << n << " rank " << r;
      // In place: into the rank's own block of the input.
      torch::Tensor own = torch::arange(1, world * n + 1, torch::kFloat32) * static_cast<float>(r + 1);
      ASSERT_THAT(ReduceScatterSumBlocking(c, own, own.narrow(0, r * n, n)), IsOk());
      EXPECT_TRUE(torch::equal(own.narrow(0, r * n, n), want));
      // And back: each rank's block into every rank's buffer.
      torch::Tensor all = torch::full({world * n}, -1.0f);
      all.narrow(0, r * n, n).copy_(out);
      ASSERT_THAT(c.AllGatherInPlace(all), IsOk());
      EXPECT_TRUE(torch::equal(all, torch::arange(1, world * n + 1, torch::kFloat32) * (world * (world + 1) / 2.0f)));
    }
    EXPECT_THAT(c.AllGatherInPlace(torch::zeros({world * 2 + 1})),
                StatusIs(absl::StatusCode::kInvalidArgument, "a multiple of world size"));
    torch::Tensor in = torch::zeros({world * 3 + 1});
    torch::Tensor out = torch::zeros({3});
    EXPECT_THAT(c.ReduceScatterSum(in, out).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "not world size"));
  });
}

// NOTE [sharded buckets]: the pieces the ranks own cover every element once;
// each rank's part of the gradients is the allreduced sum's; the parameters
// are gathered back from each rank's part.
TEST_P(CommTest, ShardedBucketsGiveEachRankItsPartOfTheSumAndGatherTheParameters) {
  const int world = GetParam();
  for (const char* compression : {"none", "fp16"}) {
    std::vector<std::vector<Reducer::Piece>> owned(static_cast<size_t>(world));
    OnRanks(world, [&, world](int r, Communicator& c) {
      torch::Tensor a = torch::ones({7}, torch::requires_grad());
      torch::Tensor unused = torch::ones({3}, torch::requires_grad());
      torch::Tensor b = torch::ones({2, 5}, torch::requires_grad());
      std::vector<torch::Tensor> params{a, unused, b};
      ReducerOptions o;
      o.bucket_cap_bytes = 40;  // a bucket for b, one for unused and a
      o.shard = true;
      o.compression = compression;
      Reducer reducer(params, c, o);
      ASSERT_EQ(reducer.bucket_count(), 2u);
      reducer.PrepareForBackward(true);
      ((a * static_cast<float>(r + 1)).sum() + (b * 0.5f).sum()).backward();
      ASSERT_THAT(reducer.FinishBackward(), IsOk());
      owned[static_cast<size_t>(r)] = reducer.OwnedPieces();
      for (const Reducer::Piece& p : reducer.OwnedPieces()) {
        const float want = p.param == 0 ? world * (world + 1) / 2.0f : p.param == 2 ? 0.5f * world : 0.0f;
        torch::Tensor got = reducer.shard_grad(p.bucket).narrow(0, p.shard_offset, p.length);
        EXPECT_TRUE(torch::equal(got, torch::full({p.length}, want))) << "param " << p.param << " rank " << r;
        // Each rank writes its rank into the pieces it owns; the gather brings them all.
        params[p.param].detach().view({-1}).narrow(0, p.param_offset, p.length).fill_(static_cast<float>(r));
      }
      ASSERT_THAT(reducer.GatherParameters(), IsOk());
      std::vector<torch::Tensor> seen;
      for (const auto& t : params) seen.push_back(t.detach().clone().view({-1}));
      // The parameters now tell which rank owned each element; every rank sees the same.
      torch::Tensor all = torch::cat(seen);
      std::vector<torch::Tensor> gathered;
      ASSERT_THAT(c.AllGather(all, &gathered), IsOk());
      for (const auto& g : gathered) EXPECT_TRUE(torch::equal(g, all));
    });
    // Every element of every parameter is owned exactly once.
    std::vector<std::vector<int>> count{std::vector<int>(7), std::vector<int>(3), std::vector<int>(10)};
    for (const auto& pieces : owned) {
      for (const auto& p : pieces) {
        for (int64_t k = 0; k < p.length; ++k) ++count[p.param][static_cast<size_t>(p.param_offset + k)];
      }
    }
    for (const auto& per_param : count) {
      for (int n : per_param) EXPECT_EQ(n, 1) << compression;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CommTest, ::testing::Values(2, 3));

TEST(CommErrorsTest, BadOptionsAndMissingPeers) {
  CommunicatorOptions o;
  o.rank = 2;
  o.world_size = 2;
  o.master_port = 1234;
  EXPECT_THAT(CreateGlooCommunicator(o), StatusIs(absl::StatusCode::kInvalidArgument, "outside world size"));
  o.rank = 0;
  o.master_port = attune::testing::FreePort();
  o.timeout = absl::Seconds(1);
  EXPECT_THAT(CreateGlooCommunicator(o), StatusIs(absl::StatusCode::kDeadlineExceeded, "1 of 2 ranks arrived"));
  EXPECT_THAT(CreateCommunicator("mpi", o), StatusIs(absl::StatusCode::kInvalidArgument, "workers.backend"));
}

// Without a GPU (this machine) the NCCL backend refuses before any rendezvous,
// naming the job, the rank and why, and pointing at Gloo; it never crashes or
// waits. With a GPU, tests/gpu covers it.
TEST(CommErrorsTest, NcclWithoutAGpuRefusesClearlyBeforeTheRendezvous) {
  CommunicatorOptions o;
  o.job = "tiny";
  o.rank = 1;
  o.world_size = 2;
  o.master_port = attune::testing::FreePort();  // nobody serves it: a rendezvous would wait
  o.timeout = absl::Seconds(30);
  if (CheckNcclBackend(o).ok()) GTEST_SKIP() << "a GPU is visible: tests/gpu covers NCCL";
  // A rendezvous attempt would end kUnavailable ("cannot reach the
  // rendezvous store"), not kFailedPrecondition.
  for (const absl::Status& s : {CheckNcclBackend(o), CreateNcclCommunicator(o).status(),
                                CreateCommunicator("nccl", o).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("job=tiny rank=1"));
    EXPECT_THAT(std::string(s.message()), ::testing::AnyOf(::testing::HasSubstr("needs a CUDA GPU"),
                                                           ::testing::HasSubstr("this build has no NCCL")));
  }
  o.device_index = 7;
  EXPECT_EQ(CheckNcclBackend(o).code(), absl::StatusCode::kFailedPrecondition);
}

// A rank holding another generation's secret (or none) is denied by rank 0's
// store, saying so; rank 0 then reports the missing rank, not a wrong group.
TEST(CommErrorsTest, ARankWithoutTheGenerationsSecretIsDeniedAtTheRendezvous) {
  for (const std::string& intruder : {std::string(32, 'f'), std::string()}) {
    const int port = attune::testing::FreePort();
    absl::Status s0, s1;
    std::thread r0([&] {
      CommunicatorOptions o;
      o.job = "tiny";
      o.world_size = 2;
      o.master_port = port;
      o.timeout = absl::Seconds(3);
      o.rendezvous_secret = std::string(32, 'e');
      s0 = CreateGlooCommunicator(o).status();
    });
    std::thread r1([&] {
      CommunicatorOptions o;
      o.job = "tiny";
      o.rank = 1;
      o.world_size = 2;
      o.master_port = port;
      o.timeout = absl::Seconds(3);
      o.rendezvous_secret = intruder;
      s1 = CreateGlooCommunicator(o).status();
    });
    r0.join();
    r1.join();
    EXPECT_THAT(s1, StatusIs(absl::StatusCode::kPermissionDenied, "job=tiny rank=1"));
    EXPECT_THAT(std::string(s1.message()),
                ::testing::HasSubstr(intruder.empty() ? "admits only the job's ranks" : "secret does not match"));
    EXPECT_THAT(s0, StatusIs(absl::StatusCode::kDeadlineExceeded, "1 of 2 ranks arrived"));
  }
}

bool Answers(const std::string& ip, int port) {
  int fd = attune::testing::ConnectTcp(ip, port);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

// The same operations on c10d's TCPStore (the reference) and on our store
// give the same answers; c10d's answers on 127.0.0.2 too, ours does not.
TEST(RendezvousStoreTest, AnswersAsTcpStoreDoesButOnlyOnItsHost) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(attune::testing::FreePort());
  so.isServer = true;
  so.numWorkers = 1;
  so.waitWorkers = false;
  so.timeout = std::chrono::seconds(5);
  c10d::TCPStore reference("127.0.0.1", so);
  auto server = KvServer::Start("127.0.0.1", attune::testing::FreePort());
  ASSERT_THAT(server, IsOk());
  auto ours = KvClient::Connect("127.0.0.1", (*server)->port(), absl::Seconds(5));
  ASSERT_THAT(ours, IsOk());
  auto bytes = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  auto vec = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };

  reference.set("a", vec("one"));
  ASSERT_THAT((*ours)->Set("a", "one"), IsOk());
  EXPECT_EQ(*(*ours)->WaitGet("a", absl::Seconds(1)), bytes(reference.get("a")));
  for (int64_t d : {3, -10, 0, 42}) EXPECT_EQ(*(*ours)->Add("n", d), reference.add("n", d));
  EXPECT_EQ(*(*ours)->WaitGet("n", absl::Seconds(1)), bytes(reference.get("n"))) << "add stores decimal text";
  const std::vector<std::tuple<std::string, std::string, std::string>> cas = {
      {"c", "", "x"}, {"c", "x", "y"}, {"c", "x", "z"}, {"d", "q", "r"}};
  for (const auto& [k, expected, desired] : cas) {
    EXPECT_EQ(*(*ours)->CompareSet(k, expected, desired), bytes(reference.compareSet(k, vec(expected), vec(desired))))
        << k << " " << expected << " -> " << desired;
  }
  EXPECT_EQ(*(*ours)->Check({"a", "c"}), reference.check({"a", "c"}));
  EXPECT_EQ(*(*ours)->Check({"a", "d"}), reference.check({"a", "d"}));
  EXPECT_EQ(*(*ours)->Delete("a"), reference.deleteKey("a"));
  EXPECT_EQ(*(*ours)->Delete("a"), reference.deleteKey("a"));

  EXPECT_TRUE(Answers("127.0.0.2", so.port)) << "c10d's TCPStore listens on every interface";
  EXPECT_FALSE(Answers("127.0.0.2", (*server)->port()));
}

// A Gloo group's rank 0 serves the rendezvous on master_host alone.
TEST(RendezvousStoreTest, GlooRankZerosStoreListensOnMasterHostOnly) {
  const int port = attune::testing::FreePort();
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<bool> done{false};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions o;
      o.rank = r;
      o.world_size = 2;
      o.master_port = port;
      o.timeout = absl::Seconds(20);
      auto c = CreateGlooCommunicator(o);
      ASSERT_THAT(c, IsOk());
      ++ready;
      while (!done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      EXPECT_THAT((*c)->Barrier(), IsOk());
    });
  }
  while (ready.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(Answers("127.0.0.1", port));
  EXPECT_FALSE(Answers("127.0.0.2", port));
  done = true;
  for (auto& t : threads) t.join();

  CommunicatorOptions wild;
  wild.master_host = "0.0.0.0";
  wild.master_port = attune::testing::FreePort();
  wild.timeout = absl::Seconds(2);
  EXPECT_THAT(CreateGlooCommunicator(wild), StatusIs(absl::StatusCode::kUnavailable, "every interface"));
}

TEST(CommErrorsTest, AbortFailsLaterOperationsAtOnce) {
  OnRanks(2, [](int r, Communicator& c) {
    ASSERT_THAT(c.Barrier(), IsOk());
    if (r == 0) {
      c.Abort();
      EXPECT_THAT(c.AllReduceSum(torch::ones({1})), StatusIs(absl::StatusCode::kAborted, "aborted"));
      EXPECT_THAT(c.Barrier(), StatusIs(absl::StatusCode::kAborted, "aborted"));
    }
  }, /*final_barrier=*/false);
}

}  // namespace
}  // namespace attune::worker::comm
