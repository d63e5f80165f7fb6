#include "worker/text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/locid.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "worker/text/bpe_tokenizer.h"

namespace attune::worker::text {
namespace {

// Decodes UTF-8; invalid bytes become U+FFFD (which cleaning then removes, as
// HF's _clean_text does).
std::vector<UChar32> Decode(const std::string& s) {
  std::vector<UChar32> out;
  out.reserve(s.size());
  int32_t i = 0, n = static_cast<int32_t>(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (i < n) {
    UChar32 c;
    U8_NEXT(p, i, n, c);
    out.push_back(c < 0 ? 0xFFFD : c);
  }
  return out;
}

void AppendUtf8(UChar32 c, std::string* out) {
  char buf[4];
  int32_t len = 0;
  UBool err = false;
  U8_APPEND(reinterpret_cast<uint8_t*>(buf), len, 4, c, err);
  if (!err) out->append(buf, static_cast<size_t>(len));
}

bool IsWhitespace(UChar32 c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
  return u_charType(c) == U_SPACE_SEPARATOR;
}

// Python's str.split() also splits on line and paragraph separators.
bool IsSplitSpace(UChar32 c) {
  if (IsWhitespace(c)) return true;
  int8_t t = u_charType(c);
  return t == U_LINE_SEPARATOR || t == U_PARAGRAPH_SEPARATOR;
}

bool IsControl(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  int8_t t = u_charType(c);
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_UNASSIGNED || t == U_PRIVATE_USE_CHAR ||
         t == U_SURROGATE;
}

bool IsPunctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  int8_t t = u_charType(c);
  return t == U_DASH_PUNCTUATION || t == U_START_PUNCTUATION || t == U_END_PUNCTUATION ||
         t == U_CONNECTOR_PUNCTUATION || t == U_OTHER_PUNCTUATION || t == U_INITIAL_PUNCTUATION ||
         t == U_FINAL_PUNCTUATION;
}

bool IsChineseChar(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

const std::unordered_set<std::string>& NeverSplit() {
  static const auto* s = new std::unordered_set<std::string>{"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};
  return *s;
}

// Lower-cases (full Unicode mapping, like Python's str.lower) and/or strips
// accents (NFD, then drop non-spacing marks).
std::vector<UChar32> LowerAndStrip(const std::vector<UChar32>& cps, bool lower, bool strip) {
  icu::UnicodeString u;
  for (UChar32 c : cps) u.append(c);
  if (lower) u.toLower(icu::Locale::getRoot());
  if (strip) {
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(err);
    if (U_SUCCESS(err)) {
      icu::UnicodeString d = nfd->normalize(u, err);
      if (U_SUCCESS(err)) u = d;
    }
  }
  std::vector<UChar32> out;
  for (int32_t i = 0; i < u.length();) {
    UChar32 c = u.char32At(i);
    i += U16_LENGTH(c);
    if (strip && u_charType(c) == U_NON_SPACING_MARK) continue;
    out.push_back(c);
  }
  return out;
}

std::string ToUtf8(const std::vector<UChar32>& cps) {
  std::string s;
  for (UChar32 c : cps) AppendUtf8(c, &s);
  return s;
}

}  // namespace

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::Create(std::vector<std::string> vocab, TokenizerOptions options) {
  WordPieceTokenizer t;
  t.vocab_ = std::move(vocab);
  t.options_ = options;
  for (size_t i = 0; i < t.vocab_.size(); ++i) t.ids_.emplace(t.vocab_[i], static_cast<int64_t>(i));
  for (auto [name, slot] : {std::pair<const char*, int64_t*>{"[UNK]", &t.special_.unk}, {"[CLS]", &t.special_.cls},
                            {"[SEP]", &t.special_.sep}, {"[PAD]", &t.special_.pad}}) {
    auto it = t.ids_.find(name);
    if (it == t.ids_.end()) return absl::InvalidArgumentError(absl::StrCat("vocabulary has no ", name, " token"));
    *slot = it->second;
  }
  if (auto it = t.ids_.find("[MASK]"); it != t.ids_.end()) t.special_.mask = it->second;
  return t;
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromVocabFile(const std::string& vocab_path, TokenizerOptions options) {
  auto bytes = common::ReadFile(vocab_path, int64_t{256} << 20);
  if (!bytes.ok()) return bytes.status();
  std::vector<std::string> vocab;
  size_t start = 0;
  while (start < bytes->size()) {
    size_t nl = bytes->find('\n', start);
    if (nl == std::string::npos) nl = bytes->size();
    std::string tok = bytes->substr(start, nl - start);
    if (!tok.empty() && tok.back() == '\r') tok.pop_back();
    // HF strips surrounding whitespace of each vocab line.
    size_t b = tok.find_first_not_of(" \t"), e = tok.find_last_not_of(" \t");
    vocab.push_back(b == std::string::npos ? "" : tok.substr(b, e - b + 1));
    start = nl + 1;
  }
  if (vocab.empty()) return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": empty vocabulary"));
  return Create(std::move(vocab), options);
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromTokenizerJson(const std::string& path) {
  auto bytes = common::ReadFile(path, int64_t{256} << 20);
  if (!bytes.ok()) return bytes.status();
  auto j = nlohmann::json::parse(*bytes, nullptr, false);
  auto bad = [&](const std::string& why) { return absl::InvalidArgumentError(absl::StrCat(path, ": ", why)); };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("model") || !j["model"].is_object()) return bad("no model");
  const auto& m = j["model"];
  const std::string type = m.value("type", "");
  if (type != "WordPiece") {
    return bad(absl::StrCat("model type '", type, "' is not supported; Attune reads BERT's WordPiece tokenizers"));
  }
  if (m.value("continuing_subword_prefix", "##") != "##") return bad("continuing_subword_prefix must be ##");
  if (!m.contains("vocab") || !m["vocab"].is_object() || m["vocab"].empty()) return bad("model.vocab is not a token -> id map");
  const size_t n = m["vocab"].size();
  std::vector<std::string> vocab(n);
  std::vector<bool> seen(n, false);
  for (const auto& [token, id] : m["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() >= n || seen[id.get<size_t>()]) {
      return bad(absl::StrCat("model.vocab: ids must be 0..", n - 1, ", each once ('", token, "')"));
    }
    seen[id.get<size_t>()] = true;
    vocab[id.get<size_t>()] = token;
  }
  TokenizerOptions options;
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const auto& nz = j["normalizer"];
    if (!nz.is_object() || nz.value("type", "") != "BertNormalizer") {
      return bad(absl::StrCat("normalizer '", nz.is_object() ? nz.value("type", "") : std::string("?"),
                              "' is not BertNormalizer; give a vocab.txt and tokenizer_config.json instead"));
    }
    if (nz.contains("lowercase") && nz["lowercase"].is_boolean()) options.do_lower_case = nz["lowercase"];
    options.strip_accents = options.do_lower_case;
    if (nz.contains("strip_accents") && nz["strip_accents"].is_boolean()) options.strip_accents = nz["strip_accents"];
    if (nz.contains("handle_chinese_chars") && nz["handle_chinese_chars"].is_boolean()) {
      options.tokenize_chinese_chars = nz["handle_chinese_chars"];
    }
  }
  return Create(std::move(vocab), options);
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromDirectory(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir + "/vocab.txt", ec) && std::filesystem::exists(dir + "/tokenizer.json", ec)) {
    return FromTokenizerJson(dir + "/tokenizer.json");
  }
  TokenizerOptions options;
  auto cfg = common::ReadFile(dir + "/tokenizer_config.json", 1 << 20);
  if (cfg.ok()) {
    auto j = nlohmann::json::parse(*cfg, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/tokenizer_config.json: not a JSON object"));
    }
    if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) options.do_lower_case = j["do_lower_case"];
    options.strip_accents = options.do_lower_case;
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean()) options.strip_accents = j["strip_accents"];
    if (j.contains("tokenize_chinese_chars") && j["tokenize_chinese_chars"].is_boolean()) {
      options.tokenize_chinese_chars = j["tokenize_chinese_chars"];
    }
  }
  return FromVocabFile(dir + "/vocab.txt", options);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir + "/vocab.txt", ec) && std::filesystem::exists(dir + "/tokenizer.json", ec)) {
    // A BPE tokenizer.json (a decoder's) or WordPiece (an encoder's).
    auto text = common::ReadFile(dir + "/tokenizer.json", int64_t{1} << 30);
    if (!text.ok()) return text.status();
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_object() && j.contains("model") && j["model"].is_object() && j["model"].value("type", "") == "BPE") {
      auto bpe = BpeTokenizer::FromDirectory(dir);
      if (!bpe.ok()) return bpe.status();
      return std::unique_ptr<Tokenizer>(std::move(*bpe));
    }
  }
  if (!std::filesystem::exists(dir + "/vocab.txt", ec) && !std::filesystem::exists(dir + "/tokenizer.json", ec) &&
      std::filesystem::exists(dir + "/tokenizer.model", ec)) {
    // SentencePiece's own file (NOTE [tokenizer.model]).
    auto bpe = BpeTokenizer::FromDirectory(dir);
    if (!bpe.ok()) return bpe.status();
    return std::unique_ptr<Tokenizer>(std::move(*bpe));
  }
  auto wordpiece = WordPieceTokenizer::FromDirectory(dir);
  if (!wordpiece.ok()) return wordpiece.status();
  return std::unique_ptr<Tokenizer>(std::make_unique<WordPieceTokenizer>(*std::move(wordpiece)));
}

bool WordPieceTokenizer::IsContinuation(int64_t id) const {
  return id >= 0 && static_cast<size_t>(id) < vocab_.size() && absl::StartsWith(vocab_[static_cast<size_t>(id)], "##");
}

absl::Status WordPieceTokenizer::Save(const std::string& dir, int64_t model_max_length) const {
  std::string v;
  for (const auto& t : vocab_) absl::StrAppend(&v, t, "\n");
  absl::Status s = common::WriteFileAtomic(dir + "/vocab.txt", v);
  if (!s.ok()) return s;
  const nlohmann::json special = {{"unk_token", "[UNK]"}, {"sep_token", "[SEP]"}, {"pad_token", "[PAD]"},
                                  {"cls_token", "[CLS]"}, {"mask_token", "[MASK]"}};
  nlohmann::json j = {{"do_lower_case", options_.do_lower_case},
                      {"strip_accents", options_.strip_accents},
                      {"tokenize_chinese_chars", options_.tokenize_chinese_chars},
                      {"tokenizer_class", "BertTokenizer"},
                      {"model_max_length", model_max_length}};
  j.update(special);  // tokenizer_config.json names the special tokens too
  s = common::WriteFileAtomic(dir + "/tokenizer_config.json", j.dump(2));
  if (!s.ok()) return s;
  return common::WriteFileAtomic(dir + "/special_tokens_map.json", special.dump(2));
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(const std::string& text) const {
  // 1. Clean: drop NUL, U+FFFD and control characters; whitespace -> ' '.
  // 2. Surround CJK ideographs with spaces.
  std::vector<UChar32> cleaned;
  for (UChar32 c : Decode(text)) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(' ');
    } else if (options_.tokenize_chinese_chars && IsChineseChar(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  // 3. Whitespace split; 4. lower-case / strip accents; 5. split punctuation.
  std::vector<std::string> out;
  size_t i = 0;
  while (i < cleaned.size()) {
    while (i < cleaned.size() && IsSplitSpace(cleaned[i])) ++i;
    size_t j = i;
    while (j < cleaned.size() && !IsSplitSpace(cleaned[j])) ++j;
    if (j == i) break;
    std::vector<UChar32> word(cleaned.begin() + static_cast<long>(i), cleaned.begin() + static_cast<long>(j));
    i = j;
    std::string as_text = ToUtf8(word);
    if (NeverSplit().count(as_text)) {
      out.push_back(as_text);
      continue;
    }
    if (options_.do_lower_case || options_.strip_accents) {
      word = LowerAndStrip(word, options_.do_lower_case, options_.strip_accents);
    }
    std::vector<UChar32> piece;
    for (UChar32 c : word) {
      if (IsPunctuation(c)) {
        if (!piece.empty()) out.push_back(ToUtf8(piece));
        piece.clear();
        out.push_back(ToUtf8({c}));
      } else {
        piece.push_back(c);
      }
    }
    if (!piece.empty()) out.push_back(ToUtf8(piece));
  }
  // A trailing split on whitespace (step 6 in HF) is a no-op here: pieces hold no spaces.
  return out;
}

std::vector<std::string> WordPieceTokenizer::WordPiece(const std::string& word) const {
  std::vector<UChar32> cps = Decode(word);
  if (static_cast<int>(cps.size()) > options_.max_input_chars_per_word) return {"[UNK]"};
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < cps.size()) {
    size_t end = cps.size();
    std::string found;
    while (start < end) {
      std::vector<UChar32> sub(cps.begin() + static_cast<long>(start), cps.begin() + static_cast<long>(end));
      std::string s = ToUtf8(sub);
      if (start > 0) s = "##" + s;
      if (ids_.count(s)) {
        found = std::move(s);
        break;
      }
      --end;
    }
    if (found.empty()) return {"[UNK]"};
    pieces.push_back(std::move(found));
    start = end;
  }
  return pieces;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(const std::string& text) const {
  // Special tokens of the vocabulary are split out wherever they stand
  // ("hereby [MASK]," is hereby [MASK] ,), as Hugging Face's tokenizers do
  // before basic tokenisation.
  // Each special's next occurrence is searched again only once passed, so
  // the text is scanned once per special, however many it holds.
  std::vector<std::pair<std::string, size_t>> next;
  for (const auto& special : NeverSplit()) {
    if (ids_.count(special)) next.emplace_back(special, text.find(special));
  }
  std::vector<std::string> out;
  size_t from = 0;
  while (true) {
    const std::pair<std::string, size_t>* first = nullptr;
    for (auto& n : next) {
      if (n.second != std::string::npos && n.second < from) n.second = text.find(n.first, from);
      if (n.second != std::string::npos && (first == nullptr || n.second < first->second)) first = &n;
    }
    const size_t end = first == nullptr ? text.size() : first->second;
    TokenizeSegment(text.substr(from, end - from), &out);
    if (first == nullptr) return out;
    out.push_back(first->first);
    from = end + first->first.size();
  }
}

void WordPieceTokenizer::TokenizeSegment(const std::string& text, std::vector<std::string>* tokens) const {
  std::vector<std::string>& out = *tokens;
  for (const auto& word : BasicTokenize(text)) {
    if (NeverSplit().count(word) && ids_.count(word)) {
      out.push_back(word);
      continue;
    }
    for (auto& p : WordPiece(word)) out.push_back(std::move(p));
  }
}

std::vector<int64_t> WordPieceTokenizer::ConvertTokensToIds(const std::vector<std::string>& tokens) const {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens) {
    auto it = ids_.find(t);
    ids.push_back(it == ids_.end() ? special_.unk : it->second);
  }
  return ids;
}

Encoding WordPieceTokenizer::Encode(const std::string& a, const std::string* b, int max_length, bool pad) const {
  std::vector<int64_t> ia = ConvertTokensToIds(Tokenize(a));
  std::vector<int64_t> ib;
  if (b) ib = ConvertTokensToIds(Tokenize(*b));
  const size_t specials = b ? 3 : 2;
  const size_t budget = max_length > static_cast<int>(specials) ? static_cast<size_t>(max_length) - specials : 0;
  // Longest-first truncation: drop from the longer sequence, one token at a
  // time, from the second on a tie (as HF's tokenizers and its slow
  // truncate_sequences do: an odd budget leaves the first text the extra token).
  while (ia.size() + ib.size() > budget) {
    if (ia.size() > ib.size()) {
      ia.pop_back();
    } else if (!ib.empty()) {
      ib.pop_back();
    } else {
      break;
    }
  }
  Encoding e;
  e.input_ids.push_back(special_.cls);
  e.input_ids.insert(e.input_ids.end(), ia.begin(), ia.end());
  e.input_ids.push_back(special_.sep);
  e.token_type_ids.assign(e.input_ids.size(), 0);
  if (b) {
    e.input_ids.insert(e.input_ids.end(), ib.begin(), ib.end());
    e.input_ids.push_back(special_.sep);
    e.token_type_ids.resize(e.input_ids.size(), 1);
  }
  e.attention_mask.assign(e.input_ids.size(), 1);
  if (pad) {
    while (static_cast<int>(e.input_ids.size()) < max_length) {
      e.input_ids.push_back(special_.pad);
      e.token_type_ids.push_back(0);
      e.attention_mask.push_back(0);
    }
  }
  return e;
}

std::vector<std::string> BuildWordPieceVocab(const std::vector<std::string>& texts,
                                             const VocabBuilderOptions& options) {
  // The basic tokenizer needs a vocabulary only for WordPiece; a minimal one suffices here.
  auto basic = WordPieceTokenizer::Create({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}, options.tokenizer);
  std::map<std::string, int64_t> word_counts;
  for (const auto& t : texts) {
    for (auto& w : basic->BasicTokenize(t)) ++word_counts[w];
  }
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::unordered_map<std::string, int> symbol_id;
  std::vector<std::string> symbols;
  auto intern = [&](const std::string& s) {
    auto it = symbol_id.find(s);
    if (it != symbol_id.end()) return it->second;
    int id = static_cast<int>(symbols.size());
    symbols.push_back(s);
    symbol_id.emplace(s, id);
    return id;
  };

  // Words as symbol sequences; the alphabet (all characters seen, initial
  // and "##" forms) always enters the vocabulary so that nothing maps to [UNK].
  struct Word {
    std::vector<int> sym;
    int64_t count;
  };
  std::vector<Word> words;
  std::set<std::string> alphabet;
  for (const auto& [w, count] : word_counts) {
    Word word{{}, count};
    std::vector<UChar32> cps = Decode(w);
    if (static_cast<int>(cps.size()) > options.tokenizer.max_input_chars_per_word) continue;
    for (size_t i = 0; i < cps.size(); ++i) {
      std::string s = (i ? "##" : "") + ToUtf8({cps[i]});
      alphabet.insert(s);
      word.sym.push_back(intern(s));
    }
    if (count >= options.min_frequency) words.push_back(std::move(word));
  }
  for (const auto& a : alphabet) vocab.push_back(a);

  // Byte-pair merges of the most frequent adjacent pair until the size is reached.
  auto key = [](int a, int b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); };
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::set<size_t>> pair_words;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& s = words[wi].sym;
    for (size_t k = 0; k + 1 < s.size(); ++k) {
      pair_count[key(s[k], s[k + 1])] += words[wi].count;
      pair_words[key(s[k], s[k + 1])].insert(wi);
    }
  }
  std::unordered_set<std::string> in_vocab(vocab.begin(), vocab.end());
  while (static_cast<int>(vocab.size()) < options.vocab_size && !pair_count.empty()) {
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [k, c] : pair_count) {
      if (c > best_count || (c == best_count && k < best)) {
        best = k;
        best_count = c;
      }
    }
    if (best_count < options.min_frequency) break;
    int a = static_cast<int>(best >> 32), b = static_cast<int>(best & 0xffffffffu);
    std::string bs = symbols[static_cast<size_t>(b)];
    std::string merged = symbols[static_cast<size_t>(a)] + (bs.rfind("##", 0) == 0 ? bs.substr(2) : bs);
    int m = intern(merged);
    if (in_vocab.insert(merged).second) vocab.push_back(merged);
    std::set<size_t> affected = pair_words[best];
    for (size_t wi : affected) {
      auto& s = words[wi].sym;
      int64_t c = words[wi].count;
      for (size_t k = 0; k + 1 < s.size(); ++k) {
        pair_count[key(s[k], s[k + 1])] -= c;
      }
      std::vector<int> next;
      for (size_t k = 0; k < s.size(); ++k) {
        if (k + 1 < s.size() && s[k] == a && s[k + 1] == b) {
          next.push_back(m);
          ++k;
        } else {
          next.push_back(s[k]);
        }
      }
      s = std::move(next);
      for (size_t k = 0; k + 1 < s.size(); ++k) {
        pair_count[key(s[k], s[k + 1])] += c;
        pair_words[key(s[k], s[k + 1])].insert(wi);
      }
    }
    for (auto it = pair_count.begin(); it != pair_count.end();) {
      it = it->second <= 0 ? pair_count.erase(it) : std::next(it);
    }
  }
  return vocab;
}

}  // namespace attune::worker::text
