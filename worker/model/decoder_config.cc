#include "worker/model/decoder_config.h"

#include <cmath>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_fields.h"

namespace attune::worker::model {
namespace {

const std::map<std::string, std::string>& Families() {
  static const auto* m = new std::map<std::string, std::string>{{"llama", "LlamaForCausalLM"},
                                                                {"mistral", "MistralForCausalLM"},
                                                                {"qwen2", "Qwen2ForCausalLM"},
                                                                {"qwen3", "Qwen3ForCausalLM"}};
  return *m;
}

}  // namespace

bool DecoderConfig::IsDecoderType(const std::string& model_type) { return Families().count(model_type) > 0; }

absl::StatusOr<std::string> ModelTypeOf(const std::string& text, const std::string& source) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  if (!j.contains("model_type") || j["model_type"].is_null()) return std::string("bert");
  if (!j["model_type"].is_string()) return absl::InvalidArgumentError(absl::StrCat(source, ": model_type must be a string"));
  return j["model_type"].get<std::string>();
}

absl::StatusOr<DecoderConfig> DecoderConfig::FromJson(const std::string& text, const std::string& source) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  auto bad = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, " ", why));
  };
  DecoderConfig c;
  c.source_json = text;
  if (!j.contains("model_type") || !j["model_type"].is_string()) return bad("model_type", "must be a string");
  c.model_type = j["model_type"].get<std::string>();
  auto family = Families().find(c.model_type);
  if (family == Families().end()) {
    std::vector<std::string> known;
    for (const auto& [k, v] : Families()) known.push_back(k);
    return bad("model_type", absl::StrCat("'", c.model_type, "' is not a decoder this build runs (",
                                          absl::StrJoin(known, ", "), ")"));
  }
  c.architecture = family->second;
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string()) return bad("architectures", "must be a list of names");
    if (a[0].get<std::string>() != c.architecture) {
      return bad("architectures", absl::StrCat("'", a[0].get<std::string>(), "' is not supported for model_type ",
                                               c.model_type, " (only ", c.architecture, ", the causal LM)"));
    }
  }
  // Integers: whole JSON numbers only ("8", 1.5 and 1e300 are refused).
  auto get_int = [&](const char* key, int64_t* v, bool required) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) {
      return required ? bad(key, "is required") : absl::OkStatus();
    }
    if (!common::JsonToInt(j[key], v)) return bad(key, "must be a whole number");
    return absl::OkStatus();
  };
  auto get_double = [&](const char* key, double* v) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number() || !std::isfinite(j[key].get<double>())) return bad(key, "must be a finite number");
    *v = j[key].get<double>();
    return absl::OkStatus();
  };
  auto get_bool = [&](const char* key, bool* v) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_boolean()) return bad(key, "must be true or false");
    *v = j[key].get<bool>();
    return absl::OkStatus();
  };
  for (auto [key, v] : std::vector<std::pair<const char*, int64_t*>>{
           {"vocab_size", &c.vocab_size}, {"hidden_size", &c.hidden_size}, {"intermediate_size", &c.intermediate_size},
           {"num_hidden_layers", &c.num_hidden_layers}, {"num_attention_heads", &c.num_attention_heads},
           {"max_position_embeddings", &c.max_position_embeddings}}) {
    if (auto s = get_int(key, v, true); !s.ok()) return s;
  }
  c.num_key_value_heads = c.num_attention_heads;
  for (auto [key, v] : std::vector<std::pair<const char*, int64_t*>>{{"num_key_value_heads", &c.num_key_value_heads},
                                                                     {"head_dim", &c.head_dim},
                                                                     {"bos_token_id", &c.bos_token_id},
                                                                     {"attune_max_length", &c.train_max_length}}) {
    if (auto s = get_int(key, v, false); !s.ok()) return s;
  }
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& e = j["eos_token_id"];
    for (const auto& v : e.is_array() ? e : nlohmann::json::array({e})) {
      int64_t id = 0;
      if (!common::JsonToInt(v, &id)) return bad("eos_token_id", "must be a whole number or a list of them");
      c.eos_token_ids.push_back(id);
    }
  }
  for (auto [key, v] : std::vector<std::pair<const char*, double*>>{{"rms_norm_eps", &c.rms_norm_eps},
                                                                    {"rope_theta", &c.rope_theta},
                                                                    {"initializer_range", &c.initializer_range}}) {
    if (auto s = get_double(key, v); !s.ok()) return s;
  }
  if (auto s = get_bool("tie_word_embeddings", &c.tie_word_embeddings); !s.ok()) return s;
  if (c.model_type == "llama" || c.model_type == "qwen3") {
    if (auto s = get_bool("attention_bias", &c.attention_bias); !s.ok()) return s;
  }
  if (c.model_type == "llama") {
    if (auto s = get_bool("mlp_bias", &c.mlp_bias); !s.ok()) return s;
  }
  c.qkv_bias = c.model_type == "qwen2";
  c.qk_norm = c.model_type == "qwen3";
  if (j.contains("hidden_act") && !j["hidden_act"].is_null() && j["hidden_act"] != "silu") {
    return bad("hidden_act", absl::StrCat(j["hidden_act"].dump(), " is not supported (only silu, SwiGLU)"));
  }
  double attention_dropout = 0;
  if (auto s = get_double("attention_dropout", &attention_dropout); !s.ok()) return s;
  if (attention_dropout != 0) return bad("attention_dropout", "other than 0 is not supported");
  if (c.model_type == "mistral") {
    if (auto s = get_int("sliding_window", &c.sliding_window, false); !s.ok()) return s;
  } else if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    bool sliding = false;
    if (auto s = get_bool("use_sliding_window", &sliding); !s.ok()) return s;
    if (sliding) return bad("use_sliding_window", "true is not supported (Qwen's per-layer sliding window)");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const auto& rs = j["rope_scaling"];
    if (!rs.is_object()) return bad("rope_scaling", "must be an object");
    const char* type_key = rs.contains("rope_type") ? "rope_type" : "type";
    if (!rs.contains(type_key) || !rs[type_key].is_string()) return bad("rope_scaling", "has no rope_type");
    const std::string type = rs[type_key].get<std::string>();
    if (type == "llama3") {
      c.rope_llama3 = true;
      auto num = [&](const char* key, double* v) -> absl::Status {
        if (!rs.contains(key) || !rs[key].is_number() || !std::isfinite(rs[key].get<double>())) {
          return bad(absl::StrCat("rope_scaling.", key), "must be a finite number");
        }
        *v = rs[key].get<double>();
        return absl::OkStatus();
      };
      for (auto [key, v] : std::vector<std::pair<const char*, double*>>{{"factor", &c.rope_factor},
                                                                        {"low_freq_factor", &c.rope_low_freq_factor},
                                                                        {"high_freq_factor", &c.rope_high_freq_factor}}) {
        if (auto s = num(key, v); !s.ok()) return s;
      }
      if (!rs.contains("original_max_position_embeddings") ||
          !common::JsonToInt(rs["original_max_position_embeddings"], &c.rope_original_max_positions)) {
        return bad("rope_scaling.original_max_position_embeddings", "must be a whole number");
      }
    } else if (type != "default") {
      return bad("rope_scaling", absl::StrCat("type '", type, "' is not supported (only llama3)"));
    }
  }
  if (auto s = c.Validate(source); !s.ok()) return s;
  return c;
}

std::string CheckConfigSize(const std::string& key, int64_t value) {
  static const std::map<std::string, int64_t> kBounds = {
      {"vocab_size", 1 << 22},        {"hidden_size", 1 << 16},      {"intermediate_size", 1 << 18},
      {"num_hidden_layers", 1024},    {"num_attention_heads", 1024}, {"num_key_value_heads", 1024},
      {"head_dim", 1024},             {"max_position_embeddings", 1 << 24}, {"type_vocab_size", 1024}};
  const auto it = kBounds.find(key);
  const int64_t hi = it == kBounds.end() ? INT64_MAX : it->second;
  if (value >= 1 && value <= hi) return "";
  return absl::StrCat(key, " must be in [1, ", hi, "], not ", value);
}

absl::Status DecoderConfig::Validate(const std::string& source) const {
  auto bad = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, " ", why));
  };
  for (const auto& [key, v] : std::vector<std::pair<const char*, int64_t>>{
           {"vocab_size", vocab_size}, {"hidden_size", hidden_size}, {"intermediate_size", intermediate_size},
           {"num_hidden_layers", num_hidden_layers}, {"num_attention_heads", num_attention_heads},
           {"num_key_value_heads", num_key_value_heads}, {"head_dim", head_dim},
           {"max_position_embeddings", max_position_embeddings}}) {
    if (std::string why = CheckConfigSize(key, v); !why.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", why));
    }
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_key_value_heads", absl::StrCat(num_key_value_heads, " does not divide num_attention_heads ",
                                                   num_attention_heads));
  }
  if (head_dim % 2 != 0) return bad("head_dim", absl::StrCat(head_dim, " must be even (rotary embeddings)"));
  if (!(rms_norm_eps > 0)) return bad("rms_norm_eps", "must be > 0");
  if (!(rope_theta > 1)) return bad("rope_theta", "must be > 1");
  if (rope_llama3 && (!(rope_factor >= 1) || !(rope_high_freq_factor > rope_low_freq_factor) ||
                      !(rope_low_freq_factor > 0) || rope_original_max_positions < 1)) {
    return bad("rope_scaling", "llama3 needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
                               "original_max_position_embeddings >= 1");
  }
  if (sliding_window < 0) return bad("sliding_window", "must be >= 1 or null");
  if (bos_token_id >= vocab_size) return bad("bos_token_id", "is outside the vocabulary");
  for (int64_t e : eos_token_ids) {
    if (e < 0 || e >= vocab_size) return bad("eos_token_id", absl::StrCat(e, " is outside the vocabulary"));
  }
  return absl::OkStatus();
}

std::string DecoderConfig::ToJson() const {
  auto j = nlohmann::json::parse(source_json, nullptr, false);
  if (!j.is_object()) j = nlohmann::json::object();
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float32";  // the weights Attune writes
  if (train_max_length > 0) j["attune_max_length"] = train_max_length;
  return j.dump(2);
}

}  // namespace attune::worker::model
