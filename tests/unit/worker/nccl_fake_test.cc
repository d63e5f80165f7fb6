// The NCCL communicator's logic on a machine without a GPU: the real
// worker/comm/nccl_communicator.cc, compiled against the in-process CUDA and
// NCCL of tests/fakes/cuda (ranks are threads; a collective completes when
// every rank has issued it; tests make collectives hang or fail). The
// rendezvous store is the real one, on loopback. On a GPU, tests/gpu and
// scripts/gpu-check.sh run the same communicator against real NCCL.

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nccl.h>
#include <torch/torch.h>

#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/comm/communicator.h"
#include "worker/comm/reducer.h"

namespace attune::worker::comm {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

CommunicatorOptions Options(int rank, int world, int port, absl::Duration timeout = absl::Seconds(20)) {
  CommunicatorOptions o;
  o.rank = rank;
  o.world_size = world;
  o.master_port = port;
  o.timeout = timeout;
  o.job = "fake";
  return o;
}

// Runs `body(rank, communicator)` on `world` threads, each with its own NCCL communicator.
void RunRanks(int world, absl::Duration timeout, const std::function<void(int, Communicator&)>& body) {
  const int port = attune::testing::FreePort();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto c = CreateNcclCommunicator(Options(r, world, port, timeout));
      ASSERT_THAT(c, IsOk());
      EXPECT_EQ((*c)->backend(), "nccl");
      body(r, **c);
    });
  }
  for (auto& t : threads) t.join();
}

// Makes every collective that the two ranks issue after this call hang (and,
// with `async`, report that error). After a working barrier, the threads meet
// (outside NCCL) before and after rank 0 changes the fake, so the change
// holds for both ranks' next collective and for none before it.
struct HangAfterBarrier {
  std::atomic<int> before{0}, after{0};
  void operator()(int rank, Communicator& c, ncclResult_t async = ncclSuccess) {
    ASSERT_THAT(c.Barrier(), IsOk());
    Meet(before);
    if (rank == 0) {
      fake_nccl::SetHang(true);
      if (async != ncclSuccess) fake_nccl::SetAsyncError(async);
    }
    Meet(after);
  }
  static void Meet(std::atomic<int>& arrived) {
    ++arrived;
    while (arrived.load() < 2) std::this_thread::yield();
  }
};

class NcclFakeTest : public ::testing::Test {
 protected:
  void SetUp() override { fake_nccl::Reset(1); }
};

TEST_F(NcclFakeTest, CollectivesOfThreeRanksMatchTheSumsComputedHere) {
  const int world = 3;
  RunRanks(world, absl::Seconds(20), [&](int r, Communicator& c) {
    // fp32, int64 and bf16 (exact: small halves), each rank its own values.
    for (auto dtype : {torch::kFloat32, torch::kInt64, torch::kBFloat16}) {
      torch::Tensor base = torch::arange(1000, torch::kFloat64).remainder(37);
      if (dtype != torch::kInt64) base = base / 2;
      torch::Tensor t = (base + r).to(dtype);
      auto w = c.AllReduceSum(t);
      ASSERT_THAT(w, IsOk());
      ASSERT_THAT((*w)->Wait(c.timeout()), IsOk());
      EXPECT_TRUE(torch::equal(t.to(torch::kFloat64), base * world + 3.0)) << c10::toString(dtype);
    }
    torch::Tensor b = torch::full({17}, static_cast<double>(r + 5));
    ASSERT_THAT(BroadcastBlocking(c, b, 1), IsOk());
    EXPECT_TRUE(torch::equal(b, torch::full({17}, 6.0)));
    // Lengths differ by rank: AllGatherVariable pads, gathers twice, trims.
    auto all = AllGatherVariable(c, torch::full({r + 1}, static_cast<double>(r), torch::kFloat64));
    ASSERT_THAT(all, IsOk());
    EXPECT_TRUE(torch::equal(*all, torch::tensor({0.0, 1.0, 1.0, 2.0, 2.0, 2.0}, torch::kFloat64)));
    // ncclReduceScatter: rank r gets block r of the sum (staged through the device).
    torch::Tensor in = torch::arange(1, 3 * 4 + 1, torch::kFloat32) * static_cast<float>(r + 1);
    torch::Tensor out = torch::empty({4}, torch::kFloat32);
    ASSERT_THAT(ReduceScatterSumBlocking(c, in, out), IsOk());
    EXPECT_TRUE(torch::equal(out, torch::arange(r * 4 + 1, r * 4 + 5, torch::kFloat32) * 6.0f));
    // In place: into the rank's own block of the input (rank 0's starts the buffer).
    torch::Tensor own = torch::arange(1, 3 * 4 + 1, torch::kFloat32) * static_cast<float>(r + 1);
    ASSERT_THAT(ReduceScatterSumBlocking(c, own, own.narrow(0, r * 4, 4)), IsOk());
    EXPECT_TRUE(torch::equal(own.narrow(0, r * 4, 4), out));
    // And back, in place (rank 0's block starts the buffer: NCCL's in-place form).
    torch::Tensor whole = torch::zeros({12});
    whole.narrow(0, r * 4, 4).copy_(out);
    ASSERT_THAT(c.AllGatherInPlace(whole), IsOk());
    EXPECT_TRUE(torch::equal(whole, torch::arange(1, 13, torch::kFloat32) * 6.0f));
    EXPECT_THAT(c.Barrier(), IsOk());
    EXPECT_THAT(c.Broadcast(b, 3).status(), StatusIs(absl::StatusCode::kInvalidArgument, "root 3 is not a rank"));
    EXPECT_THAT(c.AllReduceSum(torch::ones({4}, torch::kBool)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "not reducible by NCCL"));
    EXPECT_THAT(c.AllReduceSum(torch::ones({4, 4}).t()).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "contiguous"));
  });
  EXPECT_EQ(fake_nccl::LiveBuffers(), 0) << "every staging buffer is freed";
  EXPECT_EQ(fake_nccl::Aborts(), world) << "a communicator is aborted, not destroyed, at its end";
}

// The Reducer over NCCL: two ranks with different batches end with the same,
// averaged gradients, as one process over both batches.
TEST_F(NcclFakeTest, TheReducerAveragesGradientsAcrossRanks) {
  torch::manual_seed(0);
  torch::nn::Linear reference(8, 3);
  torch::Tensor x = torch::randn({4, 8});
  reference->zero_grad();
  (reference->forward(x).square().sum() / 4).backward();
  RunRanks(2, absl::Seconds(20), [&](int r, Communicator& c) {
    torch::nn::Linear net(8, 3);
    {
      torch::NoGradGuard g;
      net->weight.copy_(reference->weight);
      net->bias.copy_(reference->bias);
    }
    ReducerOptions ro;
    ro.bucket_cap_bytes = 64;  // one bucket per tensor
    Reducer reducer(net->parameters(), c, ro);
    reducer.PrepareForBackward(true);
    (net->forward(x.slice(0, 2 * r, 2 * r + 2)).square().sum() / 4).backward();
    ASSERT_THAT(reducer.FinishBackward(), IsOk());
    EXPECT_TRUE(torch::allclose(net->weight.grad(), reference->weight.grad(), 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(net->bias.grad(), reference->bias.grad(), 1e-6, 1e-6));
  });
}

// A collective that never completes (a peer lost mid-step): Wait returns
// kDeadlineExceeded after the timeout, the communicator is aborted with
// ncclCommAbort, and every later call fails at once.
TEST_F(NcclFakeTest, AHungCollectiveTimesOutAndAbortsTheCommunicator) {
  HangAfterBarrier hang;
  RunRanks(2, absl::Seconds(20), [&](int r, Communicator& c) {
    hang(r, c);
    torch::Tensor t = torch::ones({8});
    auto w = c.AllReduceSum(t);
    ASSERT_THAT(w, IsOk());
    EXPECT_THAT((*w)->Wait(absl::Milliseconds(300)),
                StatusIs(absl::StatusCode::kDeadlineExceeded, "job=fake rank=" + std::to_string(r) + " nccl allreduce timed out"));
    EXPECT_THAT(c.AllReduceSum(t).status(), StatusIs(absl::StatusCode::kAborted, "was aborted"));
    EXPECT_THAT(c.Barrier(), StatusIs(absl::StatusCode::kAborted, ""));
  });
  EXPECT_EQ(fake_nccl::Aborts(), 2);
}

// Abort() from another thread (the trainer's watchdog) releases a waiter.
TEST_F(NcclFakeTest, AbortFromAnotherThreadReleasesAWaiter) {
  HangAfterBarrier hang;
  RunRanks(2, absl::Seconds(60), [&](int r, Communicator& c) {
    hang(r, c);
    auto w = c.AllReduceSum(torch::ones({8}));
    ASSERT_THAT(w, IsOk());
    std::thread watchdog([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      c.Abort();
    });
    EXPECT_THAT((*w)->Wait(absl::Seconds(60)), StatusIs(absl::StatusCode::kAborted, "aborted"));
    watchdog.join();
  });
}

// An asynchronous NCCL error (a remote rank died) maps to kUnavailable naming
// the op, and aborts the communicator.
TEST_F(NcclFakeTest, AnAsyncErrorBecomesUnavailableNamingTheOperation) {
  HangAfterBarrier hang;
  RunRanks(2, absl::Seconds(20), [&](int r, Communicator& c) {
    hang(r, c, ncclRemoteError);
    auto w = c.AllReduceSum(torch::ones({8}));
    ASSERT_THAT(w, IsOk());
    EXPECT_THAT((*w)->Wait(absl::Seconds(20)),
                StatusIs(absl::StatusCode::kUnavailable, "rank=" + std::to_string(r) + " nccl allreduce failed: remote process"));
    EXPECT_THAT(c.Barrier(), StatusIs(absl::StatusCode::kAborted, ""));
  });
  EXPECT_EQ(fake_nccl::Aborts(), 2);
}

TEST_F(NcclFakeTest, AMissingRankOrDeviceIsReportedNotWaitedOnForever) {
  // Rank 1 never comes: the rendezvous names how many arrived.
  EXPECT_THAT(CreateNcclCommunicator(Options(0, 2, attune::testing::FreePort(), absl::Seconds(1))).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "1 of 2 ranks arrived"));
  CommunicatorOptions o = Options(0, 1, attune::testing::FreePort());
  o.device_index = 3;
  EXPECT_THAT(CheckNcclBackend(o), StatusIs(absl::StatusCode::kFailedPrecondition, "only 1 CUDA device(s) are visible"));
  fake_nccl::Reset(0);
  EXPECT_THAT(CreateNcclCommunicator(Options(0, 1, attune::testing::FreePort())).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "needs a CUDA GPU"));
}

}  // namespace
}  // namespace attune::worker::comm
