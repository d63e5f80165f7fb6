#include "worker/text/bpe_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#include <unicode/utext.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <map>
#include <queue>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "worker/text/utf8.h"
#include "common/files.h"
#include "common/json_fields.h"
#include "common/status_macros.h"
#include "worker/text/sentencepiece_model.h"

namespace attune::worker::text {

using Json = nlohmann::json;

namespace {

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the
// others for code points from 256 on.
struct ByteTable {
  std::string to_char[256];           // byte -> UTF-8 of its stand-in
  std::map<UChar32, uint8_t> to_byte;  // stand-in -> byte
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const UChar32 c = printable ? b : 256 + n++;
      to_byte[c] = static_cast<uint8_t>(b);
      std::string utf8;
      icu::UnicodeString(c).toUTF8String(utf8);
      to_char[b] = utf8;
    }
  }
};
const ByteTable& Bytes() {
  static const auto* t = new ByteTable();
  return *t;
}

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// An Oniguruma pattern (as tokenizer.json holds it) in ICU's syntax: \s and
// \S mean Unicode White_Space there (with U+000B and U+0085), [\t\n\f\r\p{Z}]
// in ICU.
std::string ToIcuPattern(const std::string& p) {
  std::string out;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size()) {
      if (p[i + 1] == 's') {
        out += "\\p{White_Space}";
      } else if (p[i + 1] == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += p.substr(i, 2);
      }
      ++i;
      continue;
    }
    out += p[i];
  }
  return out;
}


// `bytes` as UTF-8 with each invalid sequence replaced by U+FFFD, as
// Rust's from_utf8_lossy does.
std::string Lossy(const std::string& bytes) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(bytes);  // ICU substitutes U+FFFD
  std::string out;
  u.toUTF8String(out);
  return out;
}

}  // namespace

// The parsed pipeline.
struct BpeTokenizer::Impl {
  struct Normalizer {
    std::string type;  // NFC NFKC NFD NFKD Prepend Replace Lowercase Strip
    std::string a, b;  // Prepend: a; Replace: a -> b
    bool left = false, right = false;
  };
  struct PreTokenizer {
    std::string type;  // Split ByteLevel Metaspace
    std::shared_ptr<icu::RegexPattern> regex;
    bool removed = false;           // Split: behavior Removed (else Isolated)
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement = "\xE2\x96\x81";  // Metaspace
    std::string prepend_scheme = "always";
    bool split = true;
  };
  struct AddedToken {
    std::string content;
    int64_t id = 0;
    bool special = false, lstrip = false, rstrip = false, single_word = false;
  };
  struct TemplateItem {
    bool special = false;
    std::string id;  // the special token's key, or A / B
    int64_t type_id = 0;
  };
  struct Decoder {
    std::string type;  // ByteLevel Replace ByteFallback Fuse Strip Metaspace
    std::string a, b;
    int64_t start = 0, stop = 0;
    std::string prepend_scheme = "always";
  };

  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  // The model.
  std::unordered_map<std::string, int64_t> vocab;
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges;  // pair -> (rank, merged id)
  bool byte_fallback = false, ignore_merges = false, fuse_unk = false;
  int64_t unk = -1;
  std::vector<AddedToken> added;  // longest first
  std::set<int64_t> special_ids;
  // The post-processor.
  std::vector<TemplateItem> single, pair;
  std::map<std::string, std::vector<int64_t>> template_specials;
  std::vector<Decoder> decoders;
  // tokenizer_config.json's clean_up_tokenization_spaces (true when absent,
  // as transformers.js decides): " ." -> "." and the like after decoding.
  bool clean_up_spaces = true;
};

BpeTokenizer::BpeTokenizer() = default;
BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromTokenizerJson(const std::string& path) {
  auto text = common::ReadFile(path, int64_t{1} << 30);
  if (!text.ok()) return text.status();
  const std::string config_path = (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  std::string config;
  if (std::error_code ec; std::filesystem::exists(config_path, ec)) {
    auto c = common::ReadFile(config_path, int64_t{64} << 20);
    if (!c.ok()) return c.status();
    config = *c;
  }
  return FromJson(*text, config, path);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromDirectory(const std::string& dir) {
  std::error_code ec;
  const std::string model_path = dir + "/tokenizer.model";
  if (!std::filesystem::exists(model_path, ec)) return FromTokenizerJson(dir + "/tokenizer.json");
  ATTUNE_ASSIGN_OR_RETURN(std::string model, common::ReadFile(model_path, int64_t{16} << 20));
  if (std::filesystem::exists(dir + "/tokenizer.json", ec)) {
    // Both (the usual upload): tokenizer.json decides, and the export keeps
    // tokenizer.model beside it as the directory had it.
    ATTUNE_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> t, FromTokenizerJson(dir + "/tokenizer.json"));
    t->sentencepiece_model_ = std::move(model);
    return t;
  }
  std::string config;
  if (std::filesystem::exists(dir + "/tokenizer_config.json", ec)) {
    ATTUNE_ASSIGN_OR_RETURN(config, common::ReadFile(dir + "/tokenizer_config.json", int64_t{64} << 20));
  }
  ATTUNE_ASSIGN_OR_RETURN(ConvertedSentencePiece converted, ConvertSentencePiece(model, config, model_path));
  ATTUNE_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> t,
                          FromJson(converted.tokenizer_json, converted.tokenizer_config_json, model_path));
  t->sentencepiece_model_ = std::move(model);
  return t;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(const std::string& tokenizer_json,
                                                                      const std::string& config_json,
                                                                      const std::string& source) {
  auto bad = [&](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": ", why));
  };
  Json j = Json::parse(tokenizer_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("(file)", "not a JSON object");
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  t->tokenizer_json_ = tokenizer_json;
  t->tokenizer_config_json_ = config_json;
  auto type_of = [](const Json& o) { return o.is_object() && o.contains("type") && o["type"].is_string() ? o["type"].get<std::string>() : std::string(); };
  auto str = [](const Json& o, const char* k, const std::string& def) {
    return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : def;
  };
  auto flag = [](const Json& o, const char* k, bool def) {
    return o.contains(k) && o[k].is_boolean() ? o[k].get<bool>() : def;
  };

  // The model.
  if (!j.contains("model") || !j["model"].is_object()) return bad("model", "missing");
  const Json& m = j["model"];
  if (type_of(m) != "BPE") return bad("model.type", absl::StrCat("'", type_of(m), "' is not BPE"));
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!str(m, k, "").empty()) return bad(absl::StrCat("model.", k), "a non-empty value is not supported");
  }
  if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0)) {
    return bad("model.dropout", "BPE dropout is not supported");
  }
  if (!m.contains("vocab") || !m["vocab"].is_object() || m["vocab"].empty()) return bad("model.vocab", "not a token -> id map");
  int64_t size = 0;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    int64_t id = 0;
    if (!common::JsonToInt(it.value(), &id) || id < 0 || id >= (int64_t{1} << 24)) {
      return bad("model.vocab", absl::StrCat("the id of '", it.key(), "' is not a whole number in [0, 2^24)"));
    }
    im.vocab[it.key()] = id;
    size = std::max(size, id + 1);
  }
  im.byte_fallback = flag(m, "byte_fallback", false);
  im.ignore_merges = flag(m, "ignore_merges", false);
  im.fuse_unk = flag(m, "fuse_unk", false);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto u = im.vocab.find(m["unk_token"].get<std::string>());
    if (u == im.vocab.end()) return bad("model.unk_token", "is not in the vocabulary");
    im.unk = u->second;
  }
  if (!m.contains("merges") || !m["merges"].is_array()) return bad("model.merges", "not a list");
  int64_t rank = 0;
  for (const Json& mg : m["merges"]) {
    std::string a, b;
    if (mg.is_string()) {
      const std::string s = mg.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return bad("model.merges", absl::StrCat("'", s, "' is not two tokens separated by one space"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
      a = mg[0].get<std::string>();
      b = mg[1].get<std::string>();
    } else {
      return bad("model.merges", absl::StrCat("entry ", rank, " is not a pair of tokens"));
    }
    auto ia = im.vocab.find(a), ib = im.vocab.find(b), iab = im.vocab.find(a + b);
    if (ia == im.vocab.end() || ib == im.vocab.end() || iab == im.vocab.end()) {
      return bad("model.merges", absl::StrCat("merge '", a, " ", b, "' has a token outside the vocabulary"));
    }
    im.merges.emplace(std::make_pair(ia->second, ib->second), std::make_pair(rank, iab->second));
    ++rank;
  }

  // Added tokens.
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) return bad("added_tokens", "not a list");
    for (const Json& a : j["added_tokens"]) {
      Impl::AddedToken tok;
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id") ||
          !common::JsonToInt(a["id"], &tok.id) || tok.id < 0 || tok.id >= (int64_t{1} << 24)) {
        return bad("added_tokens", "each needs a content string and a whole-number id");
      }
      tok.content = a["content"].get<std::string>();
      if (tok.content.empty()) return bad("added_tokens", "an empty content");
      tok.special = flag(a, "special", false);
      tok.lstrip = flag(a, "lstrip", false);
      tok.rstrip = flag(a, "rstrip", false);
      tok.single_word = flag(a, "single_word", false);
      im.vocab[tok.content] = tok.id;
      size = std::max(size, tok.id + 1);
      if (tok.special) im.special_ids.insert(tok.id);
      im.added.push_back(tok);
    }
    std::stable_sort(im.added.begin(), im.added.end(),
                     [](const auto& x, const auto& y) { return x.content.size() > y.content.size(); });
  }
  t->vocab_.assign(static_cast<size_t>(size), "");
  for (const auto& [tok, id] : im.vocab) t->vocab_[static_cast<size_t>(id)] = tok;

  // The normalizer.
  std::function<absl::Status(const Json&, const std::string&)> normalizer = [&](const Json& n, const std::string& key) -> absl::Status {
    if (n.is_null()) return absl::OkStatus();
    const std::string type = type_of(n);
    Impl::Normalizer out;
    out.type = type;
    if (type == "Sequence") {
      if (!n.contains("normalizers") || !n["normalizers"].is_array()) return bad(key, "Sequence without normalizers");
      for (size_t i = 0; i < n["normalizers"].size(); ++i) {
        if (auto s = normalizer(n["normalizers"][i], absl::StrCat(key, ".normalizers[", i, "]")); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD" || type == "Lowercase") {
    } else if (type == "Prepend") {
      out.a = str(n, "prepend", "");
    } else if (type == "Replace") {
      if (!n.contains("pattern") || !n["pattern"].is_object() || !n["pattern"].contains("String") ||
          !n["pattern"]["String"].is_string()) {
        return bad(key, "Replace supports a String pattern only");
      }
      out.a = n["pattern"]["String"].get<std::string>();
      out.b = str(n, "content", "");
      if (out.a.empty()) return bad(key, "Replace of an empty string");
    } else if (type == "Strip") {
      out.left = flag(n, "left", true);
      out.right = flag(n, "right", true);
    } else {
      return bad(key, absl::StrCat("normalizer type '", type, "' is not supported"));
    }
    im.normalizers.push_back(out);
    return absl::OkStatus();
  };
  if (j.contains("normalizer")) {
    if (auto s = normalizer(j["normalizer"], "normalizer"); !s.ok()) return s;
  }

  // The pre-tokenizer.
  std::function<absl::Status(const Json&, const std::string&)> pre = [&](const Json& p, const std::string& key) -> absl::Status {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = type_of(p);
    Impl::PreTokenizer out;
    out.type = type;
    auto compile = [&](const std::string& pattern) -> absl::Status {
      UErrorCode err = U_ZERO_ERROR;
      UParseError pe;
      out.regex.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(ToIcuPattern(pattern)), 0, pe, err));
      if (U_FAILURE(err)) {
        return bad(key, absl::StrCat("the regex '", pattern, "' does not compile (", u_errorName(err), " at offset ",
                                     pe.offset, ")"));
      }
      return absl::OkStatus();
    };
    if (type == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array()) return bad(key, "Sequence without pretokenizers");
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i) {
        if (auto s = pre(p["pretokenizers"][i], absl::StrCat(key, ".pretokenizers[", i, "]")); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type == "Split") {
      if (!p.contains("pattern") || !p["pattern"].is_object()) return bad(key, "Split without a pattern");
      const Json& pat = p["pattern"];
      std::string regex;
      if (pat.contains("Regex") && pat["Regex"].is_string()) {
        regex = pat["Regex"].get<std::string>();
      } else if (pat.contains("String") && pat["String"].is_string()) {
        // A literal: every character quoted.
        icu::UnicodeString lit = icu::UnicodeString::fromUTF8(pat["String"].get<std::string>());
        std::string quoted;
        icu::UnicodeString("\\Q").append(lit).append(icu::UnicodeString("\\E")).toUTF8String(quoted);
        regex = quoted;
      } else {
        return bad(key, "Split's pattern is neither Regex nor String");
      }
      const std::string behavior = str(p, "behavior", "Isolated");
      if (behavior != "Isolated" && behavior != "Removed") {
        return bad(key, absl::StrCat("Split behavior '", behavior, "' is not supported (Isolated, Removed)"));
      }
      out.removed = behavior == "Removed";
      if (flag(p, "invert", false)) return bad(key, "Split with invert is not supported");
      if (auto s = compile(regex); !s.ok()) return s;
    } else if (type == "ByteLevel") {
      out.add_prefix_space = flag(p, "add_prefix_space", false);
      if (flag(p, "use_regex", true)) {
        if (auto s = compile(kGpt2Pattern); !s.ok()) return s;
      }
    } else if (type == "Metaspace") {
      out.replacement = str(p, "replacement", "\xE2\x96\x81");
      out.prepend_scheme = str(p, "prepend_scheme", flag(p, "add_prefix_space", true) ? "always" : "never");
      if (out.prepend_scheme != "always" && out.prepend_scheme != "first" && out.prepend_scheme != "never") {
        return bad(key, absl::StrCat("Metaspace prepend_scheme '", out.prepend_scheme, "' is not supported"));
      }
      out.split = flag(p, "split", true);
    } else {
      return bad(key, absl::StrCat("pre-tokenizer type '", type, "' is not supported"));
    }
    im.pre_tokenizers.push_back(std::move(out));
    return absl::OkStatus();
  };
  if (j.contains("pre_tokenizer")) {
    if (auto s = pre(j["pre_tokenizer"], "pre_tokenizer"); !s.ok()) return s;
  }

  // The post-processor.
  auto special_ids_of = [&](const std::string& token, const std::string& key) -> absl::StatusOr<int64_t> {
    auto it = im.vocab.find(token);
    if (it == im.vocab.end()) return bad(key, absl::StrCat("'", token, "' is not in the vocabulary"));
    return it->second;
  };
  std::function<absl::Status(const Json&, const std::string&)> post = [&](const Json& p, const std::string& key) -> absl::Status {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = type_of(p);
    if (type == "Sequence") {
      if (!p.contains("processors") || !p["processors"].is_array()) return bad(key, "Sequence without processors");
      for (size_t i = 0; i < p["processors"].size(); ++i) {
        if (auto s = post(p["processors"][i], absl::StrCat(key, ".processors[", i, "]")); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type == "ByteLevel") return absl::OkStatus();  // offsets only
    if (type == "TemplateProcessing") {
      if (!im.single.empty()) return bad(key, "a second TemplateProcessing");
      auto items = [&](const char* which, std::vector<Impl::TemplateItem>* out) -> absl::Status {
        if (!p.contains(which) || !p[which].is_array()) return bad(key, absl::StrCat(which, " is not a list"));
        for (const Json& it : p[which]) {
          Impl::TemplateItem item;
          const Json* body = nullptr;
          if (it.contains("SpecialToken")) {
            item.special = true;
            body = &it["SpecialToken"];
          } else if (it.contains("Sequence")) {
            body = &it["Sequence"];
          }
          if (body == nullptr || !body->is_object() || !body->contains("id") || !(*body)["id"].is_string()) {
            return bad(key, absl::StrCat(which, ": an item is neither SpecialToken nor Sequence"));
          }
          item.id = (*body)["id"].get<std::string>();
          if (body->contains("type_id")) common::JsonToInt((*body)["type_id"], &item.type_id);
          if (!item.special && item.id != "A" && item.id != "B") return bad(key, "a Sequence other than A or B");
          out->push_back(item);
        }
        return absl::OkStatus();
      };
      if (auto s = items("single", &im.single); !s.ok()) return s;
      if (auto s = items("pair", &im.pair); !s.ok()) return s;
      if (p.contains("special_tokens") && p["special_tokens"].is_object()) {
        for (auto it = p["special_tokens"].begin(); it != p["special_tokens"].end(); ++it) {
          const Json& v = it.value();
          if (!v.is_object() || !v.contains("ids") || !v["ids"].is_array()) return bad(key, "special_tokens: ids missing");
          std::vector<int64_t> ids;
          for (const Json& x : v["ids"]) {
            int64_t id = 0;
            if (!common::JsonToInt(x, &id) || id < 0 || id >= size) return bad(key, "special_tokens: an id outside the vocabulary");
            ids.push_back(id);
          }
          im.template_specials[it.key()] = ids;
        }
      }
      for (const auto* list : {&im.single, &im.pair}) {
        for (const auto& item : *list) {
          if (item.special && !im.template_specials.count(item.id)) {
            return bad(key, absl::StrCat("special token '", item.id, "' has no ids"));
          }
        }
      }
      return absl::OkStatus();
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {
      auto token = [&](const char* k) -> absl::StatusOr<std::string> {
        if (!p.contains(k) || !p[k].is_array() || p[k].empty() || !p[k][0].is_string()) return bad(key, absl::StrCat(k, " missing"));
        return p[k][0].get<std::string>();
      };
      auto cls = token("cls");
      auto sep = token("sep");
      if (!cls.ok()) return cls.status();
      if (!sep.ok()) return sep.status();
      for (const auto& tok : {*cls, *sep}) {
        auto id = special_ids_of(tok, key);
        if (!id.ok()) return id.status();
        im.template_specials[tok] = {*id};
      }
      im.single = {{true, *cls, 0}, {false, "A", 0}, {true, *sep, 0}};
      im.pair = {{true, *cls, 0}, {false, "A", 0}, {true, *sep, 0}};
      if (type == "RobertaProcessing") im.pair.push_back({true, *sep, 0});
      im.pair.push_back({false, "B", type == "BertProcessing" ? 1 : 0});
      im.pair.push_back({true, *sep, type == "BertProcessing" ? 1 : 0});
      return absl::OkStatus();
    }
    return bad(key, absl::StrCat("post-processor type '", type, "' is not supported"));
  };
  if (j.contains("post_processor")) {
    if (auto s = post(j["post_processor"], "post_processor"); !s.ok()) return s;
  }

  // The decoder.
  std::function<absl::Status(const Json&, const std::string&)> decoder = [&](const Json& d, const std::string& key) -> absl::Status {
    if (d.is_null()) return absl::OkStatus();
    const std::string type = type_of(d);
    Impl::Decoder out;
    out.type = type;
    if (type == "Sequence") {
      if (!d.contains("decoders") || !d["decoders"].is_array()) return bad(key, "Sequence without decoders");
      for (size_t i = 0; i < d["decoders"].size(); ++i) {
        if (auto s = decoder(d["decoders"][i], absl::StrCat(key, ".decoders[", i, "]")); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (type == "ByteLevel" || type == "ByteFallback" || type == "Fuse") {
    } else if (type == "Replace") {
      if (!d.contains("pattern") || !d["pattern"].is_object() || !d["pattern"].contains("String")) {
        return bad(key, "Replace supports a String pattern only");
      }
      out.a = d["pattern"]["String"].get<std::string>();
      out.b = str(d, "content", "");
    } else if (type == "Strip") {
      out.a = str(d, "content", " ");
      if (d.contains("start")) common::JsonToInt(d["start"], &out.start);
      if (d.contains("stop")) common::JsonToInt(d["stop"], &out.stop);
    } else if (type == "Metaspace") {
      out.a = str(d, "replacement", "\xE2\x96\x81");
      out.prepend_scheme = str(d, "prepend_scheme", flag(d, "add_prefix_space", true) ? "always" : "never");
    } else {
      return bad(key, absl::StrCat("decoder type '", type, "' is not supported"));
    }
    im.decoders.push_back(out);
    return absl::OkStatus();
  };
  if (j.contains("decoder")) {
    if (auto s = decoder(j["decoder"], "decoder"); !s.ok()) return s;
  }

  // tokenizer_config.json's named tokens.
  if (!config_json.empty()) {
    Json c = Json::parse(config_json, nullptr, false);
    if (c.is_discarded() || !c.is_object()) return bad("tokenizer_config.json", "not a JSON object");
    auto named = [&](const char* k) -> int64_t {
      if (!c.contains(k)) return -1;
      const Json& v = c[k];
      std::string s = v.is_string() ? v.get<std::string>() : v.is_object() ? str(v, "content", "") : "";
      if (!s.empty()) t->named_tokens_.emplace_back(k, s);
      auto it = im.vocab.find(s);
      return it == im.vocab.end() ? -1 : it->second;
    };
    t->special_.pad = named("pad_token");
    t->special_.cls = named("bos_token");
    t->special_.sep = named("eos_token");
    t->special_.unk = named("unk_token");
    if (c.contains("chat_template")) {
      const Json& ct = c["chat_template"];
      if (ct.is_string()) {
        t->chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {  // named templates: [{"name": "default", "template": "..."}, ...]
        for (const Json& x : ct) {
          if (x.is_object() && str(x, "name", "") == "default") t->chat_template_ = str(x, "template", "");
        }
      } else if (!ct.is_null()) {
        return bad("tokenizer_config.json: chat_template", "is neither a string nor a list of named templates");
      }
    }
    if (c.contains("clean_up_tokenization_spaces") && c["clean_up_tokenization_spaces"].is_boolean()) {
      im.clean_up_spaces = c["clean_up_tokenization_spaces"].get<bool>();
    }
  }
  if (t->special_.unk < 0) t->special_.unk = im.unk;
  if (t->special_.sep >= 0) im.special_ids.insert(t->special_.sep);
  return t;
}

int64_t BpeTokenizer::TokenId(const std::string& token) const {
  auto it = impl_->vocab.find(token);
  return it == impl_->vocab.end() ? -1 : it->second;
}

bool BpeTokenizer::IsSpecial(int64_t id) const { return impl_->special_ids.count(id) > 0; }

bool BpeTokenizer::IsContinuation(int64_t id) const {
  // A piece that starts no word: no leading space stand-in (Ġ) or ▁.
  if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) return false;
  const std::string& t = vocab_[static_cast<size_t>(id)];
  return !(absl::StartsWith(t, "\xC4\xA0") || absl::StartsWith(t, "\xE2\x96\x81"));
}

namespace {

// One word's BPE, as the Rust crate's Word::merge_all: the pair of lowest
// rank merges first (then the leftmost), until no pair merges.
struct Symbol {
  int64_t id;
  int prev, next;
  bool alive = true;
  std::pair<size_t, size_t> span;  // the original bytes it stands for
};

}  // namespace

namespace {

// A string with, for each of its bytes, the byte range of the original text
// it came from: what normalizers and pre-tokenizers keep as they rewrite text,
// so that each token can name the characters it stands for.
struct Aligned {
  std::string text;
  std::vector<std::pair<size_t, size_t>> align;  // per byte of `text`

  void Append(const std::string& bytes, std::pair<size_t, size_t> from) {
    text += bytes;
    align.insert(align.end(), bytes.size(), from);
  }
  void AppendFrom(const Aligned& other, size_t b, size_t e) {
    text.append(other.text, b, e - b);
    align.insert(align.end(), other.align.begin() + static_cast<std::ptrdiff_t>(b),
                 other.align.begin() + static_cast<std::ptrdiff_t>(e));
  }
  Aligned Sub(size_t b, size_t e) const {
    Aligned out;
    out.AppendFrom(*this, b, e);
    return out;
  }
  // The original range of bytes [b, e) of `text`.
  std::pair<size_t, size_t> Span(size_t b, size_t e) const {
    size_t lo = align[b].first, hi = align[b].second;
    for (size_t k = b; k < e; ++k) {
      lo = std::min(lo, align[k].first);
      hi = std::max(hi, align[k].second);
    }
    return {lo, hi};
  }
};

// Applies `norm` chunk by chunk, cutting where it has a boundary (so that the
// result equals the whole string's normalization); each output byte maps to
// its chunk's original range.
Aligned NormalizeAligned(const icu::Normalizer2& norm, const Aligned& in) {
  Aligned out;
  const auto cps = SplitCodePoints(in.text);
  size_t pos = 0, chunk_start = 0;
  auto flush = [&](size_t end) {
    if (end == chunk_start) return;
    UErrorCode err = U_ZERO_ERROR;
    icu::UnicodeString u = norm.normalize(icu::UnicodeString::fromUTF8(in.text.substr(chunk_start, end - chunk_start)), err);
    std::string bytes;
    if (U_SUCCESS(err)) {
      u.toUTF8String(bytes);
    } else {
      bytes = in.text.substr(chunk_start, end - chunk_start);
    }
    out.Append(bytes, in.Span(chunk_start, end));
    chunk_start = end;
  };
  for (const std::string& c : cps) {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
    if (pos > 0 && norm.hasBoundaryBefore(u.char32At(0))) flush(pos);
    pos += c.size();
  }
  flush(pos);
  return out;
}

}  // namespace

void BpeTokenizer::EncodeSegment(const std::string& segment, size_t base, bool first, std::vector<int64_t>* out,
                                 std::vector<std::pair<size_t, size_t>>* offsets) const {
  const Impl& im = *impl_;
  Aligned text;
  for (size_t k = 0; k < segment.size(); ++k) text.Append(segment.substr(k, 1), {base + k, base + k + 1});
  // Normalize.
  for (const auto& n : im.normalizers) {
    if (text.text.empty()) break;
    if (n.type == "Prepend") {
      Aligned t;
      t.Append(n.a, text.align[0]);
      t.AppendFrom(text, 0, text.text.size());
      text = std::move(t);
    } else if (n.type == "Replace") {
      Aligned t;
      size_t k = 0;
      while (k < text.text.size()) {
        if (text.text.compare(k, n.a.size(), n.a) == 0) {
          t.Append(n.b, text.Span(k, k + n.a.size()));
          k += n.a.size();
        } else {
          t.AppendFrom(text, k, k + 1);
          ++k;
        }
      }
      text = std::move(t);
    } else if (n.type == "Lowercase") {
      // Each code point alone (Greek final sigma aside, the same as the whole string).
      Aligned t;
      size_t k = 0;
      for (const std::string& c : SplitCodePoints(text.text)) {
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
        u.toLower(icu::Locale::getRoot());
        std::string lower;
        u.toUTF8String(lower);
        t.Append(lower, text.Span(k, k + c.size()));
        k += c.size();
      }
      text = std::move(t);
    } else if (n.type == "Strip") {
      const auto cps = SplitCodePoints(text.text);
      size_t b = 0, e = cps.size(), bb = 0, eb = text.text.size();
      auto space = [&](size_t k) { return u_isUWhiteSpace(icu::UnicodeString::fromUTF8(cps[k]).char32At(0)); };
      while (n.left && b < e && space(b)) bb += cps[b++].size();
      while (n.right && e > b && space(e - 1)) eb -= cps[--e].size();
      text = text.Sub(bb, eb);
    } else {
      UErrorCode err = U_ZERO_ERROR;
      const icu::Normalizer2* norm = n.type == "NFC"    ? icu::Normalizer2::getNFCInstance(err)
                                     : n.type == "NFKC" ? icu::Normalizer2::getNFKCInstance(err)
                                     : n.type == "NFD"  ? icu::Normalizer2::getNFDInstance(err)
                                                        : icu::Normalizer2::getNFKDInstance(err);
      if (U_SUCCESS(err)) text = NormalizeAligned(*norm, text);
    }
  }
  // Pre-tokenize: each step splits every piece further.
  std::vector<Aligned> pieces = {text};
  for (const auto& p : im.pre_tokenizers) {
    std::vector<Aligned> next;
    for (Aligned& piece : pieces) {
      if (piece.text.empty()) continue;
      if (p.type == "Metaspace") {
        Aligned s;
        const bool prepend = p.prepend_scheme == "always" || (p.prepend_scheme == "first" && first);
        if (prepend && piece.text[0] != ' ' && !absl::StartsWith(piece.text, p.replacement)) {
          s.Append(p.replacement, piece.align[0]);
        }
        for (size_t k = 0; k < piece.text.size(); ++k) {
          if (piece.text[k] == ' ') {
            s.Append(p.replacement, piece.align[k]);
          } else {
            s.AppendFrom(piece, k, k + 1);
          }
        }
        if (!p.split) {
          next.push_back(std::move(s));
          continue;
        }
        // Split before each replacement character, keeping it with what follows.
        size_t start = 0;
        for (size_t at = s.text.find(p.replacement, 1); at != std::string::npos; at = s.text.find(p.replacement, at + 1)) {
          if (at > start) next.push_back(s.Sub(start, at));
          start = at;
        }
        if (start < s.text.size()) next.push_back(s.Sub(start, s.text.size()));
        continue;
      }
      if (p.type == "ByteLevel" && p.add_prefix_space && piece.text[0] != ' ') {
        Aligned t;
        t.Append(" ", piece.align[0]);
        t.AppendFrom(piece, 0, piece.text.size());
        piece = std::move(t);
      }
      std::vector<Aligned> split;
      if (p.regex) {
        UErrorCode err = U_ZERO_ERROR;
        UText* ut = utext_openUTF8(nullptr, piece.text.data(), static_cast<int64_t>(piece.text.size()), &err);
        std::unique_ptr<icu::RegexMatcher> matcher(p.regex->matcher(err));
        if (U_SUCCESS(err)) {
          matcher->reset(ut);
          // A hostile pattern that backtracks without end stops (ICU's steps, about 1 ms each).
          matcher->setTimeLimit(10000, err);
        }
        size_t last = 0;
        while (U_SUCCESS(err) && matcher->find(err) && U_SUCCESS(err)) {
          const size_t b = static_cast<size_t>(matcher->start64(err)), e = static_cast<size_t>(matcher->end64(err));
          if (e == b) continue;  // empty matches split nothing
          if (b > last) split.push_back(piece.Sub(last, b));
          if (!p.removed) split.push_back(piece.Sub(b, e));
          last = e;
        }
        if (last < piece.text.size()) split.push_back(piece.Sub(last, piece.text.size()));
        utext_close(ut);
      } else {
        split.push_back(std::move(piece));
      }
      for (Aligned& s : split) {
        if (p.type == "ByteLevel") {
          Aligned mapped;
          for (size_t k = 0; k < s.text.size(); ++k) {
            mapped.Append(Bytes().to_char[static_cast<unsigned char>(s.text[k])], s.align[k]);
          }
          s = std::move(mapped);
        }
        if (!s.text.empty()) next.push_back(std::move(s));
      }
    }
    pieces = std::move(next);
  }
  // The model, piece by piece.
  auto emit = [&](int64_t id, std::pair<size_t, size_t> span) {
    out->push_back(id);
    if (offsets) offsets->push_back(span);
  };
  for (const Aligned& word : pieces) {
    if (word.text.empty()) continue;
    if (im.ignore_merges) {
      auto it = im.vocab.find(word.text);
      if (it != im.vocab.end()) {
        emit(it->second, word.Span(0, word.text.size()));
        continue;
      }
    }
    std::vector<Symbol> sym;
    bool has_unk = false;  // an unknown character waits (fuse_unk joins the next ones to it)
    std::pair<size_t, size_t> unk_span{0, 0};
    auto add = [&](int64_t id, std::pair<size_t, size_t> span) {
      sym.push_back({id, static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1, true, span});
    };
    size_t at = 0;
    for (const std::string& ch : SplitCodePoints(word.text)) {
      const auto span = word.Span(at, at + ch.size());
      at += ch.size();
      auto it = im.vocab.find(ch);
      if (it != im.vocab.end()) {
        if (has_unk) {
          add(im.unk, unk_span);
          has_unk = false;
        }
        add(it->second, span);
        continue;
      }
      if (im.byte_fallback) {
        std::vector<int64_t> ids;
        for (unsigned char c : ch) {
          auto b = im.vocab.find(absl::StrFormat("<0x%02X>", c));
          if (b == im.vocab.end()) break;
          ids.push_back(b->second);
        }
        if (ids.size() == ch.size()) {
          for (int64_t id : ids) add(id, span);
          continue;
        }
      }
      if (im.unk >= 0) {
        if (has_unk && im.fuse_unk) {
          unk_span.second = span.second;
        } else {
          if (has_unk) add(im.unk, unk_span);
          has_unk = true;
          unk_span = span;
        }
      }
    }
    if (has_unk) add(im.unk, unk_span);
    if (sym.empty()) continue;
    sym.back().next = -1;
    struct Merge {
      int64_t rank;
      int pos;
      int64_t new_id;
      bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
    auto consider = [&](int pos) {
      if (pos < 0 || sym[static_cast<size_t>(pos)].next < 0) return;
      auto it = im.merges.find({sym[static_cast<size_t>(pos)].id, sym[static_cast<size_t>(sym[static_cast<size_t>(pos)].next)].id});
      if (it != im.merges.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) consider(i);
    while (!queue.empty()) {
      const Merge top = queue.top();
      queue.pop();
      Symbol& left = sym[static_cast<size_t>(top.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = sym[static_cast<size_t>(left.next)];
      auto it = im.merges.find({left.id, right.id});
      if (it == im.merges.end() || it->second.second != top.new_id) continue;
      left.id = top.new_id;
      left.span = {std::min(left.span.first, right.span.first), std::max(left.span.second, right.span.second)};
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
      consider(left.prev);
      consider(top.pos);
    }
    for (const Symbol& s : sym) {
      if (s.alive) emit(s.id, s.span);
    }
  }
}

std::vector<int64_t> BpeTokenizer::EncodeText(const std::string& text, bool add_special_tokens) const {
  return EncodeWithOffsets(text, add_special_tokens, nullptr);
}

std::vector<int64_t> BpeTokenizer::EncodeWithOffsets(const std::string& text, bool add_special_tokens,
                                                     std::vector<std::pair<size_t, size_t>>* offsets) const {
  const Impl& im = *impl_;
  std::vector<int64_t> pieces;
  std::vector<std::pair<size_t, size_t>> spans;
  // Added tokens first: at each position the longest one there, leftmost first.
  size_t start = 0, i = 0;
  auto is_word = [](unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; };
  auto is_space = [](unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (i < text.size()) {
    const Impl::AddedToken* hit = nullptr;
    for (const auto& a : im.added) {
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (a.single_word && ((i > 0 && is_word(static_cast<unsigned char>(text[i - 1]))) ||
                            (i + a.content.size() < text.size() &&
                             is_word(static_cast<unsigned char>(text[i + a.content.size()]))))) {
        continue;
      }
      hit = &a;
      break;
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t seg_end = i, next = i + hit->content.size();
    if (hit->lstrip) {
      while (seg_end > start && is_space(static_cast<unsigned char>(text[seg_end - 1]))) --seg_end;
    }
    if (hit->rstrip) {
      while (next < text.size() && is_space(static_cast<unsigned char>(text[next]))) ++next;
    }
    if (seg_end > start) EncodeSegment(text.substr(start, seg_end - start), start, start == 0, &pieces, &spans);
    pieces.push_back(hit->id);
    spans.emplace_back(i, i + hit->content.size());
    start = i = next;
  }
  if (start < text.size()) EncodeSegment(text.substr(start), start, start == 0, &pieces, &spans);
  if (!add_special_tokens || im.single.empty()) {
    if (offsets) *offsets = std::move(spans);
    return pieces;
  }
  std::vector<int64_t> out;
  if (offsets) offsets->clear();
  for (const auto& item : im.single) {
    if (item.special) {
      const auto& ids = im.template_specials.at(item.id);
      out.insert(out.end(), ids.begin(), ids.end());
      if (offsets) offsets->insert(offsets->end(), ids.size(), {0, 0});
    } else {
      out.insert(out.end(), pieces.begin(), pieces.end());
      if (offsets) offsets->insert(offsets->end(), spans.begin(), spans.end());
    }
  }
  return out;
}

std::vector<std::string> BpeTokenizer::SplitWords(const std::string& text) const {
  // The words as the model sees them: each piece's text, spaces trimmed.
  std::vector<std::string> out;
  std::string word;
  for (int64_t id : EncodeText(text, false)) {
    if (!IsContinuation(id) && !word.empty()) {
      out.push_back(word);
      word.clear();
    }
    std::string piece = Decode({id}, true);
    while (!piece.empty() && piece.front() == ' ') piece.erase(0, 1);
    word += piece;
  }
  if (!word.empty()) out.push_back(word);
  return out;
}

Encoding BpeTokenizer::Encode(const std::string& a, const std::string* b, int max_length, bool pad) const {
  const Impl& im = *impl_;
  std::vector<int64_t> ia = EncodeText(a, false), ib;
  if (b) ib = EncodeText(*b, false);
  const auto& tmpl = b ? im.pair : im.single;
  size_t specials = 0;
  for (const auto& item : tmpl) {
    if (item.special) specials += im.template_specials.at(item.id).size();
  }
  // Longest first, one token at a time.
  const size_t budget = max_length > static_cast<int>(specials) ? static_cast<size_t>(max_length) - specials : 0;
  while (ia.size() + ib.size() > budget) {
    (ia.size() >= ib.size() ? ia : ib).pop_back();
  }
  Encoding e;
  if (tmpl.empty()) {
    e.input_ids = ia;
    e.input_ids.insert(e.input_ids.end(), ib.begin(), ib.end());
    e.token_type_ids.assign(ia.size(), 0);
    e.token_type_ids.resize(e.input_ids.size(), 1);
  } else {
    for (const auto& item : tmpl) {
      const std::vector<int64_t>& ids = item.special ? im.template_specials.at(item.id) : item.id == "A" ? ia : ib;
      e.input_ids.insert(e.input_ids.end(), ids.begin(), ids.end());
      e.token_type_ids.resize(e.input_ids.size(), item.type_id);
    }
  }
  e.attention_mask.assign(e.input_ids.size(), 1);
  if (pad && static_cast<int>(e.input_ids.size()) < max_length) {
    const int64_t pad_id = special_.pad >= 0 ? special_.pad : std::max<int64_t>(special_.sep, 0);
    e.input_ids.resize(static_cast<size_t>(max_length), pad_id);
    e.token_type_ids.resize(static_cast<size_t>(max_length), 0);
    e.attention_mask.resize(static_cast<size_t>(max_length), 0);
  }
  return e;
}

std::string BpeTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) continue;
    if (skip_special_tokens && im.special_ids.count(id)) continue;
    tokens.push_back(vocab_[static_cast<size_t>(id)]);
  }
  if (im.decoders.empty()) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&out, i ? " " : "", tokens[i]);
    return out;
  }
  for (const auto& d : im.decoders) {
    std::vector<std::string> next;
    if (d.type == "ByteLevel") {
      std::string bytes;
      for (const std::string& t : tokens) {
        std::string mapped;
        bool all = true;
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(t);
        for (int32_t k = 0; k < u.length(); k = u.moveIndex32(k, 1)) {
          auto it = Bytes().to_byte.find(u.char32At(k));
          if (it == Bytes().to_byte.end()) {
            all = false;
            break;
          }
          mapped += static_cast<char>(it->second);
        }
        bytes += all ? mapped : t;
      }
      next.push_back(Lossy(bytes));
    } else if (d.type == "Replace") {
      for (const std::string& t : tokens) next.push_back(absl::StrReplaceAll(t, {{d.a, d.b}}));
    } else if (d.type == "ByteFallback") {
      std::string pending;
      size_t pending_count = 0;
      auto flush = [&] {
        if (pending_count == 0) return;
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(pending);
        std::string check;
        u.toUTF8String(check);
        if (check == pending) {
          next.push_back(pending);
        } else {
          for (size_t k = 0; k < pending_count; ++k) next.push_back("\xEF\xBF\xBD");
        }
        pending.clear();
        pending_count = 0;
      };
      for (const std::string& t : tokens) {
        unsigned int byte = 0;
        if (t.size() == 6 && absl::StartsWith(t, "<0x") && t.back() == '>' && std::sscanf(t.c_str() + 3, "%2X", &byte) == 1) {
          pending += static_cast<char>(byte);
          ++pending_count;
        } else {
          flush();
          next.push_back(t);
        }
      }
      flush();
    } else if (d.type == "Fuse") {
      std::string all;
      for (const std::string& t : tokens) all += t;
      next.push_back(all);
    } else if (d.type == "Strip") {
      for (std::string t : tokens) {
        for (int64_t k = 0; k < d.start && absl::StartsWith(t, d.a); ++k) t.erase(0, d.a.size());
        for (int64_t k = 0; k < d.stop && absl::EndsWith(t, d.a); ++k) t.erase(t.size() - d.a.size());
        next.push_back(t);
      }
    } else if (d.type == "Metaspace") {
      for (size_t k = 0; k < tokens.size(); ++k) {
        std::string t = absl::StrReplaceAll(tokens[k], {{d.a, " "}});
        if (k == 0 && d.prepend_scheme != "never" && absl::StartsWith(t, " ")) t.erase(0, 1);
        next.push_back(t);
      }
    }
    tokens = std::move(next);
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  if (im.clean_up_spaces) {
    // transformers' clean_up_tokenization.
    out = absl::StrReplaceAll(out, {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                                    {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}});
  }
  return out;
}

absl::Status BpeTokenizer::Save(const std::string& dir, int64_t) const {
  if (auto s = common::WriteFileAtomic(dir + "/tokenizer.json", tokenizer_json_); !s.ok()) return s;
  if (!sentencepiece_model_.empty()) {
    if (auto s = common::WriteFileAtomic(dir + "/tokenizer.model", sentencepiece_model_); !s.ok()) return s;
  }
  if (tokenizer_config_json_.empty()) return absl::OkStatus();
  return common::WriteFileAtomic(dir + "/tokenizer_config.json", tokenizer_config_json_);
}

}  // namespace attune::worker::text
