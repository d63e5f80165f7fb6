// Hostile spec texts, each as an attacker (or a broken editor) would send it:
// every one must come back as a clear InvalidArgument naming the field, never
// an exception, a crash or runaway memory.

#include <string>

#include <gtest/gtest.h>

#include "common/rpc/job_spec.h"
#include "common/spec_path.h"
#include "common/testing/status_matchers.h"
#include "common/text.h"

namespace attune::common {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

const std::string kBase =
    "name: ok\nmodel: {path: m}\ndata: {train: t.csv, validation: v.csv}\noutput_dir: o\n";

absl::Status ParseWith(const std::string& extra) { return ParseJobSpec(kBase + extra, "spec.yaml").status(); }

TEST(SpecHardeningTest, NumbersOutOfDoubleRangeNameTheField) {
  EXPECT_THAT(ParseWith("hyperparameters: {learning_rate: 1e400}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "spec.yaml: hyperparameters.learning_rate: number out of range"));
  EXPECT_THAT(ParseWith("hyperparameters: {learning_rate: 1e-320}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.learning_rate: number out of range"));
  EXPECT_THAT(ParseWith("hyperparameters: {learning_rate: -1e400}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.learning_rate"));
  // The edges that are fine stay fine.
  EXPECT_THAT(ParseWith("hyperparameters: {learning_rate: 1e-300, weight_decay: 0.0}\n"), IsOk());
}

TEST(SpecHardeningTest, FortyThousandDigitsAreRefusedWithoutRecursion) {
  // std::regex recursed once per character here and overflowed the stack.
  EXPECT_THAT(ParseWith("hyperparameters: {seed: " + std::string(40000, '1') + "}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.seed: integer out of range"));
  EXPECT_THAT(ParseWith("hyperparameters: {learning_rate: 0." + std::string(40000, '1') + "}\n"), IsOk());
  EXPECT_THAT(ParseWith("name2: " + std::string(40000, 'a') + "\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "name2: unknown field"));
}

TEST(SpecHardeningTest, NonUtf8BytesNameTheField) {
  EXPECT_THAT(ParseJobSpec("name: \xff\xfe ok\n", "spec.yaml").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "spec.yaml: name: not valid UTF-8"));
  EXPECT_THAT(ParseJobSpec("na\xc0\xafme: ok\n", "spec.yaml").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "a key is not valid UTF-8"));
}

TEST(SpecHardeningTest, AliasBombIsRefusedBeforeItExpands) {
  // Nine aliases of nine: 9^10 values (3.5 billion) from 400 bytes. Expanded,
  // this took 5.2 GB and then bad_alloc.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 10; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + prev;
    for (int k = 1; k < 9; ++k) bomb += ", " + prev;
    bomb += "]\n";
  }
  ASSERT_LT(bomb.size(), 1024u);
  EXPECT_THAT(ParseJobSpec(bomb, "bomb.yaml").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "bomb.yaml: spec: more than 200000 values"));
  // A modest anchor is still a convenience users may use.
  EXPECT_THAT(ParseJobSpec("name: ok\nmodel: {path: m}\ndata: &d {train: t.csv, validation: v.csv}\noutput_dir: o\n",
                           "anchor.yaml")
                  .status(),
              IsOk());
}

TEST(SpecHardeningTest, DuplicateKeysAreRefusedAsKubernetesStrictDecodingDoes) {
  EXPECT_THAT(ParseWith("name: other\n"), StatusIs(absl::StatusCode::kInvalidArgument, "spec.yaml: name: duplicate key"));
  EXPECT_THAT(ParseWith("hyperparameters: {seed: 1, seed: 2}\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "hyperparameters.seed: duplicate key"));
}

TEST(SpecHardeningTest, ComplexKeysDeepNestingAndHugeTextsAreRefused) {
  EXPECT_THAT(ParseWith("? [a, b]\n: c\n"), StatusIs(absl::StatusCode::kInvalidArgument, "a key must be a plain text"));
  const std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_THAT(ParseWith("name2: " + deep + "\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "nested deeper than 64 levels"));
  EXPECT_THAT(ParseWith("name2: " + std::string(100000, '[') + "\n"), StatusIs(absl::StatusCode::kInvalidArgument, ""));
  EXPECT_THAT(ParseWith("# " + std::string(2 << 20, 'x') + "\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "spec.yaml: larger than 1 MiB"));
}

TEST(SpecHardeningTest, SetOverridesGetTheSameChecks) {
  EXPECT_THAT(ParseJobSpec(kBase, "spec.yaml", {"hyperparameters.learning_rate=1e400"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--set hyperparameters.learning_rate=1e400: "
                                                           "hyperparameters.learning_rate: number out of range"));
  EXPECT_THAT(ParseJobSpec(kBase, "spec.yaml", {"name=\xff"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "not valid UTF-8"));
  EXPECT_FALSE(IsSpecPath(std::string(40000, 'a') + ".b"));
  EXPECT_FALSE(IsSpecPath("a.b.c.d.e.f.g.h.i"));
  EXPECT_TRUE(IsSpecPath("a.b.c.d.e.f.g.h"));
  EXPECT_FALSE(IsSpecPath("hyperparameters..seed"));
  EXPECT_FALSE(IsSpecPath("9a"));
}

// The scanners that replaced std::regex, against the patterns they implement.
TEST(TextTest, NumberFormsMatchTheYamlCoreSchema) {
  for (const char* s : {"0", "-12", "+7", "007"}) EXPECT_TRUE(LooksLikeInteger(s)) << s;
  for (const char* s : {"", "-", "1.0", "1e3", " 1", "1 ", "0x1F"}) EXPECT_FALSE(LooksLikeInteger(s)) << s;
  for (const char* s : {"1.", ".5", "-1.5e-3", "+2E+10", "3", "1e5"}) EXPECT_TRUE(LooksLikeFloat(s)) << s;
  for (const char* s : {"", ".", "e5", "1e", "1.5e+", "--1", "1.2.3", ".e1", "inf", "nan"}) {
    EXPECT_FALSE(LooksLikeFloat(s)) << s;
  }
  EXPECT_EQ(ParseInt64("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(ParseInt64("-9223372036854775808"), INT64_MIN);
  EXPECT_EQ(ParseInt64("9223372036854775808"), std::nullopt);
  EXPECT_EQ(ParseInt64("-9223372036854775809"), std::nullopt);
  EXPECT_EQ(ParseFiniteDouble("2.5e-3"), 2.5e-3);
  EXPECT_EQ(ParseFiniteDouble("1e308"), 1e308);
  EXPECT_EQ(ParseFiniteDouble("1e309"), std::nullopt);
  EXPECT_TRUE(IsWordOf("fine-foods.v2_1", "._-", 1, 128));
  EXPECT_FALSE(IsWordOf("a/b", "._-", 1, 128));
  EXPECT_FALSE(IsWordOf(std::string(129, 'a'), "._-", 1, 128));
  EXPECT_FALSE(IsWordOf("", "._-", 1, 128));
}

}  // namespace
}  // namespace attune::common
