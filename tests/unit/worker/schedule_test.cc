#include "worker/train/schedule.h"

#include <cmath>

#include <gtest/gtest.h>

namespace attune::worker::train {
namespace {

TEST(ScheduleTest, LinearWarmupThenLinearDecay) {
  // As transformers' get_linear_schedule_with_warmup(warmup=4, total=12).
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 0, 4, 12), 0.0);
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 2, 4, 12), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 4, 4, 12), 1.0);
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 8, 4, 12), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 12, 4, 12), 0.0);
  EXPECT_DOUBLE_EQ(LearningRateFactor("linear", 0, 0, 10), 1.0);
}

TEST(ScheduleTest, CosineAndConstant) {
  EXPECT_DOUBLE_EQ(LearningRateFactor("cosine", 4, 4, 12), 1.0);
  EXPECT_NEAR(LearningRateFactor("cosine", 8, 4, 12), 0.5, 1e-12);
  EXPECT_NEAR(LearningRateFactor("cosine", 6, 4, 12), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(LearningRateFactor("cosine", 12, 4, 12), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(LearningRateFactor("constant", 1, 2, 12), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor("constant", 11, 2, 12), 1.0);
}

TEST(EarlyStoppingTest, PatienceAndMinDelta) {
  EarlyStopping s(/*maximize=*/true, /*patience=*/2, /*min_delta=*/0.01);
  EXPECT_TRUE(s.Update(0.5));
  EXPECT_FALSE(s.Update(0.505));  // within min_delta: not an improvement
  EXPECT_FALSE(s.ShouldStop());
  EXPECT_TRUE(s.Update(0.6));
  EXPECT_EQ(s.bad_evals(), 0);
  EXPECT_FALSE(s.Update(0.59));
  EXPECT_FALSE(s.Update(0.6));
  EXPECT_TRUE(s.ShouldStop());
  EXPECT_DOUBLE_EQ(s.best(), 0.6);
}

TEST(EarlyStoppingTest, MinimiseLoss) {
  EarlyStopping s(/*maximize=*/false, 1, 0);
  EXPECT_TRUE(s.Update(1.0));
  EXPECT_TRUE(s.Update(0.9));
  EXPECT_FALSE(s.Update(0.95));
  EXPECT_TRUE(s.ShouldStop());
}

}  // namespace
}  // namespace attune::worker::train
