// The engine in phases (NOTE [engine phases]), driven in-process: the phases
// are the whole run, two ranks on comm::FakeGroup stay identical and take the
// steps one rank takes with their combined batch, and a stop that one rank is
// asked for ends every rank at the same step, checkpointed.

#include "worker/train/engine.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/checkpoint.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/engine_ranks.h"
#include "tests/testing/process.h"
#include "tests/testing/weights.h"
#include "worker/comm/fake_communicator.h"

namespace attune::worker::train {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two classes told apart by their words, with shared filler, in rows of
    // different lengths.
    const char* pos[] = {"fresh tasty", "great flavour", "lovely and fresh", "tasty snack"};
    const char* neg[] = {"stale bland", "awful taste", "bland and stale", "soggy mess"};
    const char* filler[] = {"", " the box", " it was", " my kids said"};
    std::string train = "text,label\n", valid = "text,label\n";
    for (int i = 0; i < 64; ++i) {
      const bool p = i % 2 == 0;
      std::string row = absl::StrCat(p ? pos[i / 2 % 4] : neg[i / 2 % 4], filler[i / 8 % 4], " ", i, ",",
                                     p ? "pos" : "neg", "\n");
      (i < 48 ? train : valid) += row;
    }
    attune::testing::WriteText(dir_.path() + "/train.csv", train);
    attune::testing::WriteText(dir_.path() + "/valid.csv", valid);
  }

  common::JobConfig Config(const std::string& out) const {
    common::JobConfig c;
    c.name = "engine";
    c.train_path = dir_.path() + "/train.csv";
    c.validation_path = dir_.path() + "/valid.csv";
    c.max_length = 16;
    c.has_model_config = true;
    c.model_config.hidden_size = 16;
    c.model_config.num_hidden_layers = 1;
    c.model_config.num_attention_heads = 2;
    c.model_config.intermediate_size = 32;
    c.model_config.max_position_embeddings = 32;
    c.model_config.hidden_dropout_prob = 0;
    c.model_config.attention_probs_dropout_prob = 0;
    c.built_vocab_size = 200;
    c.batch_size = 8;
    c.epochs = 2;
    c.learning_rate = 1e-2;
    c.weight_decay = 0.01;
    c.warmup_ratio = 0.1;
    c.eval_every_steps = 4;
    c.eval_baseline = false;
    c.output_dir = dir_.path() + "/" + out;
    return c;
  }
  // A model directory to start from: fixed weights, whatever the random
  // state of the process (two ranks in threads share one generator).
  std::string BaseModel() {
    common::JobConfig c = Config("base");
    c.max_steps = 1;
    TrainerOptions o;
    o.resume = false;
    auto r = RunTraining(c, o, nullptr);
    EXPECT_THAT(r.status(), IsOk());
    return r.ok() ? r->model_dir : "";
  }
  // Two ranks of `c` on one FakeGroup; rank 1's process alone sees `stop`.
  struct TwoRanks {
    explicit TwoRanks(const common::JobConfig& c, const std::atomic<bool>* stop = nullptr) : group(2) {
      for (int r = 0; r < 2; ++r) {
        comms.push_back(group.Rank(r));
        options[r].resume = false;
        options[r].communicator = comms.back().get();
        if (r == 1) options[r].stop_requested = stop;
        ranks.push_back(std::make_unique<Engine>(c, options[r], nullptr));
      }
    }
    comm::FakeGroup group;
    std::vector<std::unique_ptr<comm::Communicator>> comms;
    TrainerOptions options[2];
    std::vector<std::unique_ptr<Engine>> ranks;
  };
  static std::vector<std::pair<std::string, torch::Tensor>> Parameters(Engine& e) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& [name, t] : e.model()->NamedParameters()) out.emplace_back(name, t.detach().clone());
    return out;
  }

  // Runs `c` on `world` ranks to its end; rank 0's parameters, after
  // checking that every rank ends with the same.
  std::vector<std::pair<std::string, torch::Tensor>> RunOnRanks(const common::JobConfig& c, int world, bool resume,
                                                                int64_t bucket_cap_bytes = 0) {
    auto ranks = attune::testing::RunEngines(c, world, resume, false, bucket_cap_bytes);
    for (const auto& s : ranks->statuses) EXPECT_THAT(s, IsOk());
    const auto p0 = Parameters(*ranks->engines[0]);
    for (int r = 1; r < world; ++r) {
      const auto pr = Parameters(*ranks->engines[static_cast<size_t>(r)]);
      for (size_t i = 0; i < p0.size(); ++i) EXPECT_TRUE(torch::equal(p0[i].second, pr[i].second)) << p0[i].first << " rank " << r;
    }
    return p0;
  }
  static double Farthest(const std::vector<std::pair<std::string, torch::Tensor>>& a,
                         const std::vector<std::pair<std::string, torch::Tensor>>& b) {
    EXPECT_EQ(a.size(), b.size());
    double worst = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      worst = std::max(worst, (a[i].second - b[i].second).abs().max().item<double>());
    }
    return worst;
  }

  attune::testing::TempDir dir_{"engine"};
};

TEST_F(EngineTest, ThePhasesAreTheWholeRun) {
  TrainerOptions o;
  o.resume = false;
  auto whole = RunTraining(Config("whole"), o, nullptr);
  ASSERT_THAT(whole.status(), IsOk());

  Engine e(Config("phases"), o, nullptr);
  EXPECT_TRUE(e.Done());
  EXPECT_THAT(e.Step(), StatusIs(absl::StatusCode::kFailedPrecondition, "not set up"));
  ASSERT_THAT(e.Setup(), IsOk());
  EXPECT_THAT(e.Setup(), StatusIs(absl::StatusCode::kFailedPrecondition, "already set up"));
  EXPECT_EQ(e.total_steps(), 12);  // 48 rows / 8, 2 epochs
  int64_t steps = 0;
  while (!e.Done()) {
    const int64_t before = e.state().step;
    ASSERT_THAT(e.Step(), IsOk());
    // One optimizer step each time (an epoch's end comes with its last step).
    EXPECT_EQ(e.state().step, before + 1);
    ++steps;
  }
  EXPECT_EQ(steps, 12);
  EXPECT_THAT(e.Step(), StatusIs(absl::StatusCode::kFailedPrecondition, "training is over"));
  // Evaluations every 4 steps; the epoch ends at 6 and 12 add one at 6.
  std::vector<int64_t> evaluated;
  for (const auto& p : e.state().evals) evaluated.push_back(p.step);
  EXPECT_EQ(evaluated, (std::vector<int64_t>{4, 6, 8, 12}));
  auto finished = e.Finish();
  ASSERT_THAT(finished.status(), IsOk());
  EXPECT_EQ(finished->steps, whole->steps);
  EXPECT_EQ(finished->stop_reason, "completed");
  for (const auto& [k, v] : whole->final_metrics.Named()) EXPECT_EQ(finished->final_metrics.Named().at(k), v) << k;
  auto a = common::ReadFile(whole->model_dir + "/model.safetensors", 1 << 26);
  auto b = common::ReadFile(finished->model_dir + "/model.safetensors", 1 << 26);
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_THAT(b.status(), IsOk());
  EXPECT_TRUE(*a == *b) << "the exported weights differ";
}

TEST_F(EngineTest, TwoRanksStayIdenticalAndTakeOneRanksStepsWithTheirCombinedBatch) {
  const std::string base = BaseModel();
  ASSERT_FALSE(base.empty());
  auto configured = [&](const std::string& out, int64_t batch) {
    common::JobConfig c = Config(out);
    c.model_path = base;
    c.batch_size = batch;
    c.max_steps = 5;
    c.eval_every_steps = 0;
    return c;
  };
  TrainerOptions one_rank;
  one_rank.resume = false;
  Engine one(configured("one", 16), one_rank, nullptr);
  ASSERT_THAT(one.Setup(), IsOk());

  TwoRanks two(configured("two", 8));
  auto& ranks = two.ranks;
  // Each phase on both ranks at once, as separate processes would.
  auto both = [&](auto phase) {
    std::vector<absl::Status> got(2);
    std::thread t1([&] { got[1] = phase(*ranks[1]); });
    got[0] = phase(*ranks[0]);
    t1.join();
    return got;
  };
  for (const auto& s : both([](Engine& e) { return e.Setup(); })) ASSERT_THAT(s, IsOk());
  while (!one.Done()) {
    ASSERT_THAT(one.Step(), IsOk());
    for (const auto& s : both([](Engine& e) { return e.Step(); })) ASSERT_THAT(s, IsOk());
    const auto p0 = Parameters(*ranks[0]), p1 = Parameters(*ranks[1]), p = Parameters(one);
    ASSERT_EQ(p0.size(), p.size());
    double worst = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(torch::equal(p0[i].second, p1[i].second)) << p0[i].first << " at step " << one.state().step;
      worst = std::max(worst, (p0[i].second - p[i].second).abs().max().item<double>());
    }
    // The same global batch, summed in another order.
    EXPECT_LT(worst, 1e-5) << "at step " << one.state().step;
    ASSERT_EQ(ranks[0]->state().step, one.state().step);
    EXPECT_DOUBLE_EQ(ranks[0]->state().train_loss.back().second, ranks[1]->state().train_loss.back().second);
    EXPECT_NEAR(ranks[0]->state().train_loss.back().second, one.state().train_loss.back().second, 1e-5);
  }
  EXPECT_TRUE(ranks[0]->Done() && ranks[1]->Done());
  std::vector<absl::StatusOr<TrainResult>> results(2);
  std::thread t1([&] { results[1] = ranks[1]->Finish(); });
  results[0] = ranks[0]->Finish();
  t1.join();
  auto single = one.Finish();
  ASSERT_THAT(single.status(), IsOk());
  for (const auto& r : results) {
    ASSERT_THAT(r.status(), IsOk());
    EXPECT_EQ(r->steps, 5);
    EXPECT_EQ(r->stop_reason, "max_steps");
    EXPECT_NEAR(r->final_metrics.loss, single->final_metrics.loss, 1e-5);
    EXPECT_EQ(r->final_metrics.count, single->final_metrics.count);
  }
}

TEST_F(EngineTest, AStopAskedOfOneRankEndsEveryRankAtTheSameStepWithACheckpoint) {
  const std::string base = BaseModel();
  ASSERT_FALSE(base.empty());
  common::JobConfig c = Config("stopped");
  c.model_path = base;
  c.checkpoint_every_steps = 100;
  std::atomic<bool> stop{false};
  TwoRanks two(c, &stop);  // only rank 1's process gets the SIGTERM
  auto& ranks = two.ranks;
  std::vector<absl::Status> last(2);
  std::vector<int64_t> stopped_at(2, -1);
  auto run = [&](int r) {
    Engine& e = *ranks[static_cast<size_t>(r)];
    last[r] = e.Setup();
    while (last[r].ok() && !e.Done()) {
      if (r == 1 && e.state().step == 3) stop = true;
      last[r] = e.Step();
    }
    stopped_at[r] = e.state().step;
  };
  std::thread t1(run, 1);
  run(0);
  t1.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(last[r], StatusIs(absl::StatusCode::kCancelled, "stopped on request (SIGTERM) after step 4"))
        << "rank " << r;
    EXPECT_EQ(stopped_at[r], 4) << "rank " << r;
  }
  std::vector<std::string> skipped;
  const auto committed = common::VerifiedCheckpoints(c.output_dir + "/checkpoints", &skipped);
  std::vector<int64_t> steps;
  for (const auto& k : committed) steps.push_back(k.step);
  std::sort(steps.begin(), steps.end());
  // The end of the first epoch (3 steps of 2 x 8 rows), and the step it stopped at.
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 4}));
}

// workers.sharding: optimizer (ZeRO-1) and gradients (ZeRO-2, whose
// micro-batches are each reduce-scattered and summed in the rank's part)
// take the steps an unsharded run takes: weight decay in its groups,
// accumulation and a clipping that binds.
TEST_F(EngineTest, TheShardedOptimizerTakesTheUnshardedStepsWithAccumulationAndClipping) {
  const std::string base = BaseModel();
  ASSERT_FALSE(base.empty());
  for (const auto& [method, world] : {std::pair<std::string, int>{"full", 2}, {"full", 3}, {"lora", 2}}) {
    auto configured = [&, method = method, world = world](const std::string& sharding) {
      common::JobConfig c = Config(absl::StrCat("sharded_", method, sharding, world));
      c.method = method;  // lora: the frozen weights are in no bucket and have no optimizer state
      c.model_path = base;
      c.batch_size = 4;
      c.gradient_accumulation_steps = 2;
      c.max_grad_norm = 0.05;  // below the gradients' norm: every step is clipped
      c.max_steps = 5;
      c.eval_every_steps = 0;
      c.sharding = sharding;
      return c;
    };
    const auto none = RunOnRanks(configured("none"), world, false);
    for (const std::string mode : {"optimizer", "gradients"}) {
      const auto sharded = RunOnRanks(configured(mode), world, false);
      EXPECT_LT(Farthest(none, sharded), 1e-5) << mode << ", " << method << ", " << world << " ranks";
    }
    // Buckets of 512 elements: the larger parameters are cut across several
    // (NOTE [sharded gradients]), the others share one.
    const auto small = RunOnRanks(configured("gradients"), world, false, /*bucket_cap_bytes=*/2048);
    EXPECT_LT(Farthest(none, small), 1e-5) << "gradients, 2 KB buckets, " << method << ", " << world << " ranks";
    // And it trained: the exported weights (LoRA merged) moved from the base's.
    EXPECT_GT(attune::testing::MaxAbsDiff(base + "/model.safetensors",
                                          configured("optimizer").output_dir + "/model/model.safetensors"),
              1e-3)
        << method;
  }
}

// NOTE [consolidated optimizer checkpoints]: a run may go on in another mode
// at another world size, and ends where one uninterrupted run ends.
TEST_F(EngineTest, ACheckpointResumesInAnotherShardingModeAtAnotherWorldSize) {
  const std::string base = BaseModel();
  ASSERT_FALSE(base.empty());
  // 48 rows, global batch 12 (2 x 6, 1 x 12, 3 x 4), 2 micro-batches a step:
  // 2 steps an epoch, checkpointed at each epoch's end. A constant rate, so
  // that a run's total steps do not change its schedule.
  auto configured = [&](const std::string& out, int world, const std::string& sharding, int64_t steps) {
    common::JobConfig c = Config(out);
    c.model_path = base;
    c.batch_size = 12 / world;
    c.gradient_accumulation_steps = 2;
    c.max_grad_norm = 0.05;
    c.lr_scheduler = "constant";
    c.warmup_ratio = 0;
    c.epochs = 4;
    c.max_steps = steps;
    c.eval_every_steps = 0;
    c.sharding = sharding;
    return c;
  };
  const auto whole = RunOnRanks(configured("whole", 1, "none", 8), 1, false);
  // Sharded -> unsharded -> sharded gradients -> sharded again (a sharded
  // run's export of an imported state).
  RunOnRanks(configured("chain", 2, "optimizer", 2), 2, false);
  RunOnRanks(configured("chain", 1, "none", 4), 1, true);
  RunOnRanks(configured("chain", 3, "gradients", 6), 3, true);
  const auto chained = RunOnRanks(configured("chain", 2, "optimizer", 8), 2, true);
  EXPECT_LT(Farthest(whole, chained), 1e-5);
  std::vector<std::string> skipped;
  std::vector<int64_t> steps;
  for (const auto& k : common::VerifiedCheckpoints(dir_.path() + "/chain/checkpoints", &skipped)) steps.push_back(k.step);
  std::sort(steps.begin(), steps.end());
  EXPECT_EQ(steps, (std::vector<int64_t>{6, 8})) << "keep_last 2 of the checkpoints at 2, 4, 6 and 8";
}

}  // namespace
}  // namespace attune::worker::train
