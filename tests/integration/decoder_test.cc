// Decoder LLMs from Hugging Face directories (worker/model/decoder.h): tiny
// random Llama, Llama 3 (rope_scaling llama3), Mistral (sliding window),
// Qwen2 (q/k/v biases) and Qwen3 (q_norm/k_norm, head_dim of its own)
// checkpoints in each weight format, written by make_tiny_decoder.py with
// Debian's torch, give the logits of its independent float64 forward pass
// (decoder_reference.py); padding on either side changes nothing; configs and
// weights this build cannot run are refused naming the file and the key.

#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/model/decoder.h"
#include "worker/model/hf_checkpoint.h"

namespace attune::worker::model {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;
using ::attune::testing::Fixture;
using ::attune::testing::RunCommand;

struct Case {
  std::string name, flags;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string Make(const attune::testing::TempDir& dir, const std::string& flags) {
  auto r = RunCommand("/usr/bin/python3 " + Fixture("make_tiny_decoder.py") + " " + dir.path() + " " + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir.path();
}

std::vector<nlohmann::json> Expected(const std::string& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir + "/expected.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

torch::Tensor Ids(const nlohmann::json& ids) {
  return torch::tensor(ids.get<std::vector<int64_t>>(), torch::kLong).unsqueeze(0);
}

class DecoderParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(DecoderParityTest, LogitsMatchTheReferenceAndPaddingChangesNothing) {
  attune::testing::TempDir dir("decoder_" + GetParam().name);
  const std::string path = Make(dir, GetParam().flags);
  auto loaded = LoadHfModel(path);
  ASSERT_THAT(loaded.status(), IsOk());
  Model& m = **loaded;
  EXPECT_EQ(m.head(), Head::kCausalLm);
  torch::NoGradGuard g;
  const auto expected = Expected(path);
  ASSERT_EQ(expected.size(), 3u);
  std::vector<torch::Tensor> alone;
  for (const auto& e : expected) {
    const torch::Tensor ids = Ids(e["ids"]);
    const torch::Tensor got = m.CausalLmLogits(ids, torch::ones_like(ids))[0].to(torch::kFloat64);
    const torch::Tensor want = torch::tensor(e["logits"].get<std::vector<std::vector<double>>>().front(),
                                             torch::kFloat64);
    auto rows = e["logits"].get<std::vector<std::vector<double>>>();
    ASSERT_EQ(got.size(0), static_cast<int64_t>(rows.size()));
    double worst = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const torch::Tensor r = torch::tensor(rows[i], torch::kFloat64);
      worst = std::max(worst, (got[static_cast<int64_t>(i)] - r).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-4) << GetParam().name << ", " << rows.size() << " tokens";
    EXPECT_GT(want.abs().max().item<double>(), 0.1);  // logits of some size: the comparison means something
    alone.push_back(got);
  }
  // The first two sequences in one batch, right-padded and then left-padded.
  const auto a = expected[0]["ids"].get<std::vector<int64_t>>(), b = expected[1]["ids"].get<std::vector<int64_t>>();
  const int64_t t = static_cast<int64_t>(std::max(a.size(), b.size()));
  for (bool left : {false, true}) {
    torch::Tensor ids = torch::zeros({2, t}, torch::kLong), mask = torch::zeros({2, t}, torch::kLong);
    for (int row = 0; row < 2; ++row) {
      const auto& s = row == 0 ? a : b;
      const int64_t off = left ? t - static_cast<int64_t>(s.size()) : 0;
      for (size_t i = 0; i < s.size(); ++i) {
        ids[row][off + static_cast<int64_t>(i)] = s[i];
        mask[row][off + static_cast<int64_t>(i)] = 1;
      }
    }
    const torch::Tensor batch = m.CausalLmLogits(ids, mask).to(torch::kFloat64);
    ASSERT_TRUE(torch::isfinite(batch).all().item<bool>()) << "padding rows must stay finite";
    for (int row = 0; row < 2; ++row) {
      const int64_t n = static_cast<int64_t>((row == 0 ? a : b).size());
      const int64_t off = left ? t - n : 0;
      const double diff = (batch[row].narrow(0, off, n) - alone[static_cast<size_t>(row)]).abs().max().item<double>();
      EXPECT_LT(diff, 1e-5) << (left ? "left" : "right") << "-padded row " << row;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, DecoderParityTest,
    ::testing::Values(Case{"llama", "--arch llama"}, Case{"llama3_tied", "--arch llama3 --tie"},
                      Case{"mistral_window", "--arch mistral"}, Case{"qwen2_bf16_sharded",
                                                                     "--arch qwen2 --dtype BF16 --format safetensors-sharded"},
                      Case{"qwen3_f16_bin", "--arch qwen3 --dtype F16 --format bin-zip"}),
    [](const auto& info) { return info.param.name; });

// Incremental decoding (KvCache): a left-padded batch prefilled and then fed
// one token per step, a row dropped half-way, gives at every step the
// logits of the whole sequence's forward pass at that position; the Mistral
// case crosses its sliding window of 5.
TEST(DecoderCacheTest, IncrementalDecodingGivesTheFullForwardPassLogits) {
  for (const std::string flags : {"--arch mistral", "--arch qwen3 --tie"}) {
    SCOPED_TRACE(flags);
    attune::testing::TempDir dir("decoder_cache");
    auto loaded = LoadHfModel(Make(dir, flags));
    ASSERT_THAT(loaded.status(), IsOk());
    auto m = std::dynamic_pointer_cast<DecoderLmImpl>(*loaded);
    torch::NoGradGuard g;
    const std::vector<int64_t> a = {1, 5, 9, 33, 12, 60, 7, 8, 40, 41, 3}, b = {1, 17, 23, 5, 9, 2, 11};
    const torch::Tensor full_a = m->CausalLmLogits(Ids(a), torch::ones({1, 11}, torch::kLong))[0];
    const torch::Tensor full_b = m->CausalLmLogits(Ids(b), torch::ones({1, 7}, torch::kLong))[0];
    // Prompts a[:5] and b[:3] (left-padded by 2).
    torch::Tensor ids = torch::zeros({2, 5}, torch::kLong), mask = torch::ones({2, 5}, torch::kLong);
    for (int64_t i = 0; i < 5; ++i) ids[0][i] = a[static_cast<size_t>(i)];
    for (int64_t i = 0; i < 3; ++i) ids[1][2 + i] = b[static_cast<size_t>(i)];
    mask[1][0] = 0;
    mask[1][1] = 0;
    KvCache cache(11);
    torch::Tensor logits = m->Forward(ids, mask, &cache, /*last_only=*/true);
    double worst = std::max((logits[0] - full_a[4]).abs().max().item<double>(),
                            (logits[1] - full_b[2]).abs().max().item<double>());
    for (int64_t step = 0; step < 4; ++step) {
      const torch::Tensor next = torch::tensor({a[static_cast<size_t>(5 + step)], b[static_cast<size_t>(3 + step)]},
                                               torch::kLong).unsqueeze(1);
      logits = m->Forward(next, torch::ones_like(next), &cache, true);
      worst = std::max(worst, (logits[0] - full_a[5 + step]).abs().max().item<double>());
      worst = std::max(worst, (logits[1] - full_b[3 + step]).abs().max().item<double>());
    }
    EXPECT_EQ(cache.length, 9);
    cache.SelectRows(torch::tensor({int64_t{0}}));  // row 1 is done
    for (int64_t step = 0; step < 2; ++step) {
      const torch::Tensor next = torch::tensor({a[static_cast<size_t>(9 + step)]}, torch::kLong).unsqueeze(1);
      logits = m->Forward(next, torch::ones_like(next), &cache, true);
      worst = std::max(worst, (logits[0] - full_a[9 + step]).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-5);
    EXPECT_GT(full_a.abs().max().item<double>(), 0.1);
    // The cache is full: one more position is refused, not written past its end.
    const torch::Tensor one = torch::ones({1, 1}, torch::kLong);
    EXPECT_THROW(m->Forward(one, one, &cache, true), c10::Error);
  }
}

// Rewrites config.json's `key` to `value` (JSON text; "null" removes it).
void SetConfig(const std::string& dir, const std::string& key, const std::string& value) {
  auto j = nlohmann::json::parse(attune::testing::ReadText(dir + "/config.json"));
  if (value == "null") {
    j.erase(key);
  } else {
    j[key] = nlohmann::json::parse(value);
  }
  attune::testing::WriteText(dir + "/config.json", j.dump());
}

TEST(DecoderLoadTest, WhatCannotBeRunFaithfullyIsRefusedNamingTheFileAndTheKey) {
  attune::testing::TempDir dir("decoder_bad");
  const std::string path = Make(dir, "--arch llama");
  const std::string config = path + "/config.json";
  struct Bad {
    std::string key, value, says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"rope_scaling", R"({"rope_type": "yarn", "factor": 4})", "rope_scaling type 'yarn' is not supported"},
           {"hidden_act", R"("gelu")", "hidden_act \"gelu\" is not supported"},
           {"num_key_value_heads", "3", "num_key_value_heads 3 does not divide num_attention_heads 4"},
           {"vocab_size", R"("64")", "vocab_size must be a whole number"},
           {"hidden_size", "1e300", "hidden_size must be a whole number"},
           {"num_hidden_layers", "100000", "num_hidden_layers must be in [1, 1024]"},
           {"architectures", R"(["LlamaForSequenceClassification"])", "architectures 'LlamaForSequenceClassification'"},
           {"intermediate_size", "40", "model.layers.0.mlp.gate_proj.weight (checkpoint [48, 32], model [40, 32])"},
           {"tie_word_embeddings", "true", ""},  // accepted: lm_head.weight is then left unread
       }) {
    const std::string before = attune::testing::ReadText(config);
    SetConfig(path, bad.key, bad.value);
    auto got = LoadHfModel(path);
    if (bad.says.empty()) {
      EXPECT_THAT(got.status(), IsOk()) << bad.key;
    } else {
      EXPECT_THAT(got.status(), StatusIs(absl::StatusCode::kInvalidArgument, bad.says)) << bad.key;
      if (bad.key != "intermediate_size") {
        EXPECT_NE(std::string(got.status().message()).find(config), std::string::npos) << got.status();
      }
    }
    attune::testing::WriteText(config, before);
  }
  // An untied model without its LM head is incomplete.
  attune::testing::TempDir tied("decoder_tied");
  const std::string tied_path = Make(tied, "--arch qwen2 --tie");
  SetConfig(tied_path, "tie_word_embeddings", "false");
  EXPECT_THAT(LoadHfModel(tied_path).status(), StatusIs(absl::StatusCode::kInvalidArgument, "missing keys: lm_head.weight"));
}

// NOTE [packed sequences]: a row holding two examples, numbered 1 and 2 in
// the mask, gives each example's logits as it alone gives them (positions
// restart, attention stays inside each), for every family (Mistral's window
// included).
TEST(DecoderLoadTest, APackedRowComputesEachExampleAsAlone) {
  for (const char* flags : {"--arch llama3", "--arch mistral", "--arch qwen3 --tie"}) {
    attune::testing::TempDir dir("decoder_packed");
    auto loaded = LoadHfModel(Make(dir, flags));
    ASSERT_THAT(loaded.status(), IsOk());
    torch::NoGradGuard g;
    const torch::Tensor a = torch::tensor({{5, 9, 17, 3, 40, 41, 8}}, torch::kLong);
    const torch::Tensor b = torch::tensor({{11, 2, 60, 7}}, torch::kLong);
    const torch::Tensor alone_a = (*loaded)->CausalLmLogits(a, torch::ones_like(a));
    const torch::Tensor alone_b = (*loaded)->CausalLmLogits(b, torch::ones_like(b));
    const torch::Tensor packed_ids = torch::cat({a, b, torch::zeros({1, 2}, torch::kLong)}, 1);
    const torch::Tensor packed_mask = torch::cat(
        {torch::ones_like(a), torch::full_like(b, 2), torch::zeros({1, 2}, torch::kLong)}, 1);
    const torch::Tensor packed = (*loaded)->CausalLmLogits(packed_ids, packed_mask);
    EXPECT_LT((packed.narrow(1, 0, 7) - alone_a).abs().max().item<double>(), 1e-5) << flags;
    EXPECT_LT((packed.narrow(1, 7, 4) - alone_b).abs().max().item<double>(), 1e-5) << flags;
    // Without the numbering, b would see a: the check can fail.
    const torch::Tensor joined = (*loaded)->CausalLmLogits(packed_ids, packed_mask.gt(0).to(torch::kLong));
    EXPECT_GT((joined.narrow(1, 7, 4) - alone_b).abs().max().item<double>(), 1e-4) << flags;
  }
}

// NOTE [gradient checkpointing]: with it on, a training forward's graph holds
// one recomputing node per layer instead of the layers' operations, and
// backward gives the same gradients.
TEST(DecoderLoadTest, GradientCheckpointingRecomputesEachLayerAndGivesTheSameGradients) {
  attune::testing::TempDir dir("decoder_checkpointing");
  auto loaded = LoadHfModel(Make(dir, "--arch qwen3"));
  ASSERT_THAT(loaded.status(), IsOk());
  Model& m = **loaded;
  m.train();
  for (auto& [name, p] : m.NamedParameters()) p.set_requires_grad(true);
  const torch::Tensor ids = torch::tensor({{5, 9, 17, 3, 40, 41, 8}, {11, 2, 60, 7, 0, 0, 0}}, torch::kLong);
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0, 0}}, torch::kLong);
  auto run = [&](bool checkpointing, int* recomputing) {
    EXPECT_TRUE(m.SetGradientCheckpointing(checkpointing));
    for (auto& [name, p] : m.NamedParameters()) p.mutable_grad() = torch::Tensor();
    const torch::Tensor loss = m.CausalLmLogits(ids, mask).pow(2).mean();
    // The graph's nodes, by name.
    std::vector<torch::autograd::Node*> pending = {loss.grad_fn().get()};
    std::set<torch::autograd::Node*> seen;
    *recomputing = 0;
    while (!pending.empty()) {
      torch::autograd::Node* n = pending.back();
      pending.pop_back();
      if (n == nullptr || !seen.insert(n).second) continue;
      *recomputing += n->name().find("LayerCheckpoint") != std::string::npos;
      for (const auto& e : n->next_edges()) pending.push_back(e.function.get());
    }
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& [name, p] : m.NamedParameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  int plain_nodes = 0, checkpointed_nodes = 0;
  const auto plain = run(false, &plain_nodes);
  const auto checkpointed = run(true, &checkpointed_nodes);
  EXPECT_EQ(plain_nodes, 0);
  EXPECT_EQ(checkpointed_nodes, 2);  // one per layer
  ASSERT_EQ(plain.size(), checkpointed.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_LT((plain[i] - checkpointed[i]).abs().max().item<double>(), 1e-6) << i;
  }
}

TEST(DecoderLoadTest, AnEncoderHasNoCausalLmHeadAndADecoderNoEncoderHead) {
  attune::testing::TempDir dir("decoder_heads");
  auto loaded = LoadHfModel(Make(dir, "--arch qwen3"));
  ASSERT_THAT(loaded.status(), IsOk());
  const torch::Tensor ids = torch::ones({1, 3}, torch::kLong);
  EXPECT_THROW((*loaded)->SequenceLogits(ids, ids, ids), c10::Error);
  // Longer than max_position_embeddings (128): refused, not extrapolated.
  EXPECT_THROW((*loaded)->CausalLmLogits(torch::ones({1, 129}, torch::kLong), torch::ones({1, 129}, torch::kLong)),
               c10::Error);
  const DecoderConfig& config = std::dynamic_pointer_cast<DecoderLmImpl>(*loaded)->config();
  EXPECT_THAT(CreateDecoder(config, MethodConfig{Method::kAdapter}, 1).status(),
              StatusIs(absl::StatusCode::kUnimplemented, "method.type adapter"));
  // BERT's LoRA target names are not a decoder's.
  EXPECT_THAT(CreateDecoder(config, MethodConfig{Method::kLora}, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "'query' is not a projection"));
}

}  // namespace
}  // namespace attune::worker::model
