#include "worker/model/bert.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace attune::worker::model {

BertClassifierImpl::BertClassifierImpl(const BertConfig& c, const MethodConfig& m) : config(c), method(m) {
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
  for (auto& [name, t] : NamedParameters(model)) {
    bool head = absl::StartsWith(name, "bert.pooler.") || absl::StartsWith(name, "classifier.") ||
                absl::StartsWith(name, "cls.");
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

absl::Status InitWordEmbeddings(BertClassifier& model, const WordVectors& vectors, const VocabularyMatch& match,
                                uint64_t seed) {
  const int64_t n = static_cast<int64_t>(match.token_ids.size());
  const int64_t d = vectors.dimensions, h = model->config.hidden_size, v = model->word->weight.size(0);
  if (n == 0) return absl::OkStatus();
  for (int64_t id : match.token_ids) {
    if (id < 0 || id >= v) return absl::InternalError(absl::StrCat("token id ", id, " outside the embeddings"));
  }
  torch::NoGradGuard g;
  auto table = torch::from_blob(const_cast<float*>(vectors.values.data()),
                                {static_cast<int64_t>(vectors.words.size()), d}, torch::kFloat32);
  auto rows = torch::tensor(match.vector_rows, torch::kLong);
  // Double precision for the centring, projection and scale: the result is
  // then the same on every rank and build, whatever the BLAS.
  torch::Tensor x = table.index_select(0, rows).to(torch::kFloat64);
  x = x - x.mean(0, /*keepdim=*/true);
  // A fixed projection from `seed` alone (its own generator: the model's
  // random stream is not touched). QR of a Gaussian matrix gives orthonormal
  // columns; transposed when the target is wider than the vectors.
  auto gen = at::detail::createCPUGenerator(seed ^ 0x676c6f7665ULL);
  torch::Tensor gauss = at::randn({std::max(d, h), std::min(d, h)}, gen, torch::kFloat64);
  torch::Tensor q = std::get<0>(torch::linalg_qr(gauss, "reduced"));  // [max, min], orthonormal columns
  torch::Tensor projection = h >= d ? q.t() : q;                       // [d, h]
  torch::Tensor e = x.matmul(projection);
  const double sd = e.std().item<double>();
  if (!(sd > 0)) return absl::OkStatus();  // a single covered token: nothing to scale against
  e = e * (model->config.initializer_range / sd);
  model->word->weight.index_copy_(0, torch::tensor(match.token_ids, torch::kLong), e.to(torch::kFloat32));
  return absl::OkStatus();
}

ParameterCounts CountParameters(BertClassifier& model) {
  ParameterCounts c;
  for (auto& [name, t] : NamedParameters(model)) {
    c.total += t.numel();
    if (t.requires_grad()) c.trainable += t.numel();
  }
  return c;
}

}  // namespace attune::worker::model
