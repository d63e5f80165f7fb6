#include "worker/model/bert.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace attune::worker::model {

BertClassifierImpl::BertClassifierImpl(const BertConfig& c, const MethodConfig& m) : config(c), method_(m) {
  const int64_t h = c.hidden_size;
  word = register_module("word", torch::nn::Embedding(c.vocab_size, h));
  position = register_module("position", torch::nn::Embedding(c.max_position_embeddings, h));
  token_type = register_module("token_type", torch::nn::Embedding(c.type_vocab_size, h));
  emb_ln = register_module("emb_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
  emb_drop = register_module("emb_drop", torch::nn::Dropout(c.hidden_dropout_prob));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(register_module(absl::StrCat("layer", i), BertLayer(c)));
  }
  if (c.masked_lm()) {
    mlm_dense = register_module("mlm_dense", torch::nn::Linear(h, h));
    mlm_ln = register_module("mlm_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
    mlm_bias = register_parameter("mlm_bias", torch::zeros({c.vocab_size}));
  } else {
    if (!c.token_classification()) pooler = register_module("pooler", torch::nn::Linear(h, h));
    cls_drop = register_module(
        "cls_drop", torch::nn::Dropout(c.classifier_dropout >= 0 ? c.classifier_dropout : c.hidden_dropout_prob));
    classifier =
        register_module("classifier", torch::nn::Linear(h, static_cast<int64_t>(std::max<size_t>(c.labels.size(), 1))));
  }
  torch::NoGradGuard g;
  for (auto* e : {&word, &position, &token_type}) (*e)->weight.normal_(0, c.initializer_range);
  if (c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size) word->weight[c.pad_token_id].zero_();
  if (pooler) InitLinear(pooler->weight, pooler->bias, c.initializer_range);
  if (classifier) InitLinear(classifier->weight, classifier->bias, c.initializer_range);
  if (mlm_dense) InitLinear(mlm_dense->weight, mlm_dense->bias, c.initializer_range);
}

torch::Tensor BertClassifierImpl::Encode(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                                         const torch::Tensor& attention_mask) {
  const int64_t t = input_ids.size(1);
  torch::Tensor pos = torch::arange(t, input_ids.options()).unsqueeze(0);
  torch::Tensor x = emb_drop(emb_ln(word(input_ids) + position(pos) + token_type(token_type_ids)));
  // [b, 1, 1, t]: 0 where attended, the most negative float where masked (as HF does).
  torch::Tensor mask_bias =
      (1.0 - attention_mask.to(torch::kFloat).unsqueeze(1).unsqueeze(2)) * std::numeric_limits<float>::lowest();
  for (auto& layer : layers) x = layer(x, mask_bias);
  return x;
}

absl::StatusOr<BertClassifier> CreateModel(const BertConfig& config, const MethodConfig& method, uint64_t seed) {
  if (auto s = config.Validate(); !s.ok()) return s;
  if (method.type == Method::kLora && (method.lora_rank <= 0 || method.lora_targets.empty())) {
    return absl::InvalidArgumentError("method.lora: rank must be > 0 and targets non-empty");
  }
  if (method.type == Method::kAdapter && method.adapter_size <= 0) {
    return absl::InvalidArgumentError("method.adapter.size: must be > 0");
  }
  // The base weights come from `seed` alone, so that every method starts
  // from the same encoder; LoRA and adapter weights draw from a second stream.
  torch::manual_seed(seed);
  BertClassifier model(config, method);
  torch::manual_seed(seed ^ 0x9e3779b97f4a7c15ULL);
  for (auto& layer : model->layers) layer->AddMethod(method);
  // Freezing: full trains everything; head trains pooler + classifier; lora
  // trains LoRA matrices + head; adapter trains adapters, LayerNorms + head.
  const HfFacts& facts = model->hf();
  for (auto& [name, t] : model->NamedParameters()) {
    const bool head = std::any_of(facts.head_prefixes.begin(), facts.head_prefixes.end(),
                                  [&](const std::string& p) { return absl::StartsWith(name, p); });
    bool train = true;
    switch (method.type) {
      case Method::kFull: train = true; break;
      case Method::kHead: train = head; break;
      case Method::kLora: train = head || absl::StrContains(name, ".lora_"); break;
      case Method::kAdapter:
        train = head || absl::StrContains(name, ".adapter.") || absl::StrContains(name, "LayerNorm");
        break;
    }
    t.set_requires_grad(train);
  }
  return model;
}

Head BertClassifierImpl::head() const {
  if (config.masked_lm()) return Head::kMaskedLm;
  return config.token_classification() ? Head::kToken : Head::kSequence;
}

const HfFacts& BertClassifierImpl::hf() const {
  // NOTE [model interface]: BERT's names as Hugging Face's BertFor* classes
  // write them; gamma/beta are the LayerNorm names of the oldest checkpoints.
  static const HfFacts* const facts = [] {
    auto* f = new HfFacts[3];
    for (int i = 0; i < 3; ++i) {
      f[i].base_prefix = "bert.";
      f[i].top_prefixes = {"bert.", "classifier.", "cls."};
      f[i].legacy_suffixes = {{".gamma", ".weight"}, {".beta", ".bias"}};
      // The masked-LM decoder is tied to the word embeddings (never read);
      // its bias is cls.predictions.bias under another name.
      f[i].aliases = {{"cls.predictions.decoder.bias", "cls.predictions.bias"}};
    }
    f[0].architecture = "BertForSequenceClassification";
    f[0].head_prefixes = {"bert.pooler.", "classifier."};
    f[0].resizable_prefixes = {"classifier."};
    f[0].peft_task_type = "SEQ_CLS";
    f[0].modules_to_save = {"classifier", "pooler"};
    f[1].architecture = "BertForTokenClassification";
    f[1].head_prefixes = {"classifier."};
    f[1].resizable_prefixes = {"classifier."};
    f[1].peft_task_type = "TOKEN_CLS";
    f[1].modules_to_save = {"classifier"};
    f[2].architecture = "BertForMaskedLM";
    f[2].head_prefixes = {"cls."};
    f[2].modules_to_save = {"cls"};
    return f;
  }();
  switch (head()) {
    case Head::kSequence: return facts[0];
    case Head::kToken: return facts[1];
    case Head::kMaskedLm: return facts[2];
    case Head::kCausalLm: break;  // not a BERT head
  }
  return facts[0];
}

std::string BertClassifierImpl::ConfigJson() const { return config.ToJson(); }

std::vector<std::string> BertClassifierImpl::PeftTargetModules() const {
  return model::PeftTargetModules(method_.lora_targets, config.num_hidden_layers);
}

}  // namespace attune::worker::model
