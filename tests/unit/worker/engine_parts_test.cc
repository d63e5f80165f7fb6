// The engine's checkpointer, optimizer and exporter on their own, on a tiny
// model in one process: a checkpoint restores everything a run continues
// from (the next step is bitwise the uninterrupted one's), a checkpoint of
// another meaning or a fenced writer is refused, AdamW decays what it should,
// and the export is a model directory and reports that agree with each other.

#include <filesystem>
#include <unordered_set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/checkpoint.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/model/bert.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/module_kinds.h"
#include "worker/text/tokenizer.h"
#include "worker/train/checkpointer.h"
#include "worker/train/device.h"
#include "worker/train/exporter.h"
#include "worker/train/optimizer.h"

namespace attune::worker::train {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

model::BertConfig Tiny() {
  model::BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.max_position_embeddings = 16;
  c.labels = {"neg", "pos"};
  return c;
}

model::ModelPtr Model(uint64_t seed, model::Method method = model::Method::kFull) {
  model::MethodConfig m;
  m.type = method;
  auto made = model::CreateModel(Tiny(), m, seed);
  EXPECT_TRUE(made.ok()) << made.status();
  return made->ptr();
}

common::JobConfig Spec() {
  common::JobConfig c;
  c.learning_rate = 1e-2;
  c.weight_decay = 0.1;
  return c;
}

// One optimizer step on a fixed random batch (dropout off: eval mode).
void Step(model::Model& m, torch::optim::AdamW& opt, int64_t seed) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  auto ids = torch::randint(5, 40, {4, 8}, torch::kInt64);
  auto labels = torch::randint(0, 2, {4}, torch::kInt64);
  m.eval();
  opt.zero_grad();
  torch::nn::functional::cross_entropy(m.SequenceLogits(ids, torch::zeros_like(ids), torch::ones_like(ids)), labels)
      .backward();
  opt.step();
}

bool SameParameters(model::Model& a, model::Model& b) {
  auto pa = a.NamedParameters(), pb = b.NamedParameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i].first != pb[i].first || !torch::equal(pa[i].second, pb[i].second)) return false;
  }
  return true;
}

class EnginePartsTest : public ::testing::Test {
 protected:
  CheckpointerOptions Options(const common::Owner& owner = {}) {
    CheckpointerOptions o;
    o.output_dir = dir_.path();
    o.owner = owner;
    o.job_name = "t";
    return o;
  }
  attune::testing::TempDir dir_{"engine_parts"};
};

TEST_F(EnginePartsTest, AResumedRunTakesTheSameNextStepAsTheUninterruptedOne) {
  const common::JobConfig spec = Spec();
  auto a = Model(1);
  OptimizerSetup oa = MakeAdamW(*a, spec);
  Step(*a, *oa.optimizer, 10);
  ParamSnapshot best = SnapshotParams(*a);  // the best evaluation: step 1
  Step(*a, *oa.optimizer, 11);
  LoopState s;
  s.step = 2;
  s.best_step = 1;
  s.labels = {"neg", "pos"};
  s.vocab_fingerprint = VocabularyFingerprint({"[PAD]", "a", "b"});
  Checkpointer ck(Options());
  ASSERT_THAT(ck.Prepare(), IsOk());
  torch::manual_seed(77);  // the RNG state the checkpoint records
  auto dir = ck.Write(s, *a, *oa.optimizer, best);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(fs::exists(*dir + "/best.safetensors"));  // best is not this step's: carried along
  const double draw = torch::rand({1}).item<double>();

  // Another model and optimizer, in another state, resume from it.
  auto b = Model(2);
  OptimizerSetup ob = MakeAdamW(*b, spec);
  Step(*b, *ob.optimizer, 99);
  LoopState got;
  ParamSnapshot got_best;
  torch::manual_seed(5);
  auto resumed = ck.Resume({s.labels, s.vocab_fingerprint}, *b, *ob.optimizer, &got, &got_best);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(*resumed);
  EXPECT_EQ(got.step, 2);
  EXPECT_EQ(got.best_step, 1);
  EXPECT_TRUE(SameParameters(*a, *b));
  EXPECT_EQ(torch::rand({1}).item<double>(), draw);  // the random stream continues where it was
  ASSERT_EQ(got_best.size(), best.size());
  for (size_t i = 0; i < best.size(); ++i) EXPECT_TRUE(torch::equal(got_best[i].second, best[i].second));
  // Adam's moments came back too: the next step is bitwise the same.
  Step(*a, *oa.optimizer, 12);
  Step(*b, *ob.optimizer, 12);
  EXPECT_TRUE(SameParameters(*a, *b));
}

TEST_F(EnginePartsTest, ACheckpointOfAnotherMeaningIsRefusedNamingBoth) {
  auto a = Model(1);
  OptimizerSetup oa = MakeAdamW(*a, Spec());
  LoopState s;
  s.step = 1;
  s.labels = {"neg", "pos"};
  s.vocab_fingerprint = VocabularyFingerprint({"[PAD]", "a"});
  Checkpointer ck(Options());
  ASSERT_THAT(ck.Prepare(), IsOk());
  ASSERT_TRUE(ck.Write(s, *a, *oa.optimizer, {}).ok());
  LoopState got;
  ParamSnapshot best;
  EXPECT_THAT(ck.Resume({{"pos", "neg"}, s.vocab_fingerprint}, *a, *oa.optimizer, &got, &best).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "was trained with labels [neg, pos]; this run's are [pos, neg]"));
  EXPECT_THAT(ck.Resume({s.labels, VocabularyFingerprint({"[PAD]", "b"})}, *a, *oa.optimizer, &got, &best).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "another vocabulary"));
  // An empty directory: nothing to resume, and nothing changed.
  CheckpointerOptions other = Options();
  other.output_dir = dir_.path() + "/other";
  Checkpointer fresh(other);
  ASSERT_THAT(fresh.Prepare(), IsOk());
  auto none = fresh.Resume({s.labels, s.vocab_fingerprint}, *a, *oa.optimizer, &got, &best);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(*none);
}

TEST_F(EnginePartsTest, AFencedAttemptWritesNothing) {
  ASSERT_THAT(common::TakeLease(dir_.path(), {"job-1", 2}), IsOk());
  auto a = Model(1);
  OptimizerSetup oa = MakeAdamW(*a, Spec());
  LoopState s;
  s.step = 3;
  Checkpointer old(Options({"job-1", 1}));
  ASSERT_THAT(old.Prepare(), IsOk());
  EXPECT_THAT(old.Write(s, *a, *oa.optimizer, {}).status(), StatusIs(absl::StatusCode::kFailedPrecondition, ""));
  EXPECT_TRUE(fs::is_empty(old.root())) << "a fenced checkpoint left files behind";
  auto tok = text::WordPieceTokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"}, {});
  ASSERT_TRUE(tok.ok());
  common::JobConfig c = Spec();
  c.output_dir = dir_.path();
  EXPECT_THAT(ExportRun(*a, *tok, c, {"job-1", 1}, dir_.path() + "/model", {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ""));
  EXPECT_FALSE(fs::exists(dir_.path() + "/model"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/eval_report.json"));
}

// Decoupled weight decay on weights only: with zero gradients, one AdamW step
// shrinks each decayed weight by lr x weight_decay of itself and leaves biases
// and LayerNorm weights as they are. Frozen parameters are not in the optimizer.
TEST_F(EnginePartsTest, AdamWDecaysWeightsNotBiasesOrLayerNormsAndLeavesFrozenParametersOut) {
  auto m = Model(3);
  const common::JobConfig spec = Spec();
  OptimizerSetup o = MakeAdamW(*m, spec);
  auto named = m->NamedParameters();
  EXPECT_EQ(o.trainable.size(), named.size());
  ASSERT_EQ(o.optimizer->param_groups().size(), 2u);
  EXPECT_EQ(o.optimizer->param_groups()[0].params().size(), o.decayed);
  ParamSnapshot before = SnapshotParams(*m);
  for (auto& t : o.trainable) t.mutable_grad() = torch::zeros_like(t);
  SetLearningRate(*o.optimizer, 0.5);
  o.optimizer->step();
  for (size_t i = 0; i < named.size(); ++i) {
    const std::string& name = named[i].first;
    const bool no_decay = name.size() > 5 && (name.rfind(".bias") == name.size() - 5 ||
                                              name.find("LayerNorm") != std::string::npos);
    const torch::Tensor want = no_decay ? before[i].second : before[i].second * (1 - 0.5 * spec.weight_decay);
    EXPECT_TRUE(torch::allclose(named[i].second, want, 0, 1e-7)) << name;
  }
  auto head = Model(3, model::Method::kHead);
  OptimizerSetup oh = MakeAdamW(*head, spec);
  int64_t trainable = 0;
  for (auto& [name, t] : head->NamedParameters()) trainable += t.requires_grad();
  EXPECT_EQ(static_cast<int64_t>(oh.trainable.size()), trainable);
  EXPECT_LT(trainable, static_cast<int64_t>(named.size()));
}

// NOTE [no weight decay by kind]: for every BERT method and head, the
// parameters chosen by module kind are those Hugging Face's Trainer chooses by
// name (`bias`, `LayerNorm`), in the same order, so runs are unchanged.
TEST_F(EnginePartsTest, NoDecayByModuleKindIsHuggingFacesChoiceByNameForEveryMethodAndHead) {
  for (const std::string architecture : {"BertForSequenceClassification", "BertForTokenClassification",
                                         "BertForMaskedLM"}) {
    for (model::Method method : {model::Method::kFull, model::Method::kLora, model::Method::kAdapter}) {
      model::BertConfig c = Tiny();
      c.architecture = architecture;
      model::MethodConfig mc;
      mc.type = method;
      mc.lora_targets = {"query", "value", "intermediate"};
      auto m = model::CreateModel(c, mc, 5);
      ASSERT_TRUE(m.ok()) << m.status();
      const auto by_kind = model::NoWeightDecayParameters(**m);
      size_t no_decay = 0;
      for (auto& [name, t] : (*m)->NamedParameters()) {
        const bool by_name = absl::EndsWith(name, ".bias") || absl::StrContains(name, "LayerNorm");
        EXPECT_EQ(by_kind.count(t.unsafeGetTensorImpl()) == 1, by_name) << architecture << " " << name;
        no_decay += by_name;
      }
      EXPECT_EQ(by_kind.size(), no_decay) << architecture;
    }
  }
  // Names play no part: a norm called `input_layernorm` and a bias called
  // `logit_bias` take no decay; a weight called `LayerNorm_scale` does.
  struct Block : torch::nn::Module {
    Block() {
      input_layernorm = register_module("input_layernorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
      proj = register_module("proj", torch::nn::Linear(4, 4));
      logit_bias = register_parameter("logit_bias", torch::zeros({4}));
      LayerNorm_scale = register_parameter("LayerNorm_scale", torch::ones({4, 4}));
    }
    torch::nn::LayerNorm input_layernorm{nullptr};
    torch::nn::Linear proj{nullptr};
    torch::Tensor logit_bias, LayerNorm_scale;
  };
  Block b;
  const auto set = model::NoWeightDecayParameters(b);
  EXPECT_EQ(set, (std::unordered_set<const c10::TensorImpl*>{
                     b.input_layernorm->weight.unsafeGetTensorImpl(), b.input_layernorm->bias.unsafeGetTensorImpl(),
                     b.proj->bias.unsafeGetTensorImpl(), b.logit_bias.unsafeGetTensorImpl()}));
  EXPECT_TRUE(model::IsNormModule(*b.input_layernorm));
  EXPECT_FALSE(model::IsNormModule(*b.proj));
}

TEST_F(EnginePartsTest, TheExportIsAModelDirectoryAndReportsThatAgree) {
  auto m = Model(4);
  auto tok = text::WordPieceTokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"}, {});
  ASSERT_TRUE(tok.ok());
  common::JobConfig c = Spec();
  c.name = "export";
  c.output_dir = dir_.path();
  c.max_length = 12;
  c.train_path = dir_.path() + "/train.csv";
  attune::testing::WriteText(c.train_path, "text,label\ngood,pos\nbad,neg\n");
  eval::ReportInput rep;
  rep.job_name = c.name;
  rep.label_names = {"neg", "pos"};
  ASSERT_THAT(ExportRun(*m, *tok, c, {}, dir_.path() + "/model", rep), IsOk());
  auto loaded = model::LoadHfModel(dir_.path() + "/model");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(SameParameters(*m, **loaded));
  EXPECT_EQ((*loaded)->train_max_length(), 12);  // attune predict truncates as training did
  EXPECT_TRUE(fs::exists(dir_.path() + "/model/vocab.txt"));
  auto report = nlohmann::json::parse(*common::ReadFile(dir_.path() + "/eval_report.json"));
  EXPECT_EQ(report["job"], "export");
  const std::string html = *common::ReadFile(dir_.path() + "/eval_report.html");
  EXPECT_NE(html.find(*common::Sha256OfFile(dir_.path() + "/model/model.safetensors")), std::string::npos);
  EXPECT_NE(html.find(*common::Sha256OfFile(c.train_path)), std::string::npos);
}

// Device placement: the CPU unless the spec or the flag asks for a GPU; a GPU
// this build or machine cannot give is a clear refusal (a CUDA build with a
// visible GPU gets the rank's device instead).
TEST_F(EnginePartsTest, TheDeviceIsTheCpuUnlessAGpuIsAskedForAndAMissingGpuIsNamed) {
  common::JobConfig c = Spec();
  auto cpu = ResolveDevice("", c, 0);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->is_cpu());
  EXPECT_TRUE(ResolveDevice("cpu", c, 1)->is_cpu());
  EXPECT_THAT(ResolveDevice("tpu", c, 0).status(), StatusIs(absl::StatusCode::kInvalidArgument, "'tpu' is not cpu"));
  EXPECT_THAT(ResolveDevice("cuda:-1", c, 0).status(), StatusIs(absl::StatusCode::kInvalidArgument, "cuda:N"));
  c.gpus_per_rank = 1;
  auto gpu = ResolveDevice("", c, 1);
  if (torch::cuda::is_available()) {
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_TRUE(gpu->is_cuda());
    EXPECT_EQ(gpu->index(), 1 % static_cast<int>(torch::cuda::device_count()));
  } else {
    EXPECT_THAT(gpu.status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       "workers.gpus_per_rank: 1 asks for a GPU, but no CUDA device is usable here"));
    EXPECT_THAT(ResolveDevice("cuda:0", Spec(), 0).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, "--device cuda:0 asks for a GPU"));
  }
  // On the CPU a batch is used as it is (no copies).
  task::Batch b;
  b.ids = torch::ones({2, 3}, torch::kLong);
  b.targets = torch::zeros({2}, torch::kLong);
  task::Batch placed = OnDevice(b, torch::Device(torch::kCPU));
  EXPECT_TRUE(placed.ids.is_same(b.ids));
  EXPECT_TRUE(placed.targets.is_same(b.targets));
  EXPECT_FALSE(placed.positions.defined());
}

}  // namespace
}  // namespace attune::worker::train
