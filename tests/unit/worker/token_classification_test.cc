// token_classification: seqeval's entity semantics, and the encoding of
// words into pieces with their tags.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_config.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"

namespace attune::worker::task {
namespace {

std::vector<Entity> E(std::vector<std::string> tags) { return ExtractEntities(tags); }

TEST(EntityTest, SeqevalSemantics) {
  EXPECT_EQ(E({"B-PER", "I-PER", "O", "B-LOC"}), (std::vector<Entity>{{"PER", 0, 2}, {"LOC", 3, 4}}));
  // An I- without a B- starts an entity; a change of type ends one.
  EXPECT_EQ(E({"I-PER", "I-PER", "I-LOC"}), (std::vector<Entity>{{"PER", 0, 2}, {"LOC", 2, 3}}));
  // B after B splits; an entity runs to the end of the sentence.
  EXPECT_EQ(E({"B-ORG", "B-ORG", "I-ORG"}), (std::vector<Entity>{{"ORG", 0, 1}, {"ORG", 1, 3}}));
  // IOBES.
  EXPECT_EQ(E({"S-PER", "B-LOC", "E-LOC", "O"}), (std::vector<Entity>{{"PER", 0, 1}, {"LOC", 1, 3}}));
  EXPECT_TRUE(E({"O", "O"}).empty());
  EXPECT_TRUE(E({}).empty());
}

TEST(TokenEncodingTest, FirstPiecesCarryTheTagsAndTruncationKeepsWholeFirstPieces) {
  auto tok = text::WordPieceTokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "aspir", "##in", "for", "fever"},
                                     text::TokenizerOptions());
  ASSERT_TRUE(tok.ok());
  for (bool all : {false, true}) {
    common::JobConfig c;
    c.label_all_subwords = all;
    auto task = MakeTask("token_classification");
    ASSERT_TRUE(task->Configure(*tok, c).ok());
    task->SetOutputs({"B-DRUG", "I-DRUG", "O"});
    data::Example x;
    x.words = {"Aspirin", "for", "fever", "xyz"};
    x.tags = {0, 2, 2, 2};
    auto enc = task->Encode(*tok, {x}, 64);
    ASSERT_EQ(enc.size(), 1u);
    // [CLS] aspir ##in for fever [UNK] [SEP]
    EXPECT_EQ(enc[0].ids, (std::vector<int64_t>{2, 5, 6, 7, 8, 1, 3}));
    EXPECT_EQ(enc[0].first_piece, (std::vector<int64_t>{1, 3, 4, 5}));
    EXPECT_EQ(enc[0].piece_labels, (std::vector<int64_t>{-100, 0, all ? 1 : -100, 2, 2, 2, -100}));
    // max_length 4: [CLS] aspir ##in [SEP]: one word kept.
    auto cut = task->Encode(*tok, {x}, 4);
    EXPECT_EQ(cut[0].ids, (std::vector<int64_t>{2, 5, 6, 3}));
    EXPECT_EQ(cut[0].words, std::vector<std::string>{"Aspirin"});
    // Evaluation takes each word's first piece; training every labelled piece.
    CollateContext eval;
    eval.train = false;
    Batch b = task->Collate(enc, {0}, eval, 3);
    EXPECT_EQ(b.positions.size(0), 4);
    EXPECT_EQ(task->Collate(enc, {0}, CollateContext(), 3).positions.size(0), all ? 5 : 4);
  }
}

}  // namespace
}  // namespace attune::worker::task
