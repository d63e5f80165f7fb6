#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/json_fields.h"
#include "common/status_macros.h"
#include "worker/data/dataset.h"

namespace attune::worker::data {
namespace {

// Buffered byte source with a one-byte lookahead.
class ByteSource {
 public:
  explicit ByteSource(std::FILE* f) : f_(f), buf_(1 << 16) {}
  bool Get(char* c) {
    if (pos_ == len_) {
      len_ = std::fread(buf_.data(), 1, buf_.size(), f_);
      pos_ = 0;
      if (len_ == 0) return false;
    }
    *c = buf_[pos_++];
    return true;
  }
  int Peek() {
    if (pos_ == len_) {
      len_ = std::fread(buf_.data(), 1, buf_.size(), f_);
      pos_ = 0;
      if (len_ == 0) return -1;
    }
    return static_cast<unsigned char>(buf_[pos_]);
  }

 private:
  std::FILE* f_;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

absl::Status Malformed(const std::string& path, int64_t line, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", why));
}

std::optional<std::string> NonEmpty(std::string s) {
  if (s.empty()) return std::nullopt;
  return s;
}

struct Columns {
  int text = -1, pair = -1, label = -1;
};

absl::StatusOr<Columns> FindColumns(const std::vector<std::string>& header, const ReaderOptions& o,
                                    const std::string& path) {
  Columns c;
  std::set<std::string> seen;
  for (size_t i = 0; i < header.size(); ++i) {
    // Which of two same-named columns is the text would be a guess.
    if (!header[i].empty() && !seen.insert(header[i]).second) {
      return Malformed(path, 1, absl::StrCat("column '", header[i].substr(0, 128), "' appears twice in the header"));
    }
    if (header[i] == o.text_column) c.text = static_cast<int>(i);
    if (!o.text_pair_column.empty() && header[i] == o.text_pair_column) c.pair = static_cast<int>(i);
    if (header[i] == o.label_column) c.label = static_cast<int>(i);
  }
  if (c.text < 0) return Malformed(path, 1, absl::StrCat("no column named '", o.text_column, "' in the header"));
  if (!o.text_pair_column.empty() && c.pair < 0 && o.require_text_pair) {
    return Malformed(path, 1, absl::StrCat("no column named '", o.text_pair_column, "' in the header"));
  }
  if (o.require_label && c.label < 0) {
    return Malformed(path, 1, absl::StrCat("no column named '", o.label_column, "' in the header"));
  }
  return c;
}

absl::StatusOr<std::vector<Record>> ReadCsv(std::FILE* f, const std::string& path, const ReaderOptions& o,
                                            char delim) {
  ByteSource src(f);
  std::vector<Record> out;
  std::vector<std::string> fields;
  std::string field;
  int64_t line = 1, row_start = 1, row_bytes = 0;
  bool have_header = false;
  std::vector<std::string> header;
  Columns cols;

  // Skip a UTF-8 byte-order mark.
  if (src.Peek() == 0xEF) {
    char a, b, c;
    src.Get(&a);
    if (src.Peek() == 0xBB && src.Get(&b) && src.Peek() == 0xBF && src.Get(&c)) {
    } else {
      return Malformed(path, 1, "truncated UTF-8 byte-order mark");
    }
  }

  bool row_quoted = false;  // the row held a quoted field
  auto end_row = [&]() -> absl::Status {
    fields.push_back(std::move(field));
    field.clear();
    // A blank line is skipped; a quoted empty field ("") is a row whose value is missing.
    bool blank = fields.size() == 1 && fields[0].empty() && !row_quoted;
    row_quoted = false;
    if (!blank) {
      if (!have_header) {
        header = fields;
        have_header = true;
        auto c = FindColumns(header, o, path);
        if (!c.ok()) return c.status();
        cols = *c;
      } else {
        if (fields.size() != header.size()) {
          return Malformed(path, row_start, absl::StrCat("expected ", header.size(), " fields as in the header, found ",
                                                         fields.size()));
        }
        if (static_cast<int64_t>(out.size()) >= o.max_rows) {
          return absl::ResourceExhaustedError(absl::StrCat(path, ": more than ", o.max_rows, " rows"));
        }
        Record r;
        r.line = row_start;
        r.text = NonEmpty(std::move(fields[cols.text]));
        if (cols.pair >= 0) r.text_pair = NonEmpty(std::move(fields[cols.pair]));
        if (cols.label >= 0) r.label = NonEmpty(std::move(fields[cols.label]));
        out.push_back(std::move(r));
      }
    }
    fields.clear();
    row_bytes = 0;
    row_start = line;
    return absl::OkStatus();
  };
  auto add = [&](char c) -> absl::Status {
    field.push_back(c);
    if (static_cast<int64_t>(field.size()) > o.max_field_bytes) {
      return Malformed(path, row_start, absl::StrCat("field ", fields.size() + 1, " exceeds the ", o.max_field_bytes,
                                                     "-byte field limit"));
    }
    if (++row_bytes > o.max_row_bytes) {
      return Malformed(path, row_start, absl::StrCat("row exceeds the ", o.max_row_bytes, "-byte row limit"));
    }
    return absl::OkStatus();
  };

  char c;
  bool at_field_start = true;
  while (src.Get(&c)) {
    if (at_field_start && c == '"') {
      row_quoted = true;
      // Quoted field: runs to the matching quote, may hold delimiters,
      // newlines and doubled quotes.
      int64_t quote_line = line;
      bool closed = false;
      while (src.Get(&c)) {
        if (c == '"') {
          if (src.Peek() == '"') {
            src.Get(&c);
            if (auto s = add('"'); !s.ok()) return s;
            continue;
          }
          closed = true;
          break;
        }
        if (c == '\n') ++line;
        if (auto s = add(c); !s.ok()) return s;
      }
      if (!closed) return Malformed(path, quote_line, "unterminated quoted field (unbalanced quotes)");
      int next = src.Peek();
      if (next != -1 && next != delim && next != '\n' && next != '\r') {
        return Malformed(path, line, absl::StrCat("unexpected character '", std::string(1, static_cast<char>(next)),
                                                  "' after a closing quote"));
      }
      at_field_start = false;
      continue;
    }
    at_field_start = false;
    if (c == delim) {
      fields.push_back(std::move(field));
      field.clear();
      at_field_start = true;
    } else if (c == '\r' && src.Peek() == '\n') {
      // CRLF: the '\n' ends the row on the next iteration.
    } else if (c == '\n') {
      ++line;
      if (auto s = end_row(); !s.ok()) return s;
      at_field_start = true;
    } else if (c == '\0') {
      return Malformed(path, line, "embedded NUL byte");
    } else {
      if (auto s = add(c); !s.ok()) return s;
    }
  }
  if (!field.empty() || !fields.empty()) {
    if (auto s = end_row(); !s.ok()) return s;
  }
  if (!have_header) return Malformed(path, 1, "the file is empty (no header row)");
  return out;
}

// NOTE [JSON numbers as written]: a field of a JSONL line that holds a
// number is read as text. A number that is an integer within int64's range
// reads as that integer ("1.0" and "1e2" are the labels "1" and "100");
// any other reads exactly as the line spells it ("3333e34", "0.10"), so no
// label goes through a float-to-integer cast (undefined out of range: found
// by fuzz_data_reader) or through a reformatting of the double. The DOM
// parser below keeps the spelling: it stores such a number as its text.
class JsonKeepingNumberText : public nlohmann::detail::json_sax_dom_parser<nlohmann::json> {
 public:
  using Base = nlohmann::detail::json_sax_dom_parser<nlohmann::json>;
  using Base::Base;
  bool number_float(double value, const std::string& text) {
    int64_t integral = 0;
    if (common::DoubleToInt(value, &integral)) return number_integer(integral);
    std::string as_written = text;
    return string(as_written);
  }
};

// One JSONL line as JSON (numbers as NOTE [JSON numbers as written]); a
// discarded value when it is not valid JSON.
nlohmann::json ParseJsonLine(const std::string& line) {
  nlohmann::json out;
  JsonKeepingNumberText sax(out, /*allow_exceptions_=*/false);
  if (!nlohmann::json::sax_parse(line, &sax)) return nlohmann::json(nlohmann::json::value_t::discarded);
  return out;
}

absl::StatusOr<std::optional<std::string>> JsonValue(const nlohmann::json& obj, const std::string& key,
                                                     const std::string& path, int64_t line) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return NonEmpty(it->get<std::string>());
  if (it->is_number_integer()) return std::optional<std::string>(std::to_string(it->get<int64_t>()));
  if (it->is_number_unsigned()) return std::optional<std::string>(std::to_string(it->get<uint64_t>()));
  if (it->is_number_float()) {  // not from ParseJsonLine, which keeps such numbers as text
    int64_t integral = 0;
    if (common::JsonToInt(*it, &integral)) return std::optional<std::string>(std::to_string(integral));
    return std::optional<std::string>(it->dump());
  }
  if (it->is_boolean()) return std::optional<std::string>(it->get<bool>() ? "true" : "false");
  return Malformed(path, line, absl::StrCat("field '", key, "' must be a string or a number"));
}

// A multi-label field: an array of strings or numbers, joined by ';'; a
// plain string or number is read as it is (';'-separated labels).
absl::StatusOr<std::optional<std::string>> JsonLabelList(const nlohmann::json& obj, const std::string& key,
                                                         const std::string& path, int64_t line) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return JsonValue(obj, key, path, line);
  std::string joined;
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json one = {{key, (*it)[i]}};
    ATTUNE_ASSIGN_OR_RETURN(std::optional<std::string> v, JsonValue(one, key, path, line));
    if (!v) continue;
    if (v->find(';') != std::string::npos) {
      return Malformed(path, line, absl::StrCat("field '", key, "': label '", *v, "' holds ';', the list separator"));
    }
    absl::StrAppend(&joined, joined.empty() ? "" : ";", *v);
  }
  // An empty array is the empty set, which ";" spells (a missing field is missing).
  return std::optional<std::string>(joined.empty() ? ";" : joined);
}

// The next line of `in` (without its '\n') into *line; false at the end of
// the input. A line longer than `limit` bytes is refused as "LINE: <what>
// exceeds the N-byte field limit", reading no more than the limit.
absl::StatusOr<bool> NextLine(ByteSource& in, size_t limit, const std::string& path, int64_t line_no,
                              const char* what, int64_t field_limit, std::string* line) {
  line->clear();
  char c;
  bool got = false;
  while ((got = in.Get(&c)) && c != '\n') {
    line->push_back(c);
    if (line->size() > limit) {
      return Malformed(path, line_no, absl::StrCat(what, " exceeds the ", field_limit, "-byte field limit"));
    }
  }
  return got || !line->empty();
}

// A token-list field: an array of strings or numbers (absent or null: none).
// `*joined` gets them joined by single spaces, or nullopt when absent.
absl::Status JsonTokens(const nlohmann::json& obj, const std::string& key, const std::string& path, int64_t line,
                        std::vector<std::string>* out, std::optional<std::string>* joined) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Malformed(path, line, absl::StrCat("field '", key, "' must be an array of strings"));
  std::string all;
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json one = {{key, (*it)[i]}};
    ATTUNE_ASSIGN_OR_RETURN(std::optional<std::string> v, JsonValue(one, key, path, line));
    if (!v) return Malformed(path, line, absl::StrCat("field '", key, "': element ", i, " is empty or null"));
    absl::StrAppend(&all, i ? " " : "", *v);
    out->push_back(std::move(*v));
  }
  *joined = all;
  return absl::OkStatus();
}

// CoNLL: one token per line with its tag in the last whitespace-separated
// column; a blank line ends a sentence; -DOCSTART- lines are ignored.
absl::StatusOr<std::vector<Record>> ReadConll(std::FILE* f, const std::string& path, const ReaderOptions& o) {
  ByteSource in(f);
  std::vector<Record> out;
  Record r;
  std::string line;
  int64_t line_no = 0;
  auto flush = [&]() -> absl::Status {
    if (!r.words.empty()) {
      if (static_cast<int64_t>(out.size()) >= o.max_rows) {
        return absl::ResourceExhaustedError(absl::StrCat(path, ": more than ", o.max_rows, " sentences"));
      }
      r.text = absl::StrJoin(r.words, " ");
      r.label = absl::StrJoin(r.tags, " ");
      out.push_back(std::move(r));
    }
    r = Record();
    return absl::OkStatus();
  };
  while (true) {
    ATTUNE_ASSIGN_OR_RETURN(bool more, NextLine(in, static_cast<size_t>(o.max_field_bytes), path, line_no + 1, "line",
                                                o.max_field_bytes, &line));
    if (!more) break;
    ++line_no;
    if (line_no == 1 && absl::StartsWith(line, "\xEF\xBB\xBF")) line.erase(0, 3);
    std::vector<std::string> cols = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (cols.empty()) {
      ATTUNE_RETURN_IF_ERROR(flush());
      continue;
    }
    if (cols[0] == "-DOCSTART-") continue;
    if (cols.size() < 2) return Malformed(path, line_no, "expected a token and its tag");
    if (!IsValidUtf8(line)) return Malformed(path, line_no, "invalid UTF-8");
    if (r.words.empty()) r.line = line_no;
    r.words.push_back(cols.front());
    r.tags.push_back(cols.back());
    if (static_cast<int64_t>(r.words.size()) > o.max_field_bytes) {
      return Malformed(path, line_no, "sentence exceeds the field limit in tokens");
    }
  }
  ATTUNE_RETURN_IF_ERROR(flush());
  return out;
}

bool IsConll(const std::string& path) {
  return absl::EndsWith(path, ".conll") || absl::EndsWith(path, ".iob") || absl::EndsWith(path, ".bio");
}

absl::StatusOr<std::vector<Record>> ReadJsonl(std::FILE* f, const std::string& path, const ReaderOptions& o) {
  ByteSource src(f);
  std::vector<Record> out;
  std::string buf;
  int64_t line = 0;
  bool eof = false;
  while (!eof) {
    buf.clear();
    ++line;
    char c;
    bool got_any = false;
    while (true) {
      if (!src.Get(&c)) {
        eof = true;
        break;
      }
      got_any = true;
      if (c == '\n') break;
      buf.push_back(c);
      if (static_cast<int64_t>(buf.size()) > o.max_row_bytes) {
        return Malformed(path, line, absl::StrCat("line exceeds the ", o.max_row_bytes, "-byte row limit"));
      }
    }
    if (!got_any) break;
    if (line == 1 && buf.size() >= 3 && buf.compare(0, 3, "\xEF\xBB\xBF") == 0) buf.erase(0, 3);
    if (!buf.empty() && buf.back() == '\r') buf.pop_back();
    if (buf.find_first_not_of(" \t") == std::string::npos) continue;
    if (static_cast<int64_t>(out.size()) >= o.max_rows) {
      return absl::ResourceExhaustedError(absl::StrCat(path, ": more than ", o.max_rows, " rows"));
    }
    Record r;
    r.line = line;
    if (!IsValidUtf8(buf)) {
      // Kept as a row so that cleaning counts it under invalid_utf8.
      r.text = buf;
      r.label = "";
      out.push_back(std::move(r));
      continue;
    }
    nlohmann::json obj = ParseJsonLine(buf);
    if (obj.is_discarded()) return Malformed(path, line, "not valid JSON");
    if (!obj.is_object()) return Malformed(path, line, "a JSONL line must be a JSON object");
    if (o.whole_record) {
      r.text = std::move(buf);
      out.push_back(std::move(r));
      continue;
    }
    if (o.token_lists) {
      ATTUNE_RETURN_IF_ERROR(JsonTokens(obj, o.text_column, path, line, &r.words, &r.text));
      ATTUNE_RETURN_IF_ERROR(JsonTokens(obj, o.label_column, path, line, &r.tags, &r.label));
      for (const auto& t : r.tags) {
        if (t.find_first_of(" \t\r\n") != std::string::npos) {
          return Malformed(path, line, absl::StrCat("field '", o.label_column, "': tag '", t, "' holds whitespace"));
        }
      }
      out.push_back(std::move(r));
      continue;
    }
    auto text = JsonValue(obj, o.text_column, path, line);
    if (!text.ok()) return text.status();
    r.text = *text;
    if (!o.text_pair_column.empty()) {
      auto pair = JsonValue(obj, o.text_pair_column, path, line);
      if (!pair.ok()) return pair.status();
      r.text_pair = *pair;
    }
    auto label = o.label_list ? JsonLabelList(obj, o.label_column, path, line)
                              : JsonValue(obj, o.label_column, path, line);
    if (!label.ok()) return label.status();
    r.label = *label;
    for (const auto* v : {&r.text, &r.text_pair}) {
      if (v->has_value() && static_cast<int64_t>((*v)->size()) > o.max_field_bytes) {
        return Malformed(path, line, absl::StrCat("field exceeds the ", o.max_field_bytes, "-byte field limit"));
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Plain text: one record per paragraph (lines up to a blank line), its lines
// joined by '\n'. No label.
absl::Status ReadText(std::FILE* f, const std::string& path, const ReaderOptions& o, std::vector<Record>* out) {
  ByteSource in(f);
  std::string line, paragraph;
  int64_t line_no = 0, start = 0;
  auto flush = [&]() -> absl::Status {
    if (!paragraph.empty()) {
      if (static_cast<int64_t>(out->size()) >= o.max_rows) {
        return Malformed(path, start, absl::StrCat("more than ", o.max_rows, " paragraphs"));
      }
      Record r;
      r.line = start;
      r.text = std::move(paragraph);
      out->push_back(std::move(r));
    }
    paragraph.clear();
    return absl::OkStatus();
  };
  while (true) {
    // The paragraph so far counts against the limit, and the '\r' of CRLF does not.
    const size_t room = static_cast<size_t>(o.max_field_bytes + 1) - std::min(paragraph.size(), static_cast<size_t>(o.max_field_bytes));
    ATTUNE_ASSIGN_OR_RETURN(bool more, NextLine(in, room, path, line_no + 1, "paragraph", o.max_field_bytes, &line));
    if (!more) break;
    ++line_no;
    if (line_no == 1 && absl::StartsWith(line, "\xEF\xBB\xBF")) line.erase(0, 3);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      ATTUNE_RETURN_IF_ERROR(flush());
      continue;
    }
    if (paragraph.empty()) {
      start = line_no;
    } else {
      paragraph.push_back('\n');
    }
    paragraph += line;
  }
  return flush();
}

bool IsTextFile(const std::string& path) { return absl::EndsWith(path, ".txt"); }

}  // namespace

absl::StatusOr<std::vector<Record>> ReadRecords(const std::string& path, const ReaderOptions& options) {
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(path, ec);
  if (dir || IsTextFile(path)) {
    if (options.require_label) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": plain text (.txt, or a directory of .txt files) has no labels; only tasks masked_lm "
                             "and causal_lm (data.format text) read it"));
    }
    if (options.whole_record) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": conversations are read from JSONL, one record per line; plain text needs data.format text"));
    }
    std::vector<std::string> files;
    if (dir) {
      for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
        if (e.is_regular_file(ec) && IsTextFile(e.path().string())) files.push_back(e.path().string());
      }
      if (ec) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot list: ", ec.message()));
      std::sort(files.begin(), files.end());
      if (files.empty()) return absl::NotFoundError(absl::StrCat(path, ": directory holds no .txt files"));
    } else {
      files.push_back(path);
    }
    std::vector<Record> out;
    for (const auto& file : files) {
      std::unique_ptr<std::FILE, FileCloser> f(std::fopen(file.c_str(), "rb"));
      if (!f) return absl::NotFoundError(absl::StrCat("cannot open data file ", file));
      ATTUNE_RETURN_IF_ERROR(ReadText(f.get(), file, options, &out));
    }
    return out;
  }
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open data file ", path));
  if (IsConll(path)) {
    if (!options.token_lists) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": CoNLL files hold tagged tokens; only task token_classification reads them"));
    }
    return ReadConll(f.get(), path, options);
  }
  if (options.token_lists && !(absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json") ||
                               absl::EndsWith(path, ".ndjson"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": token_classification reads JSONL (a words array and a tags array) or CoNLL (.conll, .iob, .bio)"));
  }
  const bool jsonl = absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json") || absl::EndsWith(path, ".ndjson");
  if (options.whole_record && !jsonl) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": conversations are read from JSONL (.jsonl), one record per line"));
  }
  if (absl::EndsWith(path, ".csv")) return ReadCsv(f.get(), path, options, ',');
  if (absl::EndsWith(path, ".tsv")) return ReadCsv(f.get(), path, options, '\t');
  if (absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json") || absl::EndsWith(path, ".ndjson")) {
    return ReadJsonl(f.get(), path, options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": unknown data format (expected .csv, .tsv, .jsonl, .json, .ndjson, or .txt for masked_lm)"));
}

}  // namespace attune::worker::data
