// The training engine's parts on their own, without processes: the loop
// state's JSON form, and the evaluator over in-process ranks (FakeGroup).

#include <thread>

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/job_config.h"
#include "worker/comm/fake_communicator.h"
#include "worker/model/bert.h"
#include "worker/task/task.h"
#include "worker/text/tokenizer.h"
#include "worker/train/evaluator.h"
#include "worker/train/loop_state.h"
#include "worker/train/precision.h"

namespace attune::worker::train {
namespace {

TEST(LoopStateTest, RoundTripsEveryFieldAndEveryTasksMetrics) {
  LoopState s;
  s.step = 42;
  s.sampler = {7, 2, 96};
  s.mid_epoch = true;
  s.train_loss = {{1, 0.5}, {2, 0.25}};
  for (const char* task : {"sequence_classification", "token_classification", "masked_lm"}) {
    std::map<std::string, double> named;
    for (const auto& m : common::FindTask(task)->metrics) named[m.name] = 0.125 * static_cast<double>(named.size() + 1);
    s.evals.push_back({10, 0.5, eval::Metrics::FromNamed(task, 99, named)});
  }
  s.best_step = 10;
  s.es_has_best = true;
  s.es_best = 0.75;
  s.es_bad = 1;
  s.last_eval_step = 40;
  s.labels = {"B-DRUG", "O"};
  s.vocab_fingerprint = "00ff";
  auto back = LoopStateFromJson(LoopStateToJson(s).dump(), "state");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(LoopStateToJson(*back), LoopStateToJson(s));
  EXPECT_EQ(back->evals[2].metrics.task, "masked_lm");
  EXPECT_EQ(back->evals[2].metrics.Named(), s.evals[2].metrics.Named());
  EXPECT_EQ(back->sampler.cursor, 96);

  auto bad = LoopStateFromJson("{\"step\": 1}", "ckpt/trainer_state.json");
  EXPECT_TRUE(absl::IsDataLoss(bad.status())) << bad.status();
  EXPECT_NE(bad.status().message().find("ckpt/trainer_state.json"), std::string::npos);
  EXPECT_TRUE(absl::IsDataLoss(LoopStateFromJson("not json", "x").status()));
}

// The evaluator gives the same metrics, to the last bit, on 1, 2 and 3 ranks.
class EvaluatorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EvaluatorTest, MetricsAreTheSameForAnyWorldSize) {
  const std::string name = GetParam();
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "aspirin", "fever", "bank",
                                    "court", "the", "was", "given", "loan", "##s"};
  auto tok = text::WordPieceTokenizer::Create(vocab, text::TokenizerOptions());
  ASSERT_TRUE(tok.ok());
  common::JobConfig c;
  c.task = name;
  c.seed = 5;
  auto task = task::MakeTask(name);
  ASSERT_TRUE(task->Configure(*tok, c).ok());
  std::vector<data::Example> ex;
  for (int i = 0; i < 23; ++i) {
    data::Example e;
    e.words = {"the", i % 2 ? "aspirin" : "bank", "was", i % 3 ? "given" : "loans", "fever"};
    e.tags = {2, 0, 2, i % 3 ? 2 : 1, 0};
    // Examples of different lengths: every batch's loss differs from the others'.
    for (int k = 0; k < i % 5; ++k) {
      e.words.push_back(k % 2 ? "court" : "fever");
      e.tags.push_back(k % 2 ? 1 : 2);
    }
    for (const auto& w : e.words) e.text += (e.text.empty() ? "" : " ") + w;
    e.label = i % 2;
    ex.push_back(e);
  }
  model::BertConfig bc;
  bc.vocab_size = tok->vocab_size();
  bc.hidden_size = 16;
  bc.num_hidden_layers = 1;
  bc.num_attention_heads = 2;
  bc.intermediate_size = 32;
  bc.max_position_embeddings = 32;
  data::LabelMap labels(name == "token_classification" ? std::vector<std::string>{"B-X", "I-X", "O"}
                                                       : std::vector<std::string>{"a", "b"});
  bc.labels = task->OutputNames(labels);
  bc.architecture = task->architecture();
  task->SetOutputs(bc.labels);
  const int outputs = static_cast<int>(bc.labels.size());
  const std::vector<task::Encoded> data = task->Encode(*tok, ex, 16);
  // Small batches: many per-batch loss sums, whose order of addition shows in
  // the last bits unless it is the same for every world size.
  const int64_t batch_size = 2;
  auto run = [&](int world) {
    std::vector<eval::Metrics> out(static_cast<size_t>(world));
    comm::FakeGroup group(world);
    // Each rank its own copy of the same weights (seeding uses the process's one generator: not in threads).
    std::vector<model::BertClassifier> models;
    for (int r = 0; r < world; ++r) {
      auto m = model::CreateModel(bc, model::MethodConfig(), 3);
      EXPECT_TRUE(m.ok());
      models.push_back(*m);
    }
    std::vector<std::thread> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.emplace_back([&, r] {
        at::set_num_threads(1);
        auto comm = group.Rank(r);
        auto got = Evaluate(*models[static_cast<size_t>(r)], *task, outputs, data, batch_size, tok->pad_id(),
                            world > 1 ? comm.get() : nullptr);
        ASSERT_TRUE(got.ok()) << got.status();
        out[static_cast<size_t>(r)] = *got;
      });
    }
    for (auto& t : ranks) t.join();
    return out;
  };
  const eval::Metrics one = run(1)[0];
  EXPECT_GT(one.count, 0);
  for (int world : {2, 3}) {
    for (const eval::Metrics& m : run(world)) {
      EXPECT_EQ(m.count, one.count);
      for (const auto& [k, v] : one.Named()) EXPECT_EQ(m.Named().at(k), v) << k << " at world size " << world;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tasks, EvaluatorTest,
                         ::testing::Values("sequence_classification", "token_classification", "masked_lm"),
                         [](const auto& info) { return info.param; });

TEST(FakeGroupTest, AMissingRankTimesOut) {
  comm::FakeGroup group(2, absl::Milliseconds(200));
  auto r0 = group.Rank(0);
  auto s = r0->Barrier();
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
}

// NOTE [mixed precision]: which parts run in which dtype under bf16 autocast.
model::BertClassifier TinyModel(const std::string& architecture) {
  model::BertConfig bc;
  bc.vocab_size = 50;
  bc.hidden_size = 16;
  bc.num_hidden_layers = 2;
  bc.num_attention_heads = 2;
  bc.intermediate_size = 32;
  bc.max_position_embeddings = 32;
  bc.labels = {"a", "b"};
  bc.architecture = architecture;
  auto m = model::CreateModel(bc, model::MethodConfig(), 5);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

TEST(PrecisionTest, Bf16RunsTheMatmulsInBf16AndKeepsWeightsLayerNormLossAndGradientsFp32) {
  model::BertClassifier m = TinyModel("BertForSequenceClassification");
  torch::Tensor ids = torch::randint(5, 50, {3, 7}, torch::kInt64);
  torch::Tensor types = torch::zeros({3, 7}, torch::kInt64), mask = torch::ones({3, 7}, torch::kInt64);
  mask[2][6] = 0;
  torch::Tensor loss;
  {
    AutocastScope autocast(Precision::kBf16);
    EXPECT_EQ(torch::matmul(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type(), torch::kBFloat16);
    // The encoder's output is the last LayerNorm's: fp32.
    EXPECT_EQ(m->Encode(ids, types, mask).scalar_type(), torch::kFloat);
    torch::Tensor logits = m->forward(ids, types, mask);
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);  // the classifier is a matmul
    loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat), torch::tensor({0, 1, 1}));
  }
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  // Outside the scope autocast is off again.
  EXPECT_EQ(torch::matmul(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type(), torch::kFloat);
  loss.backward();
  for (const auto& [name, p] : m->NamedParameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat) << name;
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat) << name;
    }
  }
  EXPECT_TRUE(m->classifier->weight.grad().defined());

  // The masked-LM head's LayerNorm sees fp32 although its dense layer ran in bf16.
  model::BertClassifier mlm = TinyModel("BertForMaskedLM");
  torch::NoGradGuard g;
  AutocastScope autocast(Precision::kBf16);
  torch::Tensor hidden = mlm->Encode(ids, types, mask);
  torch::Tensor pos = torch::tensor({0, 4});
  torch::Tensor h = torch::gelu(mlm->mlm_dense(hidden.reshape({-1, 16}).index_select(0, pos)));
  ASSERT_EQ(h.scalar_type(), torch::kBFloat16);
  torch::Tensor want = torch::addmm(mlm->mlm_bias, mlm->mlm_ln(h.to(torch::kFloat)), mlm->word->weight.t());
  torch::Tensor got = mlm->MaskedLmLogits(hidden, pos);
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(got, want));
}

// On a GPU rank the trainer and the evaluator open the scope with cuda =
// true: CUDA autocast is on inside (a thread-local flag, settable without a
// GPU) and restored after; without it, a bf16 job on a GPU would run in fp32.
TEST(PrecisionTest, TheCudaScopeTurnsOnCudaAutocastAndRestoresIt) {
  EXPECT_FALSE(at::autocast::is_enabled());
  {
    AutocastScope autocast(Precision::kBf16, /*cuda=*/true);
    EXPECT_TRUE(at::autocast::is_enabled());
    EXPECT_EQ(at::autocast::get_autocast_gpu_dtype(), at::kBFloat16);
    EXPECT_TRUE(at::autocast::is_cpu_enabled());
  }
  EXPECT_FALSE(at::autocast::is_enabled());
  {
    AutocastScope autocast(Precision::kBf16);
    EXPECT_FALSE(at::autocast::is_enabled()) << "a CPU rank leaves CUDA autocast alone";
  }
}

TEST(PrecisionTest, Fp32IsUntouchedAndOtherNamesAreRefused) {
  {
    AutocastScope autocast(Precision::kFp32);
    EXPECT_EQ(torch::matmul(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type(), torch::kFloat);
  }
  EXPECT_EQ(*ParsePrecision(""), Precision::kFp32);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_FALSE(ParsePrecision("fp16").ok());
  EXPECT_NE(std::string(ParsePrecision("fp16").status().message()).find("hyperparameters.precision"), std::string::npos);
}

}  // namespace
}  // namespace attune::worker::train
