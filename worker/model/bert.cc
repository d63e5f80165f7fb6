#include "worker/model/bert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "worker/model/hf_io.h"
#include "worker/model/tensor_io.h"

namespace attune::worker::model {
namespace {

void InitLinear(torch::Tensor& w, torch::Tensor& b, double std) {
  torch::NoGradGuard g;
  w.normal_(0, std);
  if (b.defined()) b.zero_();
}

const std::string kPeftPrefix = "base_model.model.";

// Attune's LoRA targets as PEFT target_modules: suffixes of the HF module
// names that match those modules and no others ("output" is each layer's
// output.dense, which ".output.dense" alone would confuse with
// attention.output.dense).
std::vector<std::string> PeftTargetModules(const std::vector<std::string>& targets, int64_t layers) {
  std::vector<std::string> out;
  for (const auto& t : targets) {
    if (t == "query" || t == "key" || t == "value") {
      out.push_back("attention.self." + t);
    } else if (t == "attention.output" || t == "intermediate") {
      out.push_back(t + ".dense");
    } else if (t == "output") {
      for (int64_t i = 0; i < layers; ++i) out.push_back(absl::StrCat("encoder.layer.", i, ".output.dense"));
    }
  }
  return out;
}

// The inverse, accepting Attune's own names too (older exports).
absl::StatusOr<std::vector<std::string>> AttuneTargets(const std::vector<std::string>& modules) {
  std::vector<std::string> out;
  auto add = [&](const std::string& t) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  };
  for (std::string m : modules) {
    if (absl::StartsWith(m, "attention.self.")) m = m.substr(15);
    if (m == "query" || m == "key" || m == "value" || m == "attention.output" || m == "intermediate" || m == "output") {
      add(m);
    } else if (m == "attention.output.dense" || m == "intermediate.dense") {
      add(m.substr(0, m.size() - 6));
    } else if (absl::StartsWith(m, "encoder.layer.") && absl::EndsWith(m, ".output.dense") &&
               !absl::StrContains(m, "attention")) {
      add("output");
    } else {
      return absl::InvalidArgumentError(absl::StrCat("target_modules entry '", m, "' is not a LoRA target Attune runs"));
    }
  }
  return out;
}

bool Targets(const MethodConfig& m, const std::string& name) {
  if (m.type != Method::kLora) return false;
  for (const auto& t : m.lora_targets) {
    if (t == name) return true;
  }
  return false;
}

}  // namespace

LoraLinearImpl::LoraLinearImpl(int64_t in, int64_t out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  bias = register_parameter("bias", torch::zeros({out}));
}

void LoraLinearImpl::EnableLora(int64_t rank, double alpha, double dropout) {
  const int64_t in = weight.size(1), out = weight.size(0);
  lora_A = register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(in, rank).bias(false)));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(rank, out).bias(false)));
  lora_dropout = register_module("lora_dropout", torch::nn::Dropout(dropout));
  torch::NoGradGuard g;
  // PEFT's initialisation: A ~ kaiming-uniform(a = sqrt(5)), B = 0, so the
  // adapted model starts equal to the base model.
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  lora_B->weight.zero_();
  scale = alpha / static_cast<double>(rank);
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  if (lora_A) y = y + lora_B(lora_A(lora_dropout(x))) * scale;
  return y;
}

void LoraLinearImpl::MergeLora() {
  if (!lora_A) return;
  torch::NoGradGuard g;
  weight.add_(torch::matmul(lora_B->weight, lora_A->weight) * scale);
  unregister_module("lora_A");
  unregister_module("lora_B");
  unregister_module("lora_dropout");
  lora_A = nullptr;
  lora_B = nullptr;
  lora_dropout = nullptr;
}

BottleneckAdapterImpl::BottleneckAdapterImpl(int64_t hidden, int64_t size) {
  down = register_module("down", torch::nn::Linear(hidden, size));
  up = register_module("up", torch::nn::Linear(size, hidden));
  torch::NoGradGuard g;
  down->weight.normal_(0, 0.01);
  down->bias.zero_();
  up->weight.zero_();
  up->bias.zero_();
}

torch::Tensor BottleneckAdapterImpl::forward(const torch::Tensor& x) {
  return x + up(torch::gelu(down(x)));
}

BertLayerImpl::BertLayerImpl(const BertConfig& c)
    : heads(c.num_attention_heads), head_dim(c.hidden_size / c.num_attention_heads) {
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  query = register_module("query", LoraLinear(h, h));
  key = register_module("key", LoraLinear(h, h));
  value = register_module("value", LoraLinear(h, h));
  attn_out = register_module("attn_out", LoraLinear(h, h));
  inter = register_module("inter", LoraLinear(h, f));
  out = register_module("out", LoraLinear(f, h));
  attn_ln = register_module("attn_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
  out_ln = register_module("out_ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(c.layer_norm_eps)));
  attn_drop = register_module("attn_drop", torch::nn::Dropout(c.attention_probs_dropout_prob));
  hidden_drop = register_module("hidden_drop", torch::nn::Dropout(c.hidden_dropout_prob));
  for (LoraLinear* l : {&query, &key, &value, &attn_out, &inter, &out}) {
    InitLinear((*l)->weight, (*l)->bias, c.initializer_range);
  }
}

void BertLayerImpl::AddMethod(const MethodConfig& m) {
  const std::pair<LoraLinear*, const char*> targets[] = {{&query, "query"},          {&key, "key"},
                                                         {&value, "value"},          {&attn_out, "attention.output"},
                                                         {&inter, "intermediate"},   {&out, "output"}};
  for (auto [l, name] : targets) {
    if (Targets(m, name)) (*l)->EnableLora(m.lora_rank, m.lora_alpha, m.lora_dropout);
  }
  if (m.type == Method::kAdapter) {
    const int64_t h = query->weight.size(0);
    attn_adapter = register_module("attn_adapter", BottleneckAdapter(h, m.adapter_size));
    ffn_adapter = register_module("ffn_adapter", BottleneckAdapter(h, m.adapter_size));
  }
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask_bias) {
  const int64_t b = x.size(0), t = x.size(1);
  auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads, head_dim}).transpose(1, 2); };
  torch::Tensor q = split(query(x)), k = split(key(x)), v = split(value(x));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
  scores = scores + mask_bias;
  torch::Tensor probs = attn_drop(torch::softmax(scores, -1));
  torch::Tensor ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, t, heads * head_dim});
  torch::Tensor a = hidden_drop(attn_out(ctx));
  if (attn_adapter) a = attn_adapter(a);
  torch::Tensor h1 = attn_ln(a + x);
  torch::Tensor f = hidden_drop(out(torch::gelu(inter(h1))));
  if (ffn_adapter) f = ffn_adapter(f);
  return out_ln(f + h1);
}

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

torch::Tensor BertClassifierImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                                          const torch::Tensor& attention_mask) {
  TORCH_CHECK(pooler, "a ", config.architecture, " model has no sequence head");
  torch::Tensor x = Encode(input_ids, token_type_ids, attention_mask);
  torch::Tensor pooled = torch::tanh(pooler(x.select(1, 0)));
  return classifier(cls_drop(pooled));
}

torch::Tensor BertClassifierImpl::MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions) {
  TORCH_CHECK(mlm_dense, "a ", config.architecture, " model has no masked-LM head");
  torch::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions);
  h = mlm_ln(torch::gelu(mlm_dense(h)).to(torch::kFloat));  // fp32 LayerNorm under autocast
  return torch::addmm(mlm_bias, h, word->weight.t());
}

torch::Tensor BertClassifierImpl::TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) {
  TORCH_CHECK(classifier && !pooler, "a ", config.architecture, " model has no token-classification head");
  return classifier(cls_drop(hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions)));
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

std::vector<std::pair<std::string, torch::Tensor>> NamedParameters(BertClassifier& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto& m = *model;
  auto add_ln = [&](const std::string& p, torch::nn::LayerNorm& ln) {
    out.emplace_back(p + ".weight", ln->weight);
    out.emplace_back(p + ".bias", ln->bias);
  };
  auto add_linear = [&](const std::string& p, LoraLinear& l) {
    out.emplace_back(p + ".weight", l->weight);
    out.emplace_back(p + ".bias", l->bias);
    if (l->lora_A) {
      out.emplace_back(p + ".lora_A.weight", l->lora_A->weight);
      out.emplace_back(p + ".lora_B.weight", l->lora_B->weight);
    }
  };
  auto add_adapter = [&](const std::string& p, BottleneckAdapter& a) {
    if (!a) return;
    out.emplace_back(p + ".adapter.down.weight", a->down->weight);
    out.emplace_back(p + ".adapter.down.bias", a->down->bias);
    out.emplace_back(p + ".adapter.up.weight", a->up->weight);
    out.emplace_back(p + ".adapter.up.bias", a->up->bias);
  };
  out.emplace_back("bert.embeddings.word_embeddings.weight", m.word->weight);
  out.emplace_back("bert.embeddings.position_embeddings.weight", m.position->weight);
  out.emplace_back("bert.embeddings.token_type_embeddings.weight", m.token_type->weight);
  add_ln("bert.embeddings.LayerNorm", m.emb_ln);
  for (size_t i = 0; i < m.layers.size(); ++i) {
    auto& l = m.layers[i];
    std::string p = absl::StrCat("bert.encoder.layer.", i);
    add_linear(p + ".attention.self.query", l->query);
    add_linear(p + ".attention.self.key", l->key);
    add_linear(p + ".attention.self.value", l->value);
    add_linear(p + ".attention.output.dense", l->attn_out);
    add_adapter(p + ".attention.output", l->attn_adapter);
    add_ln(p + ".attention.output.LayerNorm", l->attn_ln);
    add_linear(p + ".intermediate.dense", l->inter);
    add_linear(p + ".output.dense", l->out);
    add_adapter(p + ".output", l->ffn_adapter);
    add_ln(p + ".output.LayerNorm", l->out_ln);
  }
  if (m.pooler) {
    out.emplace_back("bert.pooler.dense.weight", m.pooler->weight);
    out.emplace_back("bert.pooler.dense.bias", m.pooler->bias);
  }
  if (m.classifier) {
    out.emplace_back("classifier.weight", m.classifier->weight);
    out.emplace_back("classifier.bias", m.classifier->bias);
  } else {
    out.emplace_back("cls.predictions.transform.dense.weight", m.mlm_dense->weight);
    out.emplace_back("cls.predictions.transform.dense.bias", m.mlm_dense->bias);
    add_ln("cls.predictions.transform.LayerNorm", m.mlm_ln);
    out.emplace_back("cls.predictions.bias", m.mlm_bias);
  }
  return out;
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

absl::Status LoadStateDict(BertClassifier& model, const std::string& path, std::vector<std::string>* fresh,
                           bool require_all) {
  auto file = common::ReadSafeTensors(path);
  if (!file.ok()) return file.status();
  return LoadStateDict(model, *file, path, fresh, require_all);
}

absl::Status LoadStateDict(BertClassifier& model, const common::SafeTensorsFile& weights, const std::string& path,
                           std::vector<std::string>* fresh, bool require_all) {
  // Normalise names: "bert." prefix, gamma/beta.
  std::map<std::string, const common::SafeTensor*> by_name;
  for (const auto& [raw, t] : weights.tensors) {
    std::string name = raw;
    if (absl::EndsWith(name, "position_ids")) continue;
    if (absl::StartsWith(name, "cls.")) {
      // Only the masked-LM head's own tensors; the decoder is tied (see bert.h).
      if (name == "cls.predictions.decoder.bias") {
        if (!weights.tensors.count("cls.predictions.bias")) by_name["cls.predictions.bias"] = &t;
        continue;
      }
      if (!absl::StartsWith(name, "cls.predictions.") || name == "cls.predictions.decoder.weight") continue;
    } else if (!absl::StartsWith(name, "bert.") && !absl::StartsWith(name, "classifier.")) {
      name = "bert." + name;
    }
    if (absl::EndsWith(name, ".gamma")) name = name.substr(0, name.size() - 6) + ".weight";
    if (absl::EndsWith(name, ".beta")) name = name.substr(0, name.size() - 5) + ".bias";
    by_name[name] = &t;
  }
  std::vector<std::string> missing, mismatched;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (auto& [name, param] : NamedParameters(model)) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      bool optional = absl::StartsWith(name, "classifier.") || absl::StartsWith(name, "bert.pooler.") ||
                      absl::StartsWith(name, "cls.") ||
                      absl::StrContains(name, ".lora_") || absl::StrContains(name, ".adapter.");
      if (optional && !require_all) {
        if (fresh) fresh->push_back(name);
      } else {
        missing.push_back(name);
      }
      continue;
    }
    auto tensor = ToTorch(*it->second, name);
    if (!tensor.ok()) return tensor.status();
    if (tensor->sizes() != param.sizes()) {
      if (!require_all && absl::StartsWith(name, "classifier.")) {
        // A head for other labels: start it afresh, as a new head would.
        if (fresh) fresh->push_back(name + " (checkpoint has " + ShapeString(tensor->sizes()) + ")");
        continue;
      }
      mismatched.push_back(absl::StrCat(name, " (checkpoint ", ShapeString(tensor->sizes()), ", model ",
                                        ShapeString(param.sizes()), ")"));
      continue;
    }
    copies.emplace_back(param, *tensor);
  }
  if (!missing.empty() || !mismatched.empty()) {
    std::string msg = absl::StrCat(path, ": cannot load checkpoint");
    if (!missing.empty()) absl::StrAppend(&msg, "; missing keys: ", absl::StrJoin(missing, ", "));
    if (!mismatched.empty()) absl::StrAppend(&msg, "; shape mismatches: ", absl::StrJoin(mismatched, ", "));
    return absl::InvalidArgumentError(msg);
  }
  torch::NoGradGuard g;
  for (auto& [dst, src] : copies) dst.copy_(src);
  return absl::OkStatus();
}

absl::Status SaveHfModel(BertClassifier& model, const std::string& dir, bool merge_lora) {
  if (auto s = common::MakeDirs(dir); !s.ok()) return s;
  common::SafeTensorsFile base, adapter;
  base.metadata["format"] = "pt";
  adapter.metadata["format"] = "pt";
  bool has_lora = false;
  std::map<std::string, torch::Tensor> merged;
  for (auto& layer : model->layers) {
    for (LoraLinear* l : {&layer->query, &layer->key, &layer->value, &layer->attn_out, &layer->inter, &layer->out}) {
      if ((*l)->lora_A) has_lora = true;
    }
  }
  // Merging works on copies so that the live model keeps training unchanged.
  const auto params = NamedParameters(model);
  std::map<std::string, torch::Tensor> by_name(params.begin(), params.end());
  for (const auto& [name, t] : params) {
    if (absl::StrContains(name, ".lora_")) {
      if (!merge_lora) adapter.tensors[kPeftPrefix + name] = FromTorch(t);
      continue;
    }
    // The trained head travels in the adapter too, as PEFT's modules_to_save.
    if (!merge_lora && has_lora && t.requires_grad()) adapter.tensors[kPeftPrefix + name] = FromTorch(t);
    torch::Tensor value = t;
    if (merge_lora && has_lora && absl::EndsWith(name, ".weight")) {
      std::string stem = name.substr(0, name.size() - 7);
      auto a = by_name.find(stem + ".lora_A.weight");
      if (a != by_name.end()) {
        const torch::Tensor& b = by_name.at(stem + ".lora_B.weight");
        double scale = model->method.lora_alpha / static_cast<double>(model->method.lora_rank);
        torch::NoGradGuard g;
        value = t + torch::matmul(b, a->second) * scale;
      }
    }
    base.tensors[name] = FromTorch(value);
  }
  if (auto s = common::WriteSafeTensors(dir + "/model.safetensors", base); !s.ok()) return s;
  if (!adapter.tensors.empty()) {
    if (auto s = common::WriteSafeTensors(dir + "/adapter_model.safetensors", adapter); !s.ok()) return s;
    // NOTE [PEFT layout]: what PEFT's PeftModel.from_pretrained reads
    // (peft/utils/save_and_load.py and tuners_utils.check_target_module_exists):
    // tensor names under "base_model.model." without the adapter name;
    // target_modules as module-name suffixes, each naming exactly the
    // Linear modules that carry lora_A/lora_B; the trained head as
    // modules_to_save. The base model is this directory's model.safetensors.
    std::error_code ec;
    const std::string base_path = std::filesystem::absolute(dir, ec).lexically_normal().string();
    const auto& c = model->config;
    nlohmann::json ac = {{"peft_type", "LORA"},
                         {"task_type", c.masked_lm()              ? nlohmann::json()
                                       : c.token_classification() ? nlohmann::json("TOKEN_CLS")
                                                                  : nlohmann::json("SEQ_CLS")},
                         {"base_model_name_or_path", base_path},
                         {"r", model->method.lora_rank},
                         {"lora_alpha", model->method.lora_alpha},
                         {"lora_dropout", model->method.lora_dropout},
                         {"target_modules", PeftTargetModules(model->method.lora_targets, c.num_hidden_layers)},
                         {"modules_to_save", c.masked_lm()              ? std::vector<std::string>{"cls"}
                                             : c.token_classification() ? std::vector<std::string>{"classifier"}
                                                                        : std::vector<std::string>{"classifier", "pooler"}},
                         {"bias", "none"},
                         {"fan_in_fan_out", false},
                         {"inference_mode", true},
                         {"init_lora_weights", true},
                         {"use_rslora", false},
                         {"use_dora", false},
                         {"layers_to_transform", nullptr},
                         {"layers_pattern", nullptr},
                         {"revision", nullptr}};
    if (auto s = common::WriteFileAtomic(dir + "/adapter_config.json", ac.dump(2)); !s.ok()) return s;
  }
  std::string cfg = model->config.ToJson();
  if (model->method.type == Method::kAdapter) {
    auto j = nlohmann::json::parse(cfg);
    j["attune_adapter_size"] = model->method.adapter_size;
    cfg = j.dump(2);
  }
  return common::WriteFileAtomic(dir + "/config.json", cfg);
}

absl::StatusOr<BertClassifier> LoadHfModel(const std::string& dir) {
  auto text = common::ReadFile(dir + "/config.json", 1 << 20);
  if (!text.ok()) return text.status();
  auto config = BertConfig::FromJson(*text, dir + "/config.json");
  if (!config.ok()) return config.status();
  MethodConfig method;
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.contains("attune_adapter_size")) {
    method.type = Method::kAdapter;
    method.adapter_size = j["attune_adapter_size"].get<int64_t>();
  }
  auto ac_text = common::ReadFile(dir + "/adapter_config.json", 1 << 20);
  if (ac_text.ok()) {
    auto ac = nlohmann::json::parse(*ac_text, nullptr, false);
    if (ac.is_discarded()) return absl::InvalidArgumentError(dir + "/adapter_config.json: not JSON");
    method.type = Method::kLora;
    method.lora_rank = ac.value("r", 8);
    method.lora_alpha = ac.value("lora_alpha", 16.0);
    auto targets = AttuneTargets(ac.value("target_modules", std::vector<std::string>{"query", "value"}));
    if (!targets.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_config.json: ", targets.status().message()));
    method.lora_targets = *targets;
  }
  if (config->labels.empty()) config->labels = {"LABEL_0", "LABEL_1"};
  auto model = CreateModel(*config, method, 0);
  if (!model.ok()) return model.status();
  std::vector<std::string> fresh;
  auto weights = ReadHfWeights(dir);
  if (!weights.ok()) return weights.status();
  if (auto s = LoadStateDict(*model, weights->file, weights->source, &fresh); !s.ok()) return s;
  if (ac_text.ok()) {
    auto adapter = common::ReadSafeTensors(dir + "/adapter_model.safetensors");
    if (!adapter.ok()) return adapter.status();
    std::map<std::string, torch::Tensor> params;
    for (auto& [n, t] : NamedParameters(*model)) params[n] = t;
    torch::NoGradGuard g;
    for (const auto& [peft_name, st] : adapter->tensors) {
      // PEFT's names (NOTE [PEFT layout]), or bare ones from older exports.
      const std::string name = absl::StartsWith(peft_name, kPeftPrefix) ? peft_name.substr(kPeftPrefix.size()) : peft_name;
      auto it = params.find(name);
      if (it == params.end()) return absl::InvalidArgumentError(absl::StrCat("adapter tensor ", name, " has no place in the model"));
      auto t = ToTorch(st, name);
      if (!t.ok()) return t.status();
      if (t->sizes() != it->second.sizes()) return absl::InvalidArgumentError(absl::StrCat("adapter tensor ", name, ": shape mismatch"));
      it->second.copy_(*t);
    }
    fresh.erase(std::remove_if(fresh.begin(), fresh.end(),
                               [](const std::string& n) { return absl::StrContains(n, ".lora_"); }),
                fresh.end());
  }
  for (const auto& f : fresh) {
    if (absl::StartsWith(f, "classifier.") || absl::StartsWith(f, "cls.")) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": exported model lacks ", f));
    }
  }
  (*model)->eval();
  return model;
}

}  // namespace attune::worker::model
