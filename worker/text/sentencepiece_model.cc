#include "worker/text/sentencepiece_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/text.h"

namespace attune::worker::text {
namespace {

using Json = nlohmann::ordered_json;

// sentencepiece_model.proto: ModelProto.SentencePiece.Type and TrainerSpec.ModelType.
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
enum ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

// The limits: Gemma's 256,000-piece model is 4.2 MB and SentencePiece's
// longest pieces are 16 characters; the merges cost the sum over pieces of
// their length squared.
constexpr int64_t kMaxPieces = int64_t{1} << 22;
constexpr size_t kMaxPieceBytes = 256;
// Llama 2's 32,000 pieces make 58,980 merges; a model whose pieces split
// every way would make a tokenizer.json of gigabytes.
constexpr size_t kMaxMerges = size_t{2} << 20;

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

// The fields of ModelProto (sentencepiece_model.proto) that the conversion
// needs, with the schema's defaults.
struct Spec {
  std::vector<Piece> pieces;
  int model_type = kUnigram;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2;
  bool byte_fallback = false, treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  bool has_charsmap = false, has_rules = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
};

class Wire {
 public:
  explicit Wire(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}
  bool done() const { return p_ == end_; }
  // The next field: its number and wire type, its value (varint) or bytes.
  bool Next(uint64_t* number, int* type, uint64_t* value, std::string_view* bytes) {
    uint64_t tag = 0;
    if (!Varint(&tag)) return false;
    *number = tag >> 3;
    *type = static_cast<int>(tag & 7);
    switch (*type) {
      case 0: return Varint(value);
      case 1: return Skip(8);
      case 5: {
        if (end_ - p_ < 4) return false;
        uint32_t bits = 0;
        std::memcpy(&bits, p_, 4);  // little-endian, as x86 and ARM Linux are
        *value = bits;
        p_ += 4;
        return true;
      }
      case 2: {
        uint64_t n = 0;
        if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
        *bytes = std::string_view(p_, static_cast<size_t>(n));
        p_ += n;
        return true;
      }
      default: return false;  // groups are not in this schema
    }
  }

 private:
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const auto b = static_cast<uint8_t>(*p_++);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool Skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }
  const char* p_;
  const char* end_;
};

// Reads the fields; false when the bytes are not that message.
bool ParseSpec(std::string_view model, Spec* spec) {
  Wire w(model);
  uint64_t number = 0, value = 0;
  int type = 0;
  std::string_view bytes;
  while (!w.done()) {
    if (!w.Next(&number, &type, &value, &bytes)) return false;
    if (type != 2 || number < 1 || number > 3) continue;
    Wire inner(bytes);
    if (number == 1) {
      if (static_cast<int64_t>(spec->pieces.size()) >= kMaxPieces) return false;
      spec->pieces.emplace_back();
    }
    while (!inner.done()) {
      uint64_t n = 0, v = 0;
      int t = 0;
      std::string_view b;
      if (!inner.Next(&n, &t, &v, &b)) return false;
      if (number == 1) {
        Piece& p = spec->pieces.back();
        if (n == 1 && t == 2) p.text = std::string(b);
        if (n == 2 && t == 5) {
          const auto bits = static_cast<uint32_t>(v);
          std::memcpy(&p.score, &bits, 4);
        }
        if (n == 3 && t == 0) p.type = static_cast<int>(v);
      }
      if (number == 2 && t == 0) {
        const auto i = static_cast<int64_t>(static_cast<int32_t>(v));  // int32 fields: -1 arrives sign-extended
        if (n == 3) spec->model_type = static_cast<int>(v);
        if (n == 24) spec->treat_whitespace_as_suffix = v != 0;
        if (n == 35) spec->byte_fallback = v != 0;
        if (n == 40) spec->unk_id = i;
        if (n == 41) spec->bos_id = i;
        if (n == 42) spec->eos_id = i;
      }
      if (number == 3) {
        if (n == 1 && t == 2) spec->normalizer_name = std::string(b);
        if (n == 2 && t == 2) spec->has_charsmap = !b.empty();
        if (n == 6 && t == 2) spec->has_rules = !b.empty();
        if (n == 3 && t == 0) spec->add_dummy_prefix = v != 0;
        if (n == 4 && t == 0) spec->remove_extra_whitespaces = v != 0;
      }
    }
  }
  return true;
}

const char* ModelTypeName(int t) {
  switch (t) {
    case kUnigram: return "UNIGRAM";
    case kBpe: return "BPE";
    case kWord: return "WORD";
    case kChar: return "CHAR";
    default: return "unknown";
  }
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string TokenText(const Json& config, const char* key, const std::string& fallback) {
  if (!config.is_object() || !config.contains(key)) return fallback;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return fallback;
}

bool Flag(const Json& config, const char* key, bool fallback) {
  return config.is_object() && config.contains(key) && config[key].is_boolean() ? config[key].get<bool>() : fallback;
}

}  // namespace

absl::StatusOr<ConvertedSentencePiece> ConvertSentencePiece(const std::string& model,
                                                            const std::string& tokenizer_config_json,
                                                            const std::string& source) {
  auto bad = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", why));
  };
  Spec spec;
  if (!ParseSpec(model, &spec) || spec.pieces.empty()) {
    return bad("(file)", absl::StrCat("not a SentencePiece model (a ModelProto with at most ", kMaxPieces, " pieces)"));
  }
  const auto n = static_cast<int64_t>(spec.pieces.size());
  if (spec.model_type != kBpe) {
    return bad("trainer_spec.model_type",
               absl::StrCat(ModelTypeName(spec.model_type), " is not supported; BPE models (Llama 2's, Mistral's) are"));
  }
  if (!(spec.normalizer_name.empty() || spec.normalizer_name == "identity") || spec.has_charsmap || spec.has_rules) {
    return bad("normalizer_spec.name",
               absl::StrCat("'", spec.normalizer_name,
                            "' is not supported: Hugging Face's conversion drops its rules, so the ids would not be "
                            "SentencePiece's; identity is"));
  }
  if (spec.remove_extra_whitespaces) {
    return bad("normalizer_spec.remove_extra_whitespaces",
               "true is not supported: SentencePiece collapses runs of spaces and Hugging Face's conversion does not, "
               "so the two disagree");
  }
  if (spec.treat_whitespace_as_suffix) return bad("trainer_spec.treat_whitespace_as_suffix", "true is not supported");
  if (!spec.add_dummy_prefix) {
    return bad("normalizer_spec.add_dummy_prefix",
               "false is not supported: Hugging Face's Llama conversion prefixes '\xE2\x96\x81' whatever it says, so the "
               "ids would not be SentencePiece's");
  }
  for (auto [field, id] : {std::pair<const char*, int64_t>{"trainer_spec.unk_id", spec.unk_id},
                           {"trainer_spec.bos_id", spec.bos_id},
                           {"trainer_spec.eos_id", spec.eos_id}}) {
    if (id < -1 || id >= n) return bad(field, absl::StrCat(id, " is not a piece's id (the model has ", n, ")"));
  }
  if (spec.unk_id < 0 || spec.pieces[static_cast<size_t>(spec.unk_id)].type != kUnknown) {
    return bad("trainer_spec.unk_id", "the model has no unknown piece there");
  }

  Json config = tokenizer_config_json.empty() ? Json::object() : Json::parse(tokenizer_config_json, nullptr, false);
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the tokenizer_config.json beside it is not a JSON object"));
  }
  // Other tokenizer classes (Gemma's, T5's...) are converted by other rules.
  if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string()) {
    const std::string cls = config["tokenizer_class"].get<std::string>();
    if (cls != "LlamaTokenizer" && cls != "LlamaTokenizerFast") {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tokenizer_config.json's tokenizer_class '", cls,
          "' is not supported with a tokenizer.model; LlamaTokenizer (Llama 2, Mistral) is"));
    }
  }
  const bool legacy = Flag(config, "legacy", true);
  const bool prefix_space = Flag(config, "add_prefix_space", true);
  const bool add_bos = Flag(config, "add_bos_token", true);
  const bool add_eos = Flag(config, "add_eos_token", false);

  // The vocabulary, and each piece's score (LlamaConverter scores the first
  // three pieces 0).
  std::unordered_map<std::string_view, int64_t> id_of;
  nlohmann::json vocab = nlohmann::json::object();  // a map: ordered_json would insert in quadratic time
  for (int64_t i = 0; i < n; ++i) {
    const Piece& p = spec.pieces[static_cast<size_t>(i)];
    const auto where = absl::StrCat("pieces[", i, "]");
    if (p.text.empty() || p.text.size() > kMaxPieceBytes || !common::IsValidUtf8(p.text)) {
      return bad(where, absl::StrCat("a piece is 1 to ", kMaxPieceBytes, " bytes of UTF-8"));
    }
    if (p.type < kNormal || p.type > kByte) return bad(where, absl::StrCat("type ", p.type, " is not a piece type"));
    if (!std::isfinite(p.score)) return bad(where, "its score is not a finite number");
    if (!id_of.emplace(p.text, i).second) return bad(where, absl::StrCat("'", p.text, "' appears twice"));
    vocab[p.text] = i;
  }
  auto score = [&](int64_t i) { return i < 3 ? 0.0f : spec.pieces[static_cast<size_t>(i)].score; };

  // generate_merges: every split of a piece into two pieces.
  struct Merge {
    int64_t left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (int64_t i = 0; i < n; ++i) {
    const std::string_view piece = spec.pieces[static_cast<size_t>(i)].text;
    std::vector<Merge> local;
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      if ((static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) continue;  // inside a character
      auto l = id_of.find(piece.substr(0, cut)), r = id_of.find(piece.substr(cut));
      if (l == id_of.end() || r == id_of.end()) continue;
      local.push_back({l->second, r->second, score(i)});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return std::make_pair(a.left, a.right) < std::make_pair(b.left, b.right);
    });
    merges.insert(merges.end(), local.begin(), local.end());
    if (merges.size() > kMaxMerges) {
      return bad("pieces", absl::StrCat("they split into more than ", kMaxMerges,
                                        " merges (Llama 2's 32,000 pieces make 58,980)"));
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
  auto text = [&](int64_t id) -> const std::string& { return spec.pieces[static_cast<size_t>(id)].text; };
  Json merge_list = Json::array();
  for (const Merge& m : merges) merge_list.push_back({text(m.left), text(m.right)});

  Json added = Json::array();
  for (int64_t i = 0; i < n; ++i) {
    const int t = spec.pieces[static_cast<size_t>(i)].type;
    if (t != kControl && t != kUnknown && t != kUserDefined) continue;
    added.push_back({{"id", i},
                     {"content", text(i)},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", t != kUserDefined}});
  }

  const std::string meta = "\xE2\x96\x81";  // U+2581
  Json normalizer = nullptr, pre_tokenizer = nullptr;
  if (legacy) {
    Json seq = Json::array();
    if (prefix_space) seq.push_back({{"type", "Prepend"}, {"prepend", meta}});
    seq.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}});
    normalizer = {{"type", "Sequence"}, {"normalizers", seq}};
  } else {
    pre_tokenizer = {{"type", "Metaspace"},
                     {"replacement", meta},
                     {"prepend_scheme", prefix_space ? "first" : "never"},
                     {"split", false}};
  }
  Json decoders = Json::array({Json{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                               Json{{"type", "ByteFallback"}}, Json{{"type", "Fuse"}}});
  if (prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

  // The post-processor as LlamaTokenizerFast.update_post_processor builds it.
  Json single = Json::array(), pair = Json::array(), specials = Json::object();
  auto special = [&](const char* key, int64_t fallback_id, int type_id, Json* seq) -> absl::Status {
    const std::string tok = TokenText(config, key, fallback_id >= 0 ? text(fallback_id) : std::string());
    auto it = id_of.find(tok);
    if (tok.empty() || it == id_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, " '", tok,
                                                     "' (tokenizer_config.json, or the model's own) is not a piece of "
                                                     "the model, so it cannot be added"));
    }
    seq->push_back({{"SpecialToken", {{"id", tok}, {"type_id", type_id}}}});
    specials[tok] = {{"id", tok}, {"ids", {it->second}}, {"tokens", {tok}}};
    return absl::OkStatus();
  };
  for (int type_id = 0; type_id < 2; ++type_id) {
    Json* seq = type_id == 0 ? &single : &pair;
    if (add_bos) {
      if (auto s = special("bos_token", spec.bos_id, type_id, seq); !s.ok()) return s;
    }
    seq->push_back({{"Sequence", {{"id", type_id == 0 ? "A" : "B"}, {"type_id", type_id}}}});
    if (add_eos) {
      if (auto s = special("eos_token", spec.eos_id, type_id, seq); !s.ok()) return s;
    }
  }
  Json full_pair = single;
  full_pair.insert(full_pair.end(), pair.begin(), pair.end());

  Json model_json = {{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", text(spec.unk_id)},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", true},
                     {"byte_fallback", true},
                     {"ignore_merges", false},
                     {"vocab", std::move(vocab)},
                     {"merges", std::move(merge_list)}};
  Json out = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", std::move(added)},
              {"normalizer", std::move(normalizer)},
              {"pre_tokenizer", std::move(pre_tokenizer)},
              {"post_processor",
               {{"type", "TemplateProcessing"}, {"single", single}, {"pair", full_pair}, {"special_tokens", specials}}},
              {"decoder", {{"type", "Sequence"}, {"decoders", std::move(decoders)}}},
              {"model", std::move(model_json)}};
  ConvertedSentencePiece converted;
  converted.tokenizer_json = out.dump(2);
  converted.tokenizer_config_json = tokenizer_config_json;
  // LlamaTokenizer's defaults for what the config does not name: the
  // model's own bos, eos and unk pieces.
  bool filled = false;
  auto fill = [&](const char* key, int64_t id) {
    if (id < 0 || (config.contains(key) && !config[key].is_null())) return;
    config[key] = text(id);
    filled = true;
  };
  fill("bos_token", spec.bos_id);
  fill("eos_token", spec.eos_id);
  fill("unk_token", spec.unk_id);
  if (tokenizer_config_json.empty()) {
    config["add_bos_token"] = true;
    config["add_eos_token"] = false;
    config["legacy"] = true;
    config["tokenizer_class"] = "LlamaTokenizer";
    filled = true;
  }
  if (filled) converted.tokenizer_config_json = config.dump(2);
  return converted;
}

}  // namespace attune::worker::text
