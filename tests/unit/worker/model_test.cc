#include "worker/model/bert.h"

#include <filesystem>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "common/testing/status_matchers.h"
#include "worker/model/hf_checkpoint.h"
#include "tests/testing/process.h"

namespace attune::worker::model {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

BertConfig Tiny() {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 24;
  c.max_position_embeddings = 32;
  c.labels = {"a", "b", "c"};
  return c;
}

struct Inputs {
  torch::Tensor ids, types, mask;
};
Inputs MakeInputs() {
  torch::manual_seed(9);
  Inputs in{torch::randint(5, 50, {4, 10}, torch::kInt64), torch::zeros({4, 10}, torch::kInt64),
            torch::ones({4, 10}, torch::kInt64)};
  in.mask.index_put_({1, torch::indexing::Slice(6)}, 0);
  in.types.index_put_({2, torch::indexing::Slice(5)}, 1);
  return in;
}

torch::Tensor Logits(Model& m, const Inputs& in) {
  torch::NoGradGuard g;
  m.eval();
  return m.SequenceLogits(in.ids, in.types, in.mask);
}

TEST(ModelTest, MethodsTrainTheRightParameters) {
  MethodConfig full, head, lora, adapter;
  head.type = Method::kHead;
  lora.type = Method::kLora;
  lora.lora_rank = 2;
  adapter.type = Method::kAdapter;
  adapter.adapter_size = 4;
  auto f = CreateModel(Tiny(), full, 1), h = CreateModel(Tiny(), head, 1), l = CreateModel(Tiny(), lora, 1),
       a = CreateModel(Tiny(), adapter, 1);
  ASSERT_THAT(f, IsOk());
  auto cf = CountParameters(**f), ch = CountParameters(**h), cl = CountParameters(**l), ca = CountParameters(**a);
  EXPECT_EQ(cf.trainable, cf.total);
  EXPECT_EQ(ch.trainable, 16 * 16 + 16 + 3 * 16 + 3);
  // LoRA on query and value, 2 layers, rank 2: A 2x16 + B 16x2 each, plus the head.
  EXPECT_EQ(cl.trainable, 2 * 2 * (2 * 16 + 16 * 2) + ch.trainable);
  EXPECT_EQ(cl.total, cf.total + 2 * 2 * (2 * 16 + 16 * 2));
  // Adapters (2 per layer: 16->4->16) and LayerNorms (5 per model: 1 + 2 per layer).
  EXPECT_EQ(ca.trainable, 2 * 2 * (16 * 4 + 4 + 4 * 16 + 16) + 5 * 32 + ch.trainable);
}

TEST(ModelTest, FreshLoraAndAdaptersStartEqualToTheBase) {
  MethodConfig lora;
  lora.type = Method::kLora;
  MethodConfig adapter;
  adapter.type = Method::kAdapter;
  auto base = CreateModel(Tiny(), {}, 4), l = CreateModel(Tiny(), lora, 4), a = CreateModel(Tiny(), adapter, 4);
  Inputs in = MakeInputs();
  EXPECT_TRUE(torch::allclose(Logits(**base, in), Logits(**l, in), 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(Logits(**base, in), Logits(**a, in), 1e-6, 1e-6));
}

TEST(ModelTest, MergedLoraMatchesUnmergedWithin1e5) {
  MethodConfig lora;
  lora.type = Method::kLora;
  lora.lora_rank = 3;
  lora.lora_targets = {"query", "value", "intermediate"};
  auto m = CreateModel(Tiny(), lora, 2);
  ASSERT_THAT(m, IsOk());
  {
    torch::NoGradGuard g;
    for (auto& [name, t] : (*m)->NamedParameters()) {
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.3);
    }
  }
  Inputs in = MakeInputs();
  torch::Tensor live = Logits(**m, in);
  attune::testing::TempDir dir("lora_merge");
  ASSERT_THAT(SaveHfModel(**m, dir / "merged", true), IsOk());
  ASSERT_THAT(SaveHfModel(**m, dir / "kept", false), IsOk());
  auto merged = LoadHfModel(dir / "merged");
  auto kept = LoadHfModel(dir / "kept");
  ASSERT_THAT(merged, IsOk());
  ASSERT_THAT(kept, IsOk());
  EXPECT_LT((Logits(**merged, in) - live).abs().max().item<double>(), 1e-5);
  EXPECT_LT((Logits(**kept, in) - live).abs().max().item<double>(), 1e-6);
  EXPECT_GT(live.abs().max().item<double>(), 1e-3);
  // The live model keeps its LoRA branch after an export.
  EXPECT_TRUE(m->get()->layers[0]->query->has_lora());
}

// The numbers of a LoRA or adapter export are input too: a float such as
// 1e300 used to reach an integer cast (undefined), a string an exception.
TEST(ModelTest, MethodNumbersInAModelDirectoryAreCheckedNamingTheFile) {
  MethodConfig lora;
  lora.type = Method::kLora;
  lora.lora_rank = 3;
  auto m = CreateModel(Tiny(), lora, 2);
  ASSERT_THAT(m, IsOk());
  attune::testing::TempDir dir("method_numbers");
  ASSERT_THAT(SaveHfModel(**m, dir / "kept", false), IsOk());
  const std::string ac_path = dir / "kept/adapter_config.json";
  const nlohmann::json ac = nlohmann::json::parse(attune::testing::ReadText(ac_path));
  for (const auto& [key, value, message] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"r", 1e300, "adapter_config.json: r must be a whole number in [1, 1024]"},
           {"r", "8", "adapter_config.json: r must be a whole number in [1, 1024]"},
           {"r", 0, "adapter_config.json: r must be a whole number in [1, 1024]"},
           {"lora_alpha", "16", "adapter_config.json: lora_alpha must be a number > 0"},
           {"target_modules", "query", "adapter_config.json: target_modules must be a list of module names"}}) {
    nlohmann::json bad = ac;
    bad[key] = value;
    attune::testing::WriteText(ac_path, bad.dump());
    EXPECT_THAT(LoadHfModel(dir / "kept").status(), StatusIs(absl::StatusCode::kInvalidArgument, message))
        << key << " = " << value.dump();
  }
  attune::testing::WriteText(ac_path, ac.dump());
  EXPECT_THAT(LoadHfModel(dir / "kept"), IsOk());

  MethodConfig adapter;
  adapter.type = Method::kAdapter;
  adapter.adapter_size = 4;
  auto a = CreateModel(Tiny(), adapter, 2);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(SaveHfModel(**a, dir / "adapter", false), IsOk());
  const std::string cfg_path = dir / "adapter/config.json";
  nlohmann::json cfg = nlohmann::json::parse(attune::testing::ReadText(cfg_path));
  for (const nlohmann::json& size : {nlohmann::json(1e300), nlohmann::json(-4), nlohmann::json("4")}) {
    cfg["attune_adapter_size"] = size;
    attune::testing::WriteText(cfg_path, cfg.dump());
    EXPECT_THAT(LoadHfModel(dir / "adapter").status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "config.json: attune_adapter_size must be a whole number"))
        << size.dump();
  }
}

TEST(ModelTest, LoaderNamesMissingKeysAndShapeMismatches) {
  auto m = CreateModel(Tiny(), {}, 1);
  attune::testing::TempDir dir("loader");
  ASSERT_THAT(SaveHfModel(**m, dir.path(), true), IsOk());
  auto file = common::ReadSafeTensors(dir / "model.safetensors");
  ASSERT_THAT(file, IsOk());
  auto broken = *file;
  broken.tensors.erase("bert.encoder.layer.1.output.dense.weight");
  broken.tensors["bert.embeddings.word_embeddings.weight"].shape = {25, 32};
  ASSERT_THAT(common::WriteSafeTensors(dir / "broken.safetensors", broken), IsOk());
  auto fresh_model = CreateModel(Tiny(), {}, 2);
  absl::Status s = LoadStateDict(**fresh_model, dir / "broken.safetensors", nullptr);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "missing keys: bert.encoder.layer.1.output.dense.weight"));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "bert.embeddings.word_embeddings.weight (checkpoint [25, 32], model [50, 16])"));
}

TEST(ModelTest, HeadlessCheckpointGetsAFreshHead) {
  auto m = CreateModel(Tiny(), {}, 1);
  attune::testing::TempDir dir("headless");
  ASSERT_THAT(SaveHfModel(**m, dir.path(), true), IsOk());
  auto file = *common::ReadSafeTensors(dir / "model.safetensors");
  file.tensors.erase("classifier.weight");
  file.tensors.erase("classifier.bias");
  file.tensors["cls.predictions.bias"] = file.tensors["bert.pooler.dense.bias"];
  ASSERT_THAT(common::WriteSafeTensors(dir / "headless.safetensors", file), IsOk());
  auto other = CreateModel(Tiny(), {}, 7);
  std::vector<std::string> fresh;
  ASSERT_THAT(LoadStateDict(**other, dir / "headless.safetensors", &fresh), IsOk());
  EXPECT_EQ(fresh, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  EXPECT_TRUE(torch::equal((*other)->pooler->weight, (*m)->pooler->weight));
}

// NOTE [model interface]: the loader reads names by the architecture's
// HfFacts: bare base-model names get "bert.", the oldest checkpoints'
// LayerNorm gamma/beta are weight/bias, and a masked-LM head's bias may come
// as cls.predictions.decoder.bias.
TEST(ModelTest, TheLoaderReadsBareLegacyAndAliasedNamesByTheArchitecturesFacts) {
  for (const std::string architecture : {"BertForSequenceClassification", "BertForMaskedLM"}) {
    BertConfig c = Tiny();
    c.architecture = architecture;
    auto m = CreateModel(c, {}, 1);
    ASSERT_THAT(m, IsOk());
    Model& model = **m;
    EXPECT_EQ(model.hf().architecture, architecture);
    EXPECT_EQ(model.head(), architecture == "BertForMaskedLM" ? Head::kMaskedLm : Head::kSequence);
    attune::testing::TempDir dir("legacy_names");
    ASSERT_THAT(SaveHfModel(model, dir.path(), true), IsOk());
    auto file = *common::ReadSafeTensors(dir / "model.safetensors");
    common::SafeTensorsFile legacy;
    for (const auto& [name, t] : file.tensors) {
      std::string n = name.rfind("bert.", 0) == 0 ? name.substr(5) : name;
      if (n.find("LayerNorm.weight") != std::string::npos) n.replace(n.size() - 6, 6, "gamma");
      if (n.find("LayerNorm.bias") != std::string::npos) n.replace(n.size() - 4, 4, "beta");
      if (n == "cls.predictions.bias") n = "cls.predictions.decoder.bias";
      legacy.tensors[n] = t;
    }
    EXPECT_EQ(legacy.tensors.count("embeddings.LayerNorm.gamma"), 1u);
    ASSERT_THAT(common::WriteSafeTensors(dir / "legacy.safetensors", legacy), IsOk());
    BertConfig other_config = c;
    auto other = CreateModel(other_config, {}, 9);
    ASSERT_THAT(other, IsOk());
    std::vector<std::string> fresh;
    ASSERT_THAT(LoadStateDict(**other, dir / "legacy.safetensors", &fresh, /*require_all=*/true), IsOk());
    EXPECT_TRUE(fresh.empty());
    auto want = model.NamedParameters(), got = (*other)->NamedParameters();
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(want[i].first, got[i].first);
      EXPECT_TRUE(torch::equal(want[i].second, got[i].second)) << architecture << " " << want[i].first;
    }
  }
}

TEST(OptimizerTest, AdamWMatchesTorchOptimAdamW) {
  auto ref = attune::testing::RunCommand("/usr/bin/python3 " + attune::testing::Fixture("adamw_reference.py"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  auto want = nlohmann::json::parse(ref.output);
  torch::Tensor a = torch::linspace(-1, 1, 7, torch::kFloat64).requires_grad_();
  torch::Tensor b = torch::linspace(0.5, 2, 3, torch::kFloat64).requires_grad_();
  auto opts = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{a}, opts(0.1));
  groups.emplace_back(std::vector<torch::Tensor>{b}, opts(0.0));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(1e-2));
  for (int t = 1; t <= 8; ++t) {
    for (auto& g : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(1e-2 * std::min(1.0, t / 3.0) * (1 - t / 10.0));
    }
    a.mutable_grad() = torch::sin(torch::arange(7, torch::kFloat64) * 0.7 + t);
    b.mutable_grad() = torch::cos(torch::arange(3, torch::kFloat64) * 1.3 - t) * 3;
    opt.step();
  }
  auto wa = want["decay"].get<std::vector<double>>(), wb = want["no_decay"].get<std::vector<double>>();
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(a[i].item<double>(), wa[static_cast<size_t>(i)], 1e-12);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(b[i].item<double>(), wb[static_cast<size_t>(i)], 1e-12);
}

}  // namespace
}  // namespace attune::worker::model
