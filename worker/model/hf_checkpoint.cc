// The model's parameters under their Hugging Face names, and Hugging Face
// model directories both ways: loading a state dict (bare or prefixed names,
// old LayerNorm names, the heads each architecture declares), saving config,
// weights and PEFT adapters, and loading an export for inference.

#include <algorithm>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/json_fields.h"
#include "common/safetensors.h"
#include "worker/model/bert.h"
#include "worker/model/hf_io.h"
#include "worker/model/peft.h"
#include "worker/model/tensor_io.h"

namespace attune::worker::model {

namespace {

const std::string kPeftPrefix = "base_model.model.";

}  // namespace

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

absl::Status SaveHfModel(BertClassifier& model, const std::string& dir, bool merge_lora, const std::string& shown_dir) {
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
    const std::string base_path =
        std::filesystem::absolute(shown_dir.empty() ? dir : shown_dir, ec).lexically_normal().string();
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
  // The method's numbers are input like any other: a float such as 1e300
  // must not reach an integer cast, nor a string an exception.
  if (j.is_object() && j.contains("attune_adapter_size")) {
    method.type = Method::kAdapter;
    if (!common::JsonToInt(j["attune_adapter_size"], &method.adapter_size) || method.adapter_size < 1 ||
        method.adapter_size > 8192) {
      return absl::InvalidArgumentError(dir + "/config.json: attune_adapter_size must be a whole number in [1, 8192]");
    }
  }
  auto ac_text = common::ReadFile(dir + "/adapter_config.json", 1 << 20);
  if (ac_text.ok()) {
    auto ac = nlohmann::json::parse(*ac_text, nullptr, false);
    if (ac.is_discarded()) return absl::InvalidArgumentError(dir + "/adapter_config.json: not JSON");
    method.type = Method::kLora;
    const auto bad_field = [&](const char* what) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/adapter_config.json: ", what));
    };
    if (!ac.is_object()) return bad_field("not a JSON object");
    if (ac.contains("r") && (!common::JsonToInt(ac["r"], &method.lora_rank) || method.lora_rank < 1 ||
                             method.lora_rank > 1024)) {
      return bad_field("r must be a whole number in [1, 1024]");
    }
    if (ac.contains("lora_alpha")) {
      if (!ac["lora_alpha"].is_number() || !(ac["lora_alpha"].get<double>() > 0)) {
        return bad_field("lora_alpha must be a number > 0");
      }
      method.lora_alpha = ac["lora_alpha"].get<double>();
    }
    std::vector<std::string> modules = {"query", "value"};
    if (ac.contains("target_modules")) {
      const auto& t = ac["target_modules"];
      if (!t.is_array() || !std::all_of(t.begin(), t.end(), [](const nlohmann::json& m) { return m.is_string(); })) {
        return bad_field("target_modules must be a list of module names");
      }
      modules = t.get<std::vector<std::string>>();
    }
    auto targets = AttuneTargets(modules);
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
