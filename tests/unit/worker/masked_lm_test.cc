// The masked_lm task's encoding and masking (NOTE [masking] in
// worker/task/masked_lm.cc): HF's rates, specials never masked, whole words
// masked together, masks a function of (seed, epoch, example) alone, and
// group_texts blocks.

#include <cmath>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_config.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::task {
namespace {

class MaskedLmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "court", "held",
                                      "licen", "##se", "##s", "grant", "##ed", "rights", "to", "party"};
    auto tok = text::WordPieceTokenizer::Create(vocab, text::TokenizerOptions());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_.emplace(std::move(*tok));
    for (int i = 0; i < 400; ++i) {
      data::Example e;
      e.text = i % 2 ? "the court held the licenses granted rights to the party"
                     : "licensed party granted the licenses to the court";
      examples_.push_back(e);
    }
  }
  std::unique_ptr<Task> Make(bool group, bool whole_word, uint64_t seed = 7) {
    common::JobConfig c;
    c.task = "masked_lm";
    c.group_texts = group;
    c.whole_word_mask = whole_word;
    c.seed = static_cast<int64_t>(seed);
    auto t = MakeTask("masked_lm");
    EXPECT_TRUE(t->Configure(*tok_, c).ok());
    return t;
  }
  // Example idx's masked positions in a batch of `idx`.
  static std::map<int64_t, std::set<int64_t>> Positions(const Batch& b, const std::vector<int64_t>& idx) {
    std::map<int64_t, std::set<int64_t>> out;
    const int64_t t = b.ids.size(1);
    for (int64_t m = 0; m < b.positions.size(0); ++m) {
      const int64_t p = b.positions[m].item<int64_t>();
      out[idx[static_cast<size_t>(p / t)]].insert(p % t);
    }
    return out;
  }

  std::optional<text::WordPieceTokenizer> tok_;
  std::vector<data::Example> examples_;
};

TEST_F(MaskedLmTest, SelectsFifteenPercentAndReplacesEightyTenTen) {
  auto task = Make(/*group=*/false, /*whole_word=*/false);
  auto enc = task->Encode(*tok_, examples_, 64);
  ASSERT_EQ(enc.size(), examples_.size());
  std::vector<int64_t> idx(enc.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  CollateContext ctx;
  Batch b = task->Collate(enc, idx, ctx, 0);
  int64_t maskable = 0, masked = 0, as_mask = 0, unchanged = 0;
  const int64_t t = b.ids.size(1);
  for (size_t i = 0; i < enc.size(); ++i) maskable += static_cast<int64_t>(enc[i].ids.size()) - 2;
  for (int64_t m = 0; m < b.positions.size(0); ++m) {
    const int64_t p = b.positions[m].item<int64_t>();
    const int64_t now = b.ids[p / t][p % t].item<int64_t>(), was = b.targets[m].item<int64_t>();
    EXPECT_EQ(was, enc[static_cast<size_t>(p / t)].ids[static_cast<size_t>(p % t)]);
    EXPECT_NE(p % t, 0) << "[CLS] masked";
    EXPECT_NE(was, 3) << "[SEP] masked";
    ++masked;
    as_mask += now == 4;
    unchanged += now == was;
  }
  EXPECT_EQ(b.loss_units, static_cast<double>(masked));
  const double rate = static_cast<double>(masked) / static_cast<double>(maskable);
  EXPECT_NEAR(rate, 0.15, 4 * std::sqrt(0.15 * 0.85 / static_cast<double>(maskable))) << masked << "/" << maskable;
  EXPECT_NEAR(static_cast<double>(as_mask) / masked, 0.8, 0.05);
  // 10% unchanged, plus the random draws that hit the original token (1 in 16 here).
  EXPECT_NEAR(static_cast<double>(unchanged) / masked, 0.1 + 0.1 / 16, 0.04);
}

TEST_F(MaskedLmTest, MasksDependOnSeedEpochAndExampleOnly) {
  auto task = Make(false, false);
  auto enc = task->Encode(*tok_, examples_, 64);
  CollateContext e0, e1, eval0, eval1;
  e1.epoch = 1;
  eval0.train = eval1.train = false;
  eval1.epoch = 5;
  const std::vector<int64_t> alone = {9}, batch = {3, 9, 200};
  EXPECT_EQ(Positions(task->Collate(enc, alone, e0, 0), alone)[9],
            Positions(task->Collate(enc, batch, e0, 0), batch)[9]);
  // A new mask every epoch; a fixed one for evaluation.
  int differ = 0;
  std::vector<int64_t> all;
  for (int64_t i = 0; i < 50; ++i) all.push_back(i);
  auto a = Positions(task->Collate(enc, all, e0, 0), all), b = Positions(task->Collate(enc, all, e1, 0), all);
  for (int64_t i = 0; i < 50; ++i) differ += a[i] != b[i];
  EXPECT_GT(differ, 25);
  EXPECT_EQ(Positions(task->Collate(enc, all, eval0, 0), all), Positions(task->Collate(enc, all, eval1, 0), all));
  auto other_seed = Make(false, false, 8);
  auto c = Positions(other_seed->Collate(enc, all, e0, 0), all);
  differ = 0;
  for (int64_t i = 0; i < 50; ++i) differ += a[i] != c[i];
  EXPECT_GT(differ, 25);
}

TEST_F(MaskedLmTest, WholeWordMaskTakesEveryPieceOfAWord) {
  auto task = Make(false, /*whole_word=*/true);
  auto enc = task->Encode(*tok_, examples_, 64);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < static_cast<int64_t>(enc.size()); ++i) idx.push_back(i);
  CollateContext ctx;
  auto pos = Positions(task->Collate(enc, idx, ctx, 0), idx);
  int64_t words_with_pieces = 0;
  for (int64_t i : idx) {
    const auto& e = enc[static_cast<size_t>(i)];
    ASSERT_EQ(e.word_start.size(), e.ids.size());
    for (size_t k = 1; k < e.ids.size(); ++k) {
      if (e.word_start[k]) continue;  // a continuation piece: masked exactly when its word start is
      EXPECT_EQ(pos[i].count(static_cast<int64_t>(k)), pos[i].count(static_cast<int64_t>(k - 1))) << i << " " << k;
      words_with_pieces += pos[i].count(static_cast<int64_t>(k));
    }
  }
  EXPECT_GT(words_with_pieces, 20);
}

TEST_F(MaskedLmTest, GroupTextsCutsTheConcatenationIntoBlocks) {
  auto task = Make(/*group=*/true, false);
  std::vector<data::Example> three(examples_.begin(), examples_.begin() + 3);
  auto enc = task->Encode(*tok_, three, 8);
  std::vector<int64_t> stream;
  for (const auto& x : three) {
    stream.push_back(2);
    for (int64_t id : tok_->ConvertTokensToIds(tok_->Tokenize(x.text))) stream.push_back(id);
    stream.push_back(3);
  }
  ASSERT_EQ(enc.size(), stream.size() / 8);  // the partial last block is dropped
  for (size_t i = 0; i < enc.size(); ++i) {
    ASSERT_EQ(enc[i].ids.size(), 8u);
    EXPECT_EQ(enc[i].ids, std::vector<int64_t>(stream.begin() + static_cast<long>(8 * i),
                                               stream.begin() + static_cast<long>(8 * i + 8)));
  }
  // A text shorter than one block still gives one sequence.
  data::Example tiny;
  tiny.text = "the court";
  EXPECT_EQ(task->Encode(*tok_, {tiny}, 8).size(), 1u);
}

TEST_F(MaskedLmTest, MaskGluedToWordsIsSplitOut) {
  EXPECT_EQ(tok_->Tokenize("the[MASK]court [MASK]."),
            (std::vector<std::string>{"the", "[MASK]", "court", "[MASK]", "[UNK]"}));
}

}  // namespace
}  // namespace attune::worker::task
