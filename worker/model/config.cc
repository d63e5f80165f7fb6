#include "worker/model/config.h"

#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/model/decoder_config.h"

namespace attune::worker::model {

absl::StatusOr<BertConfig> BertConfig::FromJson(const std::string& text, const std::string& source) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  // Other architectures share key names (hidden_size, ...) but not weights:
  // loading them as BERT would be silently wrong.
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string()) return absl::InvalidArgumentError(absl::StrCat(source, ": model_type must be a string"));
    const std::string type = j["model_type"].get<std::string>();
    if (type != "bert") {
      return absl::InvalidArgumentError(absl::StrCat(source, ": model_type ", type,
                                                     " is not supported; Attune runs BERT encoders (model_type bert: "
                                                     "BERT, BioBERT, PubMedBERT, FinBERT, LegalBERT, SciBERT, ...)"));
    }
  }
  BertConfig c;
  auto get_int = [&](const char* k, int64_t* v) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", k, " must be an integer"));
    *v = j[k].get<int64_t>();
    return absl::OkStatus();
  };
  auto get_double = [&](const char* k, double* v) -> absl::Status {
    if (!j.contains(k) || j[k].is_null()) return absl::OkStatus();
    if (!j[k].is_number()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", k, " must be a number"));
    *v = j[k].get<double>();
    return absl::OkStatus();
  };
  for (auto [k, v] : std::vector<std::pair<const char*, int64_t*>>{
           {"vocab_size", &c.vocab_size}, {"hidden_size", &c.hidden_size}, {"num_hidden_layers", &c.num_hidden_layers},
           {"num_attention_heads", &c.num_attention_heads}, {"intermediate_size", &c.intermediate_size},
           {"max_position_embeddings", &c.max_position_embeddings}, {"type_vocab_size", &c.type_vocab_size},
           {"pad_token_id", &c.pad_token_id}, {"attune_max_length", &c.train_max_length}}) {
    if (auto s = get_int(k, v); !s.ok()) return s;
  }
  for (auto [k, v] : std::vector<std::pair<const char*, double*>>{
           {"hidden_dropout_prob", &c.hidden_dropout_prob},
           {"attention_probs_dropout_prob", &c.attention_probs_dropout_prob},
           {"classifier_dropout", &c.classifier_dropout}, {"layer_norm_eps", &c.layer_norm_eps},
           {"initializer_range", &c.initializer_range}}) {
    if (auto s = get_double(k, v); !s.ok()) return s;
  }
  if (j.contains("classifier_dropout") && !j["classifier_dropout"].is_null() &&
      !(c.classifier_dropout >= 0 && c.classifier_dropout < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": classifier_dropout must be in [0, 1) or null"));
  }
  if (j.contains("hidden_act") && j["hidden_act"].is_string()) c.hidden_act = j["hidden_act"];
  if (j.contains("id2label") && j["id2label"].is_object()) {
    c.labels.assign(j["id2label"].size(), "");
    for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
      size_t id = 0;
      try {
        id = std::stoul(it.key());
      } catch (...) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": id2label key '", it.key(), "' is not an integer"));
      }
      if (id >= c.labels.size() || !it.value().is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": id2label is not a dense map of strings"));
      }
      c.labels[id] = it.value().get<std::string>();
    }
  }
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      (j["architectures"][0] == "BertForMaskedLM" || j["architectures"][0] == "BertForTokenClassification")) {
    c.architecture = j["architectures"][0].get<std::string>();
  }
  if (j.contains("problem_type") && j["problem_type"].is_string()) {
    c.problem_type = j["problem_type"];
  } else if (c.labels.size() == 1) {
    c.problem_type = "regression";
  }
  if (auto s = c.Validate(); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  return c;
}

absl::Status BertConfig::Validate() const {
  if (vocab_size <= 0) return absl::InvalidArgumentError("vocab_size: must be > 0");
  // Bounds shared with the decoders (vocab_size 1e12 ended in an internal error).
  for (const auto& [key, v] : std::vector<std::pair<const char*, int64_t>>{
           {"vocab_size", vocab_size}, {"hidden_size", hidden_size}, {"intermediate_size", intermediate_size},
           {"num_hidden_layers", num_hidden_layers}, {"num_attention_heads", num_attention_heads},
           {"max_position_embeddings", max_position_embeddings}, {"type_vocab_size", type_vocab_size}}) {
    if (std::string why = CheckConfigSize(key, v); !why.empty()) return absl::InvalidArgumentError(why);
  }
  if (problem_type != "single_label_classification" && problem_type != "multi_label_classification" &&
      problem_type != "regression") {
    return absl::InvalidArgumentError(absl::StrCat("problem_type: '", problem_type,
                                                   "' is not single_label_classification, multi_label_classification "
                                                   "or regression"));
  }
  if (architecture != "BertForSequenceClassification" && architecture != "BertForMaskedLM" &&
      architecture != "BertForTokenClassification") {
    return absl::InvalidArgumentError(absl::StrCat(
        "architectures: '", architecture,
        "' is not BertForSequenceClassification, BertForTokenClassification or BertForMaskedLM"));
  }
  if (hidden_size <= 0) return absl::InvalidArgumentError("hidden_size: must be > 0");
  if (num_hidden_layers <= 0) return absl::InvalidArgumentError("num_hidden_layers: must be > 0");
  if (num_attention_heads <= 0 || hidden_size % num_attention_heads != 0) {
    return absl::InvalidArgumentError("num_attention_heads: must be > 0 and divide hidden_size");
  }
  if (intermediate_size <= 0) return absl::InvalidArgumentError("intermediate_size: must be > 0");
  if (max_position_embeddings <= 0) return absl::InvalidArgumentError("max_position_embeddings: must be > 0");
  if (type_vocab_size <= 0) return absl::InvalidArgumentError("type_vocab_size: must be > 0");
  if (hidden_dropout_prob < 0 || hidden_dropout_prob >= 1) {
    return absl::InvalidArgumentError("hidden_dropout_prob: must be in [0, 1)");
  }
  if (attention_probs_dropout_prob < 0 || attention_probs_dropout_prob >= 1) {
    return absl::InvalidArgumentError("attention_probs_dropout_prob: must be in [0, 1)");
  }
  if (hidden_act != "gelu") {
    return absl::InvalidArgumentError(absl::StrCat("hidden_act: '", hidden_act, "' is not supported (only gelu)"));
  }
  return absl::OkStatus();
}

std::string BertConfig::ToJson() const {
  nlohmann::json j;
  j["architectures"] = {architecture};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["pad_token_id"] = pad_token_id;
  if (train_max_length > 0) j["attune_max_length"] = train_max_length;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  if (classifier_dropout >= 0) {
    j["classifier_dropout"] = classifier_dropout;
  } else {
    j["classifier_dropout"] = nullptr;
  }
  j["layer_norm_eps"] = layer_norm_eps;
  j["initializer_range"] = initializer_range;
  j["hidden_act"] = hidden_act;
  j["position_embedding_type"] = "absolute";
  if (masked_lm()) {
    j["tie_word_embeddings"] = true;
    return j.dump(2);
  }
  if (!token_classification()) j["problem_type"] = problem_type;
  j["id2label"] = nlohmann::json::object();
  j["label2id"] = nlohmann::json::object();
  for (size_t i = 0; i < labels.size(); ++i) {
    j["id2label"][std::to_string(i)] = labels[i];
    j["label2id"][labels[i]] = i;
  }
  return j.dump(2);
}

absl::StatusOr<Method> ParseMethod(const std::string& name) {
  if (name == "full") return Method::kFull;
  if (name == "head") return Method::kHead;
  if (name == "lora") return Method::kLora;
  if (name == "adapter") return Method::kAdapter;
  return absl::InvalidArgumentError(absl::StrCat("method.type: '", name, "' is not one of full, head, lora, adapter"));
}

std::string MethodName(Method m) {
  switch (m) {
    case Method::kFull: return "full";
    case Method::kHead: return "head";
    case Method::kLora: return "lora";
    case Method::kAdapter: return "adapter";
  }
  return "?";
}

}  // namespace attune::worker::model
