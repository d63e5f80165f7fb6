// NOTE [chat templates]: a Jinja2 interpreter scoped as minja (llama.cpp's)
// scopes it: what chat templates use, with Python's value semantics, and a
// refusal naming the construct and the line for anything else. The lexer
// applies transformers' environment (trim_blocks, lstrip_blocks) and the
// `-`/`+` whitespace controls; the parser builds statements and expressions
// with Jinja2's precedence (parser.py: or, and, not, compare, + -, ~, * / //
// %, **, unary, then postfix . [] () | is); the evaluator walks them.
// Internally failures are exceptions (RenderError); they stop at
// ChatTemplate's methods, which return Status.

#include "worker/text/chat_template.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "worker/text/utf8.h"

namespace attune::worker::text {
namespace jinja {

struct RenderError {
  std::string message;
  int line = 0;
};
[[noreturn]] void Fail(int line, const std::string& message) { throw RenderError{message, line}; }

// ---------------------------------------------------------------- values

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, as Python's dict
struct Callable;

struct Value {
  enum Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };
  Kind kind = kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kString: UTF-8; kUndefined: the name, for errors
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Callable> fn;
  bool is_namespace = false;
  bool is_tuple = false;  // a kList that Python would hold as a tuple (prints with parentheses)

  static Value Undefined(std::string name = "") {
    Value v;
    v.s = std::move(name);
    return v;
  }
  static Value None() {
    Value v;
    v.kind = kNone;
    return v;
  }
  static Value Bool(bool x) {
    Value v;
    v.kind = kBool;
    v.b = x;
    return v;
  }
  static Value Int(int64_t x) {
    Value v;
    v.kind = kInt;
    v.i = x;
    return v;
  }
  static Value Float(double x) {
    Value v;
    v.kind = kFloat;
    v.f = x;
    return v;
  }
  static Value Str(std::string x) {
    Value v;
    v.kind = kString;
    v.s = std::move(x);
    return v;
  }
  static Value MakeList(List l = {}) {
    Value v;
    v.kind = kList;
    v.list = std::make_shared<List>(std::move(l));
    return v;
  }
  static Value MakeTuple(List l) {
    Value v = MakeList(std::move(l));
    v.is_tuple = true;
    return v;
  }
  static Value MakeDict(Dict d = {}) {
    Value v;
    v.kind = kDict;
    v.dict = std::make_shared<Dict>(std::move(d));
    return v;
  }
  bool defined() const { return kind != kUndefined; }
  bool is_number() const { return kind == kInt || kind == kFloat || kind == kBool; }
  double number() const { return kind == kFloat ? f : kind == kInt ? static_cast<double>(i) : b ? 1 : 0; }
  const Value* Find(const std::string& key) const {
    if (kind != kDict) return nullptr;
    for (const auto& [k, v] : *dict) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

using Args = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;
struct Callable {
  std::string name;
  std::function<Value(const Args&, const Kwargs&, int line)> call;
};

Value FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::None();
    case nlohmann::ordered_json::value_t::boolean: return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned: return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::Str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      for (const auto& x : j) l.push_back(FromJson(x));
      return Value::MakeList(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), FromJson(it.value()));
      return Value::MakeDict(std::move(d));
    }
    default: return Value::None();
  }
}


// Python's repr() of a float.
std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string digits;
  for (int p = 1; p <= 17; ++p) {
    digits = absl::StrFormat("%.*e", p - 1, d);
    if (std::strtod(digits.c_str(), nullptr) == d) break;
  }
  // digits: [-]D.DDDDe[+-]XX
  const size_t e = digits.find('e');
  const int exp = std::atoi(digits.c_str() + e + 1);
  std::string mant = digits.substr(0, e);
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  mant.erase(std::remove(mant.begin(), mant.end(), '.'), mant.end());  // the significant digits
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = mant.substr(0, 1);
    if (mant.size() > 1) out += "." + mant.substr(1);
    out += absl::StrFormat("e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  } else if (exp < 0) {
    out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + mant;
  } else {
    const size_t int_digits = static_cast<size_t>(exp) + 1;
    if (mant.size() <= int_digits) {
      out = mant + std::string(int_digits - mant.size(), '0') + ".0";
    } else {
      out = mant.substr(0, int_digits) + "." + mant.substr(int_digits);
    }
  }
  return (neg ? "-" : "") + out;
}

std::string StrRepr(const std::string& s) {
  // Python: single quotes unless the text has ' and no ".
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(q)) {
      out += std::string("\\") + q;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

std::string Repr(const Value& v);

// Python's str().
std::string Str(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "";
    case Value::kNone: return "None";
    case Value::kBool: return v.b ? "True" : "False";
    case Value::kInt: return std::to_string(v.i);
    case Value::kFloat: return FloatRepr(v.f);
    case Value::kString: return v.s;
    default: return Repr(v);
  }
}

std::string Repr(const Value& v) {
  switch (v.kind) {
    case Value::kString: return StrRepr(v.s);
    case Value::kList: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) absl::StrAppend(&out, k ? ", " : "", Repr((*v.list)[k]));
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Value::kDict: {
      if (v.is_namespace) return "<Namespace>";
      std::string out = "{";
      for (size_t k = 0; k < v.dict->size(); ++k) {
        absl::StrAppend(&out, k ? ", " : "", StrRepr((*v.dict)[k].first), ": ", Repr((*v.dict)[k].second));
      }
      return out + "}";
    }
    case Value::kCallable: return "<function " + v.fn->name + ">";
    default: return Str(v);
  }
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined:
    case Value::kNone: return false;
    case Value::kBool: return v.b;
    case Value::kInt: return v.i != 0;
    case Value::kFloat: return v.f != 0;
    case Value::kString: return !v.s.empty();
    case Value::kList: return !v.list->empty();
    case Value::kDict: return v.is_namespace || !v.dict->empty();
    case Value::kCallable: return true;
  }
  return false;
}

bool Equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Value::kFloat && b.kind != Value::kFloat) {
      return (a.kind == Value::kInt ? a.i : a.b) == (b.kind == Value::kInt ? b.i : b.b);
    }
    return a.number() == b.number();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::kUndefined:
    case Value::kNone: return true;
    case Value::kString: return a.s == b.s;
    case Value::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!Equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case Value::kDict:
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, v] : *a.dict) {
        const Value* o = b.Find(k);
        if (!o || !Equal(v, *o)) return false;
      }
      return true;
    default: return a.fn == b.fn;
  }
}

const char* TypeName(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "Undefined";
    case Value::kNone: return "NoneType";
    case Value::kBool: return "bool";
    case Value::kInt: return "int";
    case Value::kFloat: return "float";
    case Value::kString: return "str";
    case Value::kList: return "list";
    case Value::kDict: return "dict";
    case Value::kCallable: return "function";
  }
  return "?";
}

[[noreturn]] void FailUndefined(const Value& v, int line) {
  Fail(line, v.s.empty() ? "an undefined value was used" : absl::StrCat("'", v.s, "' is undefined"));
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys=False).
void ToJson(const Value& v, int indent, int depth, std::string* out, int line) {
  auto newline = [&](int d) {
    if (indent >= 0) absl::StrAppend(out, "\n", std::string(static_cast<size_t>(indent * d), ' '));
  };
  switch (v.kind) {
    case Value::kUndefined: FailUndefined(v, line);
    case Value::kNone: *out += "null"; return;
    case Value::kBool: *out += v.b ? "true" : "false"; return;
    case Value::kInt: *out += std::to_string(v.i); return;
    case Value::kFloat:
      *out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity") : FloatRepr(v.f);
      return;
    case Value::kString: {
      *out += '"';
      for (unsigned char c : v.s) {
        switch (c) {
          case '"': *out += "\\\""; break;
          case '\\': *out += "\\\\"; break;
          case '\n': *out += "\\n"; break;
          case '\r': *out += "\\r"; break;
          case '\t': *out += "\\t"; break;
          case '\b': *out += "\\b"; break;
          case '\f': *out += "\\f"; break;
          default:
            if (c < 0x20) {
              *out += absl::StrFormat("\\u%04x", c);
            } else {
              *out += static_cast<char>(c);
            }
        }
      }
      *out += '"';
      return;
    }
    case Value::kList: {
      *out += "[";
      if (v.list->empty()) {
        *out += "]";
        return;
      }
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) *out += indent >= 0 ? "," : ", ";
        newline(depth + 1);
        ToJson((*v.list)[k], indent, depth + 1, out, line);
      }
      newline(depth);
      *out += "]";
      return;
    }
    case Value::kDict: {
      *out += "{";
      if (v.dict->empty()) {
        *out += "}";
        return;
      }
      for (size_t k = 0; k < v.dict->size(); ++k) {
        if (k) *out += indent >= 0 ? "," : ", ";
        newline(depth + 1);
        ToJson(Value::Str((*v.dict)[k].first), -1, 0, out, line);
        *out += ": ";
        ToJson((*v.dict)[k].second, indent, depth + 1, out, line);
      }
      newline(depth);
      *out += "}";
      return;
    }
    case Value::kCallable: Fail(line, "tojson: a function is not JSON serializable");
  }
}

// ---------------------------------------------------------------- lexer

struct Token {
  enum Kind { kText, kExprOpen, kExprClose, kStmtOpen, kStmtClose, kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  int line = 0;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<Token> Lex(const std::string& source) {
  std::vector<Token> out;
  // keep_trailing_newline is off in Jinja2: one final newline is dropped.
  std::string src = source;
  if (absl::EndsWith(src, "\r\n")) {
    src.resize(src.size() - 2);
  } else if (absl::EndsWith(src, "\n")) {
    src.pop_back();
  }
  // First the template's pieces: text and tags, with their whitespace controls.
  struct Piece {
    bool tag;
    char kind;  // '{' expr, '%' stmt, '#' comment
    std::string body;
    bool strip_before = false, strip_after = false, keep_before = false, keep_after = false;
    int line;
  };
  std::vector<Piece> pieces;
  size_t i = 0;
  int line = 1;
  std::string text;
  int text_line = 1;
  auto flush_text = [&] {
    pieces.push_back({false, 0, text, false, false, false, false, text_line});
    text.clear();
  };
  while (i < src.size()) {
    if (src[i] == '{' && i + 1 < src.size() && (src[i + 1] == '{' || src[i + 1] == '%' || src[i + 1] == '#')) {
      const char kind = src[i + 1];
      const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
      flush_text();
      const int tag_line = line;
      size_t j = i + 2;
      Piece p{true, kind, "", false, false, false, false, tag_line};
      if (j < src.size() && src[j] == '-') {
        p.strip_before = true;
        ++j;
      } else if (j < src.size() && src[j] == '+') {
        p.keep_before = true;
        ++j;
      }
      // The tag's end, outside string literals (comments have none).
      size_t k = j;
      char quote = 0;
      for (; k + 1 < src.size(); ++k) {
        if (kind != '#') {
          if (quote) {
            if (src[k] == '\\') {
              ++k;
              continue;
            }
            if (src[k] == quote) quote = 0;
            continue;
          }
          if (src[k] == '\'' || src[k] == '"') {
            quote = src[k];
            continue;
          }
        }
        if (src.compare(k, 2, close) == 0) break;
      }
      if (k + 1 >= src.size()) {
        if (quote) Fail(tag_line, "a string literal is not closed");
        Fail(tag_line, absl::StrCat("a tag opened with '{", std::string(1, kind), "' is not closed"));
      }
      size_t body_end = k;
      if (body_end > j && src[body_end - 1] == '-') {
        p.strip_after = true;
        --body_end;
      } else if (body_end > j && src[body_end - 1] == '+') {
        p.keep_after = true;
        --body_end;
      }
      p.body = src.substr(j, body_end - j);
      for (size_t c = i; c < k + 2; ++c) line += src[c] == '\n';
      pieces.push_back(p);
      i = k + 2;
      text_line = line;
      continue;
    }
    if (src[i] == '\n') ++line;
    text += src[i++];
  }
  flush_text();
  // Whitespace: `-` strips all of it beside the tag; lstrip_blocks removes
  // the spaces and tabs before a block or comment tag that starts its line;
  // trim_blocks removes the newline right after one.
  for (size_t k = 0; k < pieces.size(); ++k) {
    Piece& p = pieces[k];
    if (p.tag) continue;
    const Piece* before = k > 0 ? &pieces[k - 1] : nullptr;
    const Piece* after = k + 1 < pieces.size() ? &pieces[k + 1] : nullptr;
    // Whether this text starts a line: the template's start, or the tag
    // before it ended by taking a newline (trim_blocks, or `-`).
    bool line_starting = k == 0;
    if (before && before->strip_after) {
      size_t n = 0;
      while (n < p.body.size() && IsSpace(p.body[n])) ++n;
      line_starting = n > 0 && p.body[n - 1] == '\n';
      p.body.erase(0, n);
    } else if (before && before->kind != '{' && !before->keep_after) {
      if (absl::StartsWith(p.body, "\r\n")) {
        p.body.erase(0, 2);
        line_starting = true;
      } else if (absl::StartsWith(p.body, "\n")) {
        p.body.erase(0, 1);
        line_starting = true;
      }
    }
    if (after && after->strip_before) {
      size_t n = p.body.size();
      while (n > 0 && IsSpace(p.body[n - 1])) --n;
      p.body.erase(n);
    } else if (after && after->kind != '{' && !after->keep_before) {
      const size_t nl = p.body.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting) {
        bool blank = true;
        for (size_t c = l_pos; c < p.body.size(); ++c) blank &= p.body[c] == ' ' || p.body[c] == '\t';
        if (blank) p.body.erase(l_pos);
      }
    }
  }
  for (const Piece& p : pieces) {
    if (!p.tag) {
      if (!p.body.empty()) out.push_back({Token::kText, p.body, p.line});
      continue;
    }
    if (p.kind == '#') continue;
    out.push_back({p.kind == '{' ? Token::kExprOpen : Token::kStmtOpen, "", p.line});
    // The expression tokens.
    const std::string& b = p.body;
    int ln = p.line;
    size_t c = 0;
    while (c < b.size()) {
      const char ch = b[c];
      if (IsSpace(ch)) {
        ln += ch == '\n';
        ++c;
        continue;
      }
      if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '_') {
        size_t e = c;
        while (e < b.size() && (std::isalnum(static_cast<unsigned char>(b[e])) || b[e] == '_')) ++e;
        out.push_back({Token::kName, b.substr(c, e - c), ln});
        c = e;
        continue;
      }
      if (std::isdigit(static_cast<unsigned char>(ch))) {
        size_t e = c;
        bool is_float = false;
        while (e < b.size() && (std::isdigit(static_cast<unsigned char>(b[e])) || b[e] == '_')) ++e;
        if (e + 1 < b.size() && b[e] == '.' && std::isdigit(static_cast<unsigned char>(b[e + 1]))) {
          is_float = true;
          ++e;
          while (e < b.size() && std::isdigit(static_cast<unsigned char>(b[e]))) ++e;
        }
        if (e < b.size() && (b[e] == 'e' || b[e] == 'E')) {
          size_t x = e + 1;
          if (x < b.size() && (b[x] == '+' || b[x] == '-')) ++x;
          if (x < b.size() && std::isdigit(static_cast<unsigned char>(b[x]))) {
            is_float = true;
            e = x;
            while (e < b.size() && std::isdigit(static_cast<unsigned char>(b[e]))) ++e;
          }
        }
        std::string num = b.substr(c, e - c);
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        out.push_back({is_float ? Token::kFloat : Token::kInt, num, ln});
        c = e;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        std::string s;
        size_t e = c + 1;
        for (; e < b.size() && b[e] != ch; ++e) {
          if (b[e] == '\\' && e + 1 < b.size()) {
            const char n = b[++e];
            switch (n) {
              case 'n': s += '\n'; break;
              case 't': s += '\t'; break;
              case 'r': s += '\r'; break;
              case '\\': s += '\\'; break;
              case '\'': s += '\''; break;
              case '"': s += '"'; break;
              case '0': s += '\0'; break;
              case 'u':
              case 'U':
              case 'x': {
                const size_t digits = n == 'x' ? 2 : n == 'u' ? 4 : 8;
                if (e + digits >= b.size()) Fail(ln, "a \\" + std::string(1, n) + " escape is cut short");
                uint32_t cp = 0;
                for (size_t d = 1; d <= digits; ++d) {
                  const char h = b[e + d];
                  const int v = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                                : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                                : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                                            : -1;
                  if (v < 0) Fail(ln, "a \\" + std::string(1, n) + " escape with a non-hex digit");
                  cp = cp * 16 + static_cast<uint32_t>(v);
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) Fail(ln, "an escape that is not a code point");
                icu::UnicodeString(static_cast<UChar32>(cp)).toUTF8String(s);
                e += digits;
                break;
              }
              default: s += '\\'; s += n;
            }
            continue;
          }
          if (b[e] == '\n') ++ln;
          s += b[e];
        }
        if (e >= b.size()) Fail(ln, "a string literal is not closed");
        out.push_back({Token::kString, s, ln});
        c = e + 1;
        continue;
      }
      static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(",
                                   ")", "[", "]", "{", "}", ".", ",", ":", "|", "="};
      bool matched = false;
      for (const char* op : kOps) {
        if (b.compare(c, std::strlen(op), op) == 0) {
          out.push_back({Token::kOp, op, ln});
          c += std::strlen(op);
          matched = true;
          break;
        }
      }
      if (!matched) Fail(ln, absl::StrCat("unexpected character '", std::string(1, ch), "' in a tag"));
    }
    out.push_back({p.kind == '{' ? Token::kExprClose : Token::kStmtClose, "", ln});
  }
  out.push_back({Token::kEnd, "", line});
  return out;
}

// ---------------------------------------------------------------- syntax tree

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;
struct Expr {
  enum Kind {
    kLiteral, kName, kList, kDict, kTuple, kAttr, kItem, kSlice, kCall, kFilter, kTest, kUnary, kBinary, kCompare,
    kAnd, kOr, kNot, kCond, kConcat
  } kind;
  int line = 0;
  Value literal;
  std::string name;  // kName, kAttr, kFilter, kTest; kUnary/kBinary: the operator
  std::vector<ExprPtr> args;  // operands, items, call and filter arguments (the object first)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: between consecutive operands (a chain: a < b < c)
  bool negated = false;          // kTest: is not
};

struct Stmt;
using Body = std::vector<std::shared_ptr<Stmt>>;
struct Stmt {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kMacro, kBreak, kContinue, kBlock } kind;
  int line = 0;
  std::string text;
  ExprPtr expr;                                  // output, set value, for iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body body, else_body;
  std::vector<std::string> targets;  // for / set names (set: name, or ns.attr as "ns" + attr)
  std::string attr;                  // set ns.attr
  ExprPtr filter;                    // for ... if cond
  std::string name;                  // macro
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and defaults (null: none)
};

struct Template {
  Body body;
  std::string name;
  ChatTemplateLimits limits;
};

// ---------------------------------------------------------------- parser

const std::set<std::string>& KnownFilters() {
  static const auto* s = new std::set<std::string>{
      "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent",
      "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr",
      "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson",
      "trim", "unique", "upper", "wordcount"};
  return *s;
}
const std::set<std::string>& KnownTests() {
  static const auto* s = new std::set<std::string>{
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "gt", "in",
      "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence",
      "string", "true", "undefined", "upper"};
  return *s;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body ParseAll() {
    Body b = ParseBody({});
    if (Peek().kind != Token::kEnd) Fail(Peek().line, "unexpected tag");
    return b;
  }

 private:
  const Token& Peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  Token Next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  bool IsOp(const char* op, size_t ahead = 0) const { return Peek(ahead).kind == Token::kOp && Peek(ahead).text == op; }
  bool IsName(const char* n, size_t ahead = 0) const { return Peek(ahead).kind == Token::kName && Peek(ahead).text == n; }
  void ExpectOp(const char* op) {
    if (!IsOp(op)) Fail(Peek().line, absl::StrCat("expected '", op, "'", Found()));
    ++pos_;
  }
  std::string Found() const {
    const Token& k = Peek();
    if (k.kind == Token::kStmtClose || k.kind == Token::kExprClose) return ", found the end of the tag";
    if (k.kind == Token::kEnd) return ", found the end of the template";
    return absl::StrCat(", found '", k.text, "'");
  }
  std::string ExpectName() {
    if (Peek().kind != Token::kName) Fail(Peek().line, absl::StrCat("expected a name", Found()));
    return Next().text;
  }
  void ExpectStmtClose() {
    if (Peek().kind != Token::kStmtClose) Fail(Peek().line, absl::StrCat("expected the end of the tag", Found()));
    ++pos_;
  }

  // Statements until one of `ends` (a block tag name) starts; that tag is left unread.
  Body ParseBody(const std::set<std::string>& ends) {
    if (++depth_ > 256) Fail(Peek().line, "blocks nest deeper than 256");
    Body body;
    while (true) {
      const Token& k = Peek();
      if (k.kind == Token::kEnd) {
        if (!ends.empty()) {
          std::string closing = *ends.rbegin();
          for (const auto& e : ends) {
            if (absl::StartsWith(e, "end")) closing = e;
          }
          Fail(k.line, absl::StrCat("a block is not closed (expected ", closing, ")"));
        }
        break;
      }
      if (k.kind == Token::kText) {
        auto s = std::make_shared<Stmt>();
        s->kind = Stmt::kText;
        s->text = k.text;
        s->line = k.line;
        body.push_back(s);
        ++pos_;
        continue;
      }
      if (k.kind == Token::kExprOpen) {
        ++pos_;
        auto s = std::make_shared<Stmt>();
        s->kind = Stmt::kOutput;
        s->line = k.line;
        s->expr = ParseExpr();
        if (Peek().kind != Token::kExprClose) Fail(Peek().line, absl::StrCat("expected '}}'", Found()));
        ++pos_;
        body.push_back(s);
        continue;
      }
      if (k.kind == Token::kStmtOpen) {
        const Token& n = Peek(1);
        if (n.kind == Token::kName && ends.count(n.text)) break;
        ++pos_;
        body.push_back(ParseStatement());
        continue;
      }
      Fail(k.line, "unexpected token");
    }
    --depth_;
    return body;
  }

  std::shared_ptr<Stmt> ParseStatement() {
    const int line = Peek().line;
    const std::string kw = ExpectName();
    auto s = std::make_shared<Stmt>();
    s->line = line;
    if (kw == "if") {
      s->kind = Stmt::kIf;
      ExprPtr cond = ParseExpr();
      ExpectStmtClose();
      while (true) {
        Body b = ParseBody({"elif", "else", "endif"});
        s->branches.emplace_back(cond, b);
        ++pos_;  // {%
        const std::string which = ExpectName();
        if (which == "elif") {
          cond = ParseExpr();
          ExpectStmtClose();
          continue;
        }
        if (which == "else") {
          ExpectStmtClose();
          s->else_body = ParseBody({"endif"});
          ++pos_;
          ExpectName();
        }
        ExpectStmtClose();
        break;
      }
      return s;
    }
    if (kw == "for") {
      s->kind = Stmt::kFor;
      s->targets.push_back(ExpectName());
      while (IsOp(",")) {
        ++pos_;
        s->targets.push_back(ExpectName());
      }
      if (!IsName("in")) Fail(Peek().line, absl::StrCat("expected 'in'", Found()));
      ++pos_;
      s->expr = ParseExpr(/*with_condition=*/false);
      if (IsName("if")) {
        ++pos_;
        s->filter = ParseExpr(false);
      }
      if (IsName("recursive")) Fail(Peek().line, "recursive loops are not supported");
      ExpectStmtClose();
      s->body = ParseBody({"else", "endfor"});
      ++pos_;
      if (ExpectName() == "else") {
        ExpectStmtClose();
        s->else_body = ParseBody({"endfor"});
        ++pos_;
        ExpectName();
      }
      ExpectStmtClose();
      return s;
    }
    if (kw == "set") {
      s->kind = Stmt::kSet;
      s->targets.push_back(ExpectName());
      if (IsOp(".")) {
        ++pos_;
        s->attr = ExpectName();
      }
      while (IsOp(",")) {
        ++pos_;
        s->targets.push_back(ExpectName());
      }
      if (!IsOp("=")) Fail(Peek().line, "block set ({% set x %}...{% endset %}) is not supported");
      ++pos_;
      s->expr = ParseExpr();
      ExpectStmtClose();
      return s;
    }
    if (kw == "macro") {
      s->kind = Stmt::kMacro;
      s->name = ExpectName();
      ExpectOp("(");
      while (!IsOp(")")) {
        std::string p = ExpectName();
        ExprPtr def;
        if (IsOp("=")) {
          ++pos_;
          def = ParseExpr();
        }
        s->params.emplace_back(p, def);
        if (!IsOp(")")) ExpectOp(",");
      }
      ++pos_;
      ExpectStmtClose();
      s->body = ParseBody({"endmacro"});
      ++pos_;
      ExpectName();
      ExpectStmtClose();
      return s;
    }
    if (kw == "break" || kw == "continue") {  // loopcontrols; outside a loop: refused when run
      s->kind = kw == "break" ? Stmt::kBreak : Stmt::kContinue;
      ExpectStmtClose();
      return s;
    }
    if (kw == "generation") {
      // transformers' AssistantTracker block: rendered as its content.
      s->kind = Stmt::kBlock;
      ExpectStmtClose();
      s->body = ParseBody({"endgeneration"});
      ++pos_;
      ExpectName();
      ExpectStmtClose();
      return s;
    }
    Fail(line, absl::StrCat("the '", kw, "' statement is not supported by Attune's chat-template interpreter"));
  }

 public:
  // Bounds the recursion of nested expressions ((((x)))), not not x, - - x.
  struct Nesting {
    Nesting(Parser& p, int line) : p_(p) {
      if (++p_.expr_depth_ > 200) Fail(line, "expressions nest deeper than 200");
    }
    ~Nesting() { --p_.expr_depth_; }
    Parser& p_;
  };

  ExprPtr ParseExpr(bool with_condition = true) {
    Nesting n(*this, Peek().line);
    ExprPtr e = ParseOr();
    if (with_condition && IsName("if")) {
      const int line = Next().line;
      auto c = std::make_shared<Expr>();
      c->kind = Expr::kCond;
      c->line = line;
      ExprPtr cond = ParseOr();
      ExprPtr other;
      if (IsName("else")) {
        ++pos_;
        other = ParseExpr();
      }
      c->args = {cond, e, other};
      return c;
    }
    return e;
  }

 private:
  ExprPtr Node(Expr::Kind kind, int line, std::vector<ExprPtr> args, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->kind = kind;
    e->line = line;
    e->args = std::move(args);
    e->name = std::move(name);
    return e;
  }
  ExprPtr ParseOr() {
    ExprPtr e = ParseAnd();
    while (IsName("or")) {
      const int line = Next().line;  // consumed before the right operand is parsed
      e = Node(Expr::kOr, line, {e, ParseAnd()});
    }
    return e;
  }
  ExprPtr ParseAnd() {
    ExprPtr e = ParseNot();
    while (IsName("and")) {
      const int line = Next().line;  // consumed before the right operand is parsed
      e = Node(Expr::kAnd, line, {e, ParseNot()});
    }
    return e;
  }
  ExprPtr ParseNot() {
    Nesting n(*this, Peek().line);
    if (IsName("not")) {
      const int line = Next().line;
      return Node(Expr::kNot, line, {ParseNot()});
    }
    return ParseCompare();
  }
  ExprPtr ParseCompare() {
    ExprPtr first = ParseMath1();
    auto chain = std::make_shared<Expr>();
    chain->kind = Expr::kCompare;
    chain->line = first->line;
    chain->args = {first};
    while (true) {
      std::string op;
      if (Peek().kind == Token::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Peek().text;
        ++pos_;
      } else if (IsName("in")) {
        op = "in";
        ++pos_;
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        pos_ += 2;
      } else {
        break;
      }
      chain->ops.push_back(op);
      chain->args.push_back(ParseMath1());
    }
    return chain->ops.empty() ? first : chain;
  }
  ExprPtr ParseMath1() {
    ExprPtr e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token op = Next();
      e = Node(Expr::kBinary, op.line, {e, ParseConcat()}, op.text);
    }
    return e;
  }
  ExprPtr ParseConcat() {
    ExprPtr e = ParseMath2();
    while (IsOp("~")) {
      const int line = Next().line;  // consumed before the right operand is parsed
      e = Node(Expr::kConcat, line, {e, ParseMath2()});
    }
    return e;
  }
  ExprPtr ParseMath2() {
    ExprPtr e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token op = Next();
      e = Node(Expr::kBinary, op.line, {e, ParsePow()}, op.text);
    }
    return e;
  }
  ExprPtr ParsePow() {
    ExprPtr e = ParseUnary(true);
    while (IsOp("**")) {
      const Token op = Next();
      e = Node(Expr::kBinary, op.line, {e, ParseUnary(true)}, "**");
    }
    return e;
  }
  ExprPtr ParseUnary(bool with_filter) {
    Nesting n(*this, Peek().line);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token op = Next();
      e = Node(Expr::kUnary, op.line, {ParseUnary(false)}, op.text);
    } else {
      e = ParsePostfix(ParsePrimary());
    }
    if (with_filter) e = ParseFilters(e);
    return e;
  }
  ExprPtr ParsePrimary() {
    const Token k = Next();
    auto lit = [&](Value v) {
      auto e = std::make_shared<Expr>();
      e->kind = Expr::kLiteral;
      e->line = k.line;
      e->literal = std::move(v);
      return e;
    };
    switch (k.kind) {
      case Token::kString: {
        std::string s = k.text;
        while (Peek().kind == Token::kString) s += Next().text;  // adjacent literals join
        return lit(Value::Str(s));
      }
      case Token::kInt:
        try {
          return lit(Value::Int(std::stoll(k.text)));
        } catch (...) {
          Fail(k.line, absl::StrCat("the integer ", k.text, " is out of range"));
        }
      case Token::kFloat: return lit(Value::Float(std::strtod(k.text.c_str(), nullptr)));
      case Token::kName: {
        if (k.text == "true" || k.text == "True") return lit(Value::Bool(true));
        if (k.text == "false" || k.text == "False") return lit(Value::Bool(false));
        if (k.text == "none" || k.text == "None") return lit(Value::None());
        auto e = std::make_shared<Expr>();
        e->kind = Expr::kName;
        e->line = k.line;
        e->name = k.text;
        return e;
      }
      case Token::kOp:
        if (k.text == "(") {
          if (IsOp(")")) {
            ++pos_;
            return Node(Expr::kTuple, k.line, {});
          }
          ExprPtr first = ParseExpr();
          if (IsOp(",")) {
            std::vector<ExprPtr> items = {first};
            while (IsOp(",")) {
              ++pos_;
              if (IsOp(")")) break;
              items.push_back(ParseExpr());
            }
            ExpectOp(")");
            return Node(Expr::kTuple, k.line, items);
          }
          ExpectOp(")");
          return first;
        }
        if (k.text == "[") {
          std::vector<ExprPtr> items;
          while (!IsOp("]")) {
            items.push_back(ParseExpr());
            if (!IsOp("]")) ExpectOp(",");
          }
          ++pos_;
          return Node(Expr::kList, k.line, items);
        }
        if (k.text == "{") {
          std::vector<ExprPtr> items;  // key, value, key, value...
          while (!IsOp("}")) {
            items.push_back(ParseExpr());
            ExpectOp(":");
            items.push_back(ParseExpr());
            if (!IsOp("}")) ExpectOp(",");
          }
          ++pos_;
          return Node(Expr::kDict, k.line, items);
        }
        break;
      default: break;
    }
    Fail(k.line, absl::StrCat("unexpected '", k.text.empty() ? "end of tag" : k.text, "' in an expression"));
  }
  void ParseCallArgs(const std::shared_ptr<Expr>& e) {
    // After '(' : positional, then name=value.
    while (!IsOp(")")) {
      if (Peek().kind == Token::kName && IsOp("=", 1)) {
        std::string k = Next().text;
        ++pos_;
        e->kwargs.emplace_back(k, ParseExpr());
      } else {
        if (!e->kwargs.empty()) Fail(Peek().line, "a positional argument after a keyword argument");
        e->args.push_back(ParseExpr());
      }
      if (!IsOp(")")) ExpectOp(",");
    }
    ++pos_;
  }
  ExprPtr ParsePostfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        const int line = Next().line;
        if (Peek().kind == Token::kInt) {
          e = Node(Expr::kItem, line, {e, Node(Expr::kLiteral, line, {})});
          const std::string digits = Next().text;
          int64_t index = 0;
          for (char d : digits) {
            if (index > (INT64_MAX - 9) / 10) Fail(line, absl::StrCat("the index ", digits, " is out of range"));
            index = index * 10 + (d - '0');
          }
          e->args[1]->literal = Value::Int(index);
          continue;
        }
        e = Node(Expr::kAttr, line, {e}, ExpectName());
      } else if (IsOp("[")) {
        const int line = Next().line;
        ExprPtr parts[3];
        bool slice = false;
        for (int p = 0; p < 3; ++p) {
          if (!IsOp(":") && !IsOp("]")) parts[p] = ParseExpr();
          if (p < 2 && IsOp(":")) {
            ++pos_;
            slice = true;
          } else {
            break;
          }
        }
        ExpectOp("]");
        if (!slice && !parts[0]) Fail(line, "an empty subscript []");
        e = slice ? Node(Expr::kSlice, line, {e, parts[0], parts[1], parts[2]}) : Node(Expr::kItem, line, {e, parts[0]});
      } else if (IsOp("(")) {
        const int line = Next().line;
        auto call = std::make_shared<Expr>();
        call->kind = Expr::kCall;
        call->line = line;
        call->args = {e};
        ParseCallArgs(call);
        e = call;
      } else {
        return e;
      }
    }
  }
  ExprPtr ParseFilters(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        const int line = Next().line;
        const std::string name = ExpectName();
        if (!KnownFilters().count(name)) {
          Fail(line, absl::StrCat("the filter '", name, "' is not supported by Attune's chat-template interpreter"));
        }
        auto f = std::make_shared<Expr>();
        f->kind = Expr::kFilter;
        f->line = line;
        f->name = name;
        f->args = {e};
        if (IsOp("(")) {
          ++pos_;
          ParseCallArgs(f);
        }
        e = f;
      } else if (IsName("is")) {
        const int line = Next().line;
        bool negated = false;
        if (IsName("not")) {
          ++pos_;
          negated = true;
        }
        const std::string name = ExpectName();
        if (!KnownTests().count(name)) {
          Fail(line, absl::StrCat("the test '", name, "' is not supported by Attune's chat-template interpreter"));
        }
        auto t = std::make_shared<Expr>();
        t->kind = Expr::kTest;
        t->line = line;
        t->name = name;
        t->negated = negated;
        t->args = {e};
        if (IsOp("(")) {
          ++pos_;
          ParseCallArgs(t);
        } else if (TakesArgument(name) && Peek().kind != Token::kStmtClose && Peek().kind != Token::kExprClose &&
                   !(Peek().kind == Token::kOp && Peek().text != "(" && Peek().text != "[" && Peek().text != "{")) {
          t->args.push_back(ParsePostfix(ParsePrimary()));  // `is divisibleby 3`, `is sameas x`
        }
        e = t;
      } else {
        return e;
      }
    }
  }

  static bool TakesArgument(const std::string& test) {
    static const auto* s = new std::set<std::string>{"divisibleby", "eq", "equalto", "sameas", "ne", "in",
                                                     "lt", "le", "gt", "ge"};
    return s->count(test) > 0;
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
  int expr_depth_ = 0;
};

// ---------------------------------------------------------------- evaluator

struct LoopControl {
  enum { kNone, kBreak, kContinue } kind = kNone;
};

class Renderer {
 public:
  Renderer(const Template& t, int64_t now) : t_(t), now_(now) {}

  std::string Run(const nlohmann::ordered_json& context) {
    scopes_.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it) scopes_.back()[it.key()] = FromJson(it.value());
    InstallGlobals();
    std::string out;
    LoopControl lc;
    Exec(t_.body, &out, &lc);
    return out;
  }

 private:
  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    auto g = globals_.find(name);
    if (g != globals_.end()) return g->second;
    return Value::Undefined(name);
  }

  Value Builtin(const std::string& name, std::function<Value(const Args&, const Kwargs&, int)> fn) {
    Value v;
    v.kind = Value::kCallable;
    v.fn = std::make_shared<Callable>(Callable{name, std::move(fn)});
    return v;
  }

  void InstallGlobals() {
    globals_["raise_exception"] = Builtin("raise_exception", [](const Args& a, const Kwargs&, int line) -> Value {
      Fail(line, absl::StrCat("the template raised an exception: ", a.empty() ? "" : Str(a[0])));
    });
    globals_["strftime_now"] = Builtin("strftime_now", [this](const Args& a, const Kwargs&, int line) -> Value {
      if (a.size() != 1 || a[0].kind != Value::kString) Fail(line, "strftime_now takes one format string");
      const std::time_t now = now_ ? static_cast<std::time_t>(now_) : std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[512];
      const size_t n = std::strftime(buf, sizeof buf, a[0].s.c_str(), &tm);
      return Value::Str(std::string(buf, n));
    });
    globals_["namespace"] = Builtin("namespace", [](const Args& a, const Kwargs& kw, int line) -> Value {
      Value ns = Value::MakeDict();
      ns.is_namespace = true;
      for (const Value& x : a) {
        if (x.kind != Value::kDict) Fail(line, "namespace() takes a mapping or keyword arguments");
        for (const auto& kv : *x.dict) ns.dict->push_back(kv);
      }
      for (const auto& kv : kw) ns.dict->push_back(kv);
      return ns;
    });
    globals_["dict"] = Builtin("dict", [](const Args& a, const Kwargs& kw, int line) -> Value {
      Value d = Value::MakeDict();
      for (const Value& x : a) {
        if (x.kind != Value::kDict) Fail(line, "dict() takes a mapping or keyword arguments");
        for (const auto& kv : *x.dict) d.dict->push_back(kv);
      }
      for (const auto& kv : kw) d.dict->push_back(kv);
      return d;
    });
    globals_["range"] = Builtin("range", [this](const Args& a, const Kwargs&, int line) -> Value {
      int64_t start = 0, stop = 0, step = 1;
      for (const Value& x : a) {
        if (x.kind != Value::kInt) Fail(line, "range() takes integers");
      }
      if (a.size() == 1) {
        stop = a[0].i;
      } else if (a.size() == 2 || a.size() == 3) {
        start = a[0].i;
        stop = a[1].i;
        if (a.size() == 3) step = a[2].i;
      } else {
        Fail(line, "range() takes 1 to 3 arguments");
      }
      if (step == 0) Fail(line, "range() step must not be zero");
      List l;
      for (int64_t v = start; step > 0 ? v < stop : v > stop; v += step) {
        if (static_cast<int64_t>(l.size()) >= t_.limits.max_loop_iterations) Fail(line, "range() is too long");
        l.push_back(Value::Int(v));
      }
      return Value::MakeList(std::move(l));
    });
  }

  // Statements. Returns at a break or continue (`lc`).
  void Exec(const Body& body, std::string* out, LoopControl* lc) {
    for (const auto& s : body) {
      if (lc->kind != LoopControl::kNone) return;
      switch (s->kind) {
        case Stmt::kText: Append(out, s->text, s->line); break;
        case Stmt::kOutput: Append(out, Str(Printable(Eval(*s->expr), s->line)), s->line); break;
        case Stmt::kIf: {
          bool taken = false;
          for (const auto& [cond, b] : s->branches) {
            if (Truthy(Eval(*cond))) {
              Exec(b, out, lc);
              taken = true;
              break;
            }
          }
          if (!taken) Exec(s->else_body, out, lc);
          break;
        }
        case Stmt::kFor: ExecFor(*s, out, lc); break;
        case Stmt::kSet: ExecSet(*s); break;
        case Stmt::kMacro: DefineMacro(s); break;
        case Stmt::kBreak:
          if (loop_depth_ == 0) Fail(s->line, "'break' outside a loop");
          lc->kind = LoopControl::kBreak;
          return;
        case Stmt::kContinue:
          if (loop_depth_ == 0) Fail(s->line, "'continue' outside a loop");
          lc->kind = LoopControl::kContinue;
          return;
        case Stmt::kBlock: Exec(s->body, out, lc); break;
      }
    }
  }

  const Value& Printable(const Value& v, int line) {
    if (v.kind == Value::kCallable) Fail(line, "a function was printed");
    return v;
  }

  void Append(std::string* out, const std::string& s, int line) {
    if (static_cast<int64_t>(out->size() + s.size()) > t_.limits.max_output_bytes) {
      Fail(line, absl::StrCat("the output exceeds ", t_.limits.max_output_bytes, " bytes"));
    }
    *out += s;
  }

  List Iterate(const Value& v, int line) {
    switch (v.kind) {
      case Value::kUndefined: return {};
      case Value::kList: return *v.list;
      case Value::kDict: {
        List keys;
        for (const auto& kv : *v.dict) keys.push_back(Value::Str(kv.first));
        return keys;
      }
      case Value::kString: {
        List chars;
        for (auto& c : SplitCodePoints(v.s)) chars.push_back(Value::Str(c));
        return chars;
      }
      default: Fail(line, absl::StrCat("'", TypeName(v), "' object is not iterable"));
    }
  }

  void Bind(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = v;
      return;
    }
    List parts = Iterate(v, line);
    if (parts.size() != targets.size()) {
      Fail(line, absl::StrCat("cannot unpack ", parts.size(), " values into ", targets.size(), " names"));
    }
    for (size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = parts[k];
  }

  void ExecFor(const Stmt& s, std::string* out, LoopControl* outer) {
    List items = Iterate(Eval(*s.expr), s.line);
    scopes_.emplace_back();
    if (s.filter) {
      List kept;
      for (const Value& v : items) {
        Bind(s.targets, v, s.line);
        if (Truthy(Eval(*s.filter))) kept.push_back(v);
      }
      items = std::move(kept);
    }
    ++loop_depth_;
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      if (++iterations_ > t_.limits.max_loop_iterations) Fail(s.line, "too many loop iterations");
      Bind(s.targets, items[static_cast<size_t>(k)], s.line);
      Dict loop = {{"index", Value::Int(k + 1)},
                   {"index0", Value::Int(k)},
                   {"revindex", Value::Int(n - k)},
                   {"revindex0", Value::Int(n - k - 1)},
                   {"first", Value::Bool(k == 0)},
                   {"last", Value::Bool(k == n - 1)},
                   {"length", Value::Int(n)},
                   {"previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value::Undefined("previtem")},
                   {"nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value::Undefined("nextitem")}};
      scopes_.back()["loop"] = Value::MakeDict(std::move(loop));
      LoopControl lc;
      Exec(s.body, out, &lc);
      if (lc.kind == LoopControl::kBreak) break;
    }
    --loop_depth_;
    scopes_.pop_back();
    if (n == 0) Exec(s.else_body, out, outer);
  }

  void ExecSet(const Stmt& s) {
    Value v = Eval(*s.expr);
    if (!s.attr.empty()) {
      Value ns = Lookup(s.targets[0]);
      if (ns.kind != Value::kDict || !ns.is_namespace) {
        Fail(s.line, absl::StrCat("cannot assign attribute '", s.attr, "' of '", s.targets[0], "': not a namespace"));
      }
      for (auto& kv : *ns.dict) {
        if (kv.first == s.attr) {
          kv.second = v;
          return;
        }
      }
      ns.dict->emplace_back(s.attr, v);
      return;
    }
    Bind(s.targets, v, s.line);
  }

  void DefineMacro(const std::shared_ptr<Stmt>& s) {
    std::shared_ptr<Stmt> macro = s;
    scopes_.back()[s->name] = Builtin(s->name, [this, macro](const Args& a, const Kwargs& kw, int line) -> Value {
      if (++call_depth_ > t_.limits.max_call_depth) Fail(line, "macro calls nest too deep");
      if (a.size() > macro->params.size()) Fail(line, absl::StrCat("macro '", macro->name, "' takes ", macro->params.size(), " arguments"));
      std::map<std::string, Value> frame;
      for (size_t k = 0; k < macro->params.size(); ++k) {
        const auto& [pname, def] = macro->params[k];
        Value v = Value::Undefined(pname);
        if (k < a.size()) {
          v = a[k];
        } else {
          bool found = false;
          for (const auto& [kname, kv] : kw) {
            if (kname == pname) {
              v = kv;
              found = true;
            }
          }
          if (!found && def) v = Eval(*def);
        }
        frame[pname] = v;
      }
      scopes_.push_back(std::move(frame));
      std::string out;
      LoopControl lc;
      const int saved = loop_depth_;
      loop_depth_ = 0;
      Exec(macro->body, &out, &lc);
      loop_depth_ = saved;
      scopes_.pop_back();
      --call_depth_;
      return Value::Str(out);
    });
  }

  // Attribute access as Jinja's sandbox does it: a mapping's key (its
  // methods first for items/keys/values/get), a string's methods.
  Value GetAttr(const Value& obj, const std::string& name, int line) {
    if (obj.kind == Value::kUndefined) FailUndefined(obj, line);
    if (obj.kind == Value::kDict) {
      if (!obj.is_namespace && (name == "items" || name == "keys" || name == "values" || name == "get")) {
        return Method(obj, name, line);
      }
      const Value* v = obj.Find(name);
      return v ? *v : Value::Undefined(name);
    }
    if (obj.kind == Value::kString) return Method(obj, name, line);
    if (obj.kind == Value::kList && (name == "append" || name == "pop" || name == "insert" || name == "extend")) {
      Fail(line, absl::StrCat("lists are immutable in chat templates (", name, ")"));
    }
    return Value::Undefined(name);
  }

  Value GetItem(const Value& obj, const Value& key, int line) {
    if (obj.kind == Value::kUndefined) FailUndefined(obj, line);
    if (obj.kind == Value::kDict) {
      if (key.kind == Value::kString) {
        const Value* v = obj.Find(key.s);
        if (v) return *v;
        return GetAttr(obj, key.s, line);
      }
      return Value::Undefined();
    }
    if (obj.kind == Value::kList || obj.kind == Value::kString) {
      if (key.kind != Value::kInt && key.kind != Value::kBool) {
        if (key.kind == Value::kString && obj.kind == Value::kString) return GetAttr(obj, key.s, line);
        return Value::Undefined();
      }
      std::vector<std::string> chars;
      if (obj.kind == Value::kString) chars = SplitCodePoints(obj.s);
      const int64_t n = obj.kind == Value::kList ? static_cast<int64_t>(obj.list->size()) : static_cast<int64_t>(chars.size());
      int64_t k = key.kind == Value::kInt ? key.i : key.b;
      if (k < 0) k += n;
      if (k < 0 || k >= n) return Value::Undefined();
      return obj.kind == Value::kList ? (*obj.list)[static_cast<size_t>(k)] : Value::Str(chars[static_cast<size_t>(k)]);
    }
    return Value::Undefined();
  }

  Value Slice(const Value& obj, const Value& a, const Value& b, const Value& c, int line) {
    if (obj.kind != Value::kList && obj.kind != Value::kString) {
      Fail(line, absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
    }
    std::vector<std::string> chars;
    if (obj.kind == Value::kString) chars = SplitCodePoints(obj.s);
    const int64_t n = obj.kind == Value::kList ? static_cast<int64_t>(obj.list->size()) : static_cast<int64_t>(chars.size());
    auto num = [&](const Value& v, const char* what) -> std::optional<int64_t> {
      if (!v.defined() || v.kind == Value::kNone) return std::nullopt;
      if (v.kind != Value::kInt) Fail(line, absl::StrCat("slice ", what, " must be an integer"));
      return v.i;
    };
    const int64_t step = num(c, "step").value_or(1);
    if (step == 0) Fail(line, "slice step cannot be zero");
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(num(a, "start"), step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(num(b, "stop"), step > 0 ? n : -1);
    List l;
    std::string s;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      if (obj.kind == Value::kList) {
        l.push_back((*obj.list)[static_cast<size_t>(k)]);
      } else {
        s += chars[static_cast<size_t>(k)];
      }
    }
    return obj.kind == Value::kList ? Value::MakeList(std::move(l)) : Value::Str(s);
  }

  static std::string StripChars(const std::string& s, const Value* chars, bool left, bool right) {
    auto cps = SplitCodePoints(s);
    std::set<std::string> set;
    if (chars && chars->kind == Value::kString) {
      for (auto& c : SplitCodePoints(chars->s)) set.insert(c);
    }
    auto strip = [&](const std::string& c) {
      if (chars && chars->kind == Value::kString) return set.count(c) > 0;
      icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
      return u.length() > 0 && u_isUWhiteSpace(u.char32At(0));
    };
    size_t b = 0, e = cps.size();
    while (left && b < e && strip(cps[b])) ++b;
    while (right && e > b && strip(cps[e - 1])) --e;
    std::string out;
    for (size_t k = b; k < e; ++k) out += cps[k];
    return out;
  }

  Value Method(const Value& obj, const std::string& name, int line) {
    Value self = obj;
    return Builtin(name, [this, self, name](const Args& a, const Kwargs& kw, int line) -> Value {
      if (self.kind == Value::kDict) {
        if (name == "items") {
          List l;
          for (const auto& [k, v] : *self.dict) l.push_back(Value::MakeTuple({Value::Str(k), v}));
          return Value::MakeList(std::move(l));
        }
        if (name == "keys" || name == "values") {
          List l;
          for (const auto& [k, v] : *self.dict) l.push_back(name == "keys" ? Value::Str(k) : v);
          return Value::MakeList(std::move(l));
        }
        if (name == "get") {
          if (a.empty() || a[0].kind != Value::kString) Fail(line, "get() takes a key");
          const Value* v = self.Find(a[0].s);
          return v ? *v : a.size() > 1 ? a[1] : Value::None();
        }
      }
      const std::string& s = self.s;
      auto arg_str = [&](size_t k, const char* what) {
        if (k >= a.size() || a[k].kind != Value::kString) Fail(line, absl::StrCat(name, "() takes a string ", what));
        return a[k].s;
      };
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const Value* chars = a.empty() || a[0].kind == Value::kNone ? nullptr : &a[0];
        return Value::Str(StripChars(s, chars, name != "rstrip", name != "lstrip"));
      }
      if (name == "upper" || name == "lower") {
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
        if (name == "upper") {
          u.toUpper(icu::Locale::getRoot());
        } else {
          u.toLower(icu::Locale::getRoot());
        }
        std::string out;
        u.toUTF8String(out);
        return Value::Str(out);
      }
      if (name == "capitalize") return CallFilter(name, {self}, {}, line);
      if (name == "title") {
        // Python's str.title: upper after an uncased character, lower after a cased one.
        std::string out;
        bool after_cased = false;
        for (const std::string& c : SplitCodePoints(s)) {
          out += Cased(c, after_cased ? "lower" : "title");
          icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
          after_cased = u_hasBinaryProperty(u.char32At(0), UCHAR_CASED);
        }
        return Value::Str(out);
      }
      if (name == "startswith" || name == "endswith") {
        if (a.empty()) Fail(line, absl::StrCat(name, "() takes a prefix"));
        List options = a[0].kind == Value::kList ? *a[0].list : List{a[0]};
        for (const Value& o : options) {
          if (o.kind != Value::kString) Fail(line, absl::StrCat(name, "() takes strings"));
          if (name == "startswith" ? absl::StartsWith(s, o.s) : absl::EndsWith(s, o.s)) return Value::Bool(true);
        }
        return Value::Bool(false);
      }
      if (name == "split") {
        List parts;
        int64_t maxsplit = a.size() > 1 && a[1].kind == Value::kInt ? a[1].i : -1;
        for (const auto& [k, v] : kw) {
          if (k == "maxsplit" && v.kind == Value::kInt) maxsplit = v.i;
        }
        if (a.empty() || a[0].kind == Value::kNone) {
          // Runs of whitespace; after maxsplit splits the rest as it is.
          const auto cps = SplitCodePoints(s);
          auto space = [&](size_t k) {
            icu::UnicodeString u = icu::UnicodeString::fromUTF8(cps[k]);
            return u_isUWhiteSpace(u.char32At(0));
          };
          size_t k = 0;
          while (k < cps.size() && space(k)) ++k;
          while (k < cps.size()) {
            std::string token;
            if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
              for (; k < cps.size(); ++k) token += cps[k];
              parts.push_back(Value::Str(token));
              break;
            }
            for (; k < cps.size() && !space(k); ++k) token += cps[k];
            parts.push_back(Value::Str(token));
            while (k < cps.size() && space(k)) ++k;
          }
          return Value::MakeList(std::move(parts));
        }
        const std::string sep = arg_str(0, "separator");
        if (sep.empty()) Fail(line, "split() separator is empty");
        size_t start = 0;
        while (true) {
          const size_t at = s.find(sep, start);
          if (at == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)) break;
          parts.push_back(Value::Str(s.substr(start, at - start)));
          start = at + sep.size();
        }
        parts.push_back(Value::Str(s.substr(start)));
        return Value::MakeList(std::move(parts));
      }
      if (name == "replace") {
        const std::string from = arg_str(0, "old"), to = arg_str(1, "new");
        int64_t count = a.size() > 2 && a[2].kind == Value::kInt ? a[2].i : -1;
        std::string out;
        size_t start = 0;
        if (from.empty()) Fail(line, "replace() of an empty string is not supported");
        while (count != 0) {
          const size_t at = s.find(from, start);
          if (at == std::string::npos) break;
          out += s.substr(start, at - start) + to;
          start = at + from.size();
          --count;
        }
        return Value::Str(out + s.substr(start));
      }
      if (name == "join") {
        if (a.empty()) Fail(line, "join() takes a list");
        std::string out;
        List items = Iterate(a[0], line);
        for (size_t k = 0; k < items.size(); ++k) {
          if (items[k].kind != Value::kString) Fail(line, "join() takes strings");
          out += (k ? s : "") + items[k].s;
        }
        return Value::Str(out);
      }
      if (name == "count") return Value::Int(CountOf(s, arg_str(0, "to count")));
      if (name == "find") {
        const size_t at = s.find(arg_str(0, "to find"));
        return Value::Int(at == std::string::npos ? -1 : static_cast<int64_t>(SplitCodePoints(s.substr(0, at)).size()));
      }
      Fail(line, absl::StrCat("'", TypeName(self), "' has no method '", name, "' in Attune's chat-template interpreter"));
    });
  }

  // One code point in full upper, lower or title case (ß -> SS, as Python).
  static std::string Cased(const std::string& c, const char* how) {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
    if (std::strcmp(how, "upper") == 0) {
      u.toUpper(icu::Locale::getRoot());
    } else if (std::strcmp(how, "lower") == 0) {
      u.toLower(icu::Locale::getRoot());
    } else {
      u.toTitle(nullptr, icu::Locale::getRoot(), U_TITLECASE_NO_BREAK_ADJUSTMENT | U_TITLECASE_NO_LOWERCASE);
    }
    std::string out;
    u.toUTF8String(out);
    return out;
  }

  // Python's \w: letters, numbers (Numeric_Type not None) and underscore.
  static bool IsWordChar(UChar32 c) {
    return c == '_' || (U_GET_GC_MASK(c) & U_GC_L_MASK) != 0 ||
           u_getIntPropertyValue(c, UCHAR_NUMERIC_TYPE) != U_NT_NONE;
  }

  static int64_t CountOf(const std::string& s, const std::string& sub) {
    if (sub.empty()) return static_cast<int64_t>(SplitCodePoints(s).size()) + 1;
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return n;
  }

  Value Call(const Value& f, const Args& a, const Kwargs& kw, int line) {
    if (f.kind == Value::kUndefined) FailUndefined(f, line);
    if (f.kind != Value::kCallable) Fail(line, absl::StrCat("'", TypeName(f), "' object is not callable"));
    return f.fn->call(a, kw, line);
  }

  bool Test(const std::string& name, const Value& v, const Args& a, int line) {
    auto arg = [&]() -> const Value& {
      if (a.empty()) Fail(line, absl::StrCat("the test '", name, "' takes an argument"));
      return a[0];
    };
    if (name == "defined") return v.defined();
    if (name == "undefined") return !v.defined();
    if (name == "none") return v.kind == Value::kNone;
    if (name == "string") return v.kind == Value::kString;
    if (name == "boolean") return v.kind == Value::kBool;
    if (name == "true") return v.kind == Value::kBool && v.b;
    if (name == "false") return v.kind == Value::kBool && !v.b;
    if (name == "number") return v.kind == Value::kInt || v.kind == Value::kFloat || v.kind == Value::kBool;
    if (name == "integer") return v.kind == Value::kInt;
    if (name == "float") return v.kind == Value::kFloat;
    if (name == "mapping") return v.kind == Value::kDict && !v.is_namespace;
    if (name == "iterable") return v.kind == Value::kList || v.kind == Value::kDict || v.kind == Value::kString;
    if (name == "sequence") return v.kind == Value::kList || v.kind == Value::kDict || v.kind == Value::kString;
    if (name == "callable") return v.kind == Value::kCallable;
    if (name == "lower" || name == "upper") {
      if (v.kind != Value::kString) return false;
      const Value m = Call(Method(v, name, line), {}, {}, line);
      return m.s == v.s;
    }
    if (name == "odd" || name == "even") {
      if (v.kind != Value::kInt) Fail(line, absl::StrCat("the test '", name, "' takes an integer"));
      return (v.i % 2 != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      if (v.kind != Value::kInt || arg().kind != Value::kInt || arg().i == 0) Fail(line, "divisibleby takes integers");
      return v.i % arg().i == 0;
    }
    if (name == "eq" || name == "equalto" || name == "sameas") return Equal(v, arg());
    if (name == "ne") return !Equal(v, arg());
    if (name == "in") return Contains(arg(), v, line);
    if (name == "lt" || name == "le" || name == "gt" || name == "ge") {
      const int c = Compare(v, arg(), line);
      return name == "lt" ? c < 0 : name == "le" ? c <= 0 : name == "gt" ? c > 0 : c >= 0;
    }
    Fail(line, absl::StrCat("the test '", name, "' is not supported"));
  }

  int Compare(const Value& a, const Value& b, int line) {
    if (a.is_number() && b.is_number()) {
      const double x = a.number(), y = b.number();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.kind == Value::kString && b.kind == Value::kString) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
    if (a.kind == Value::kList && b.kind == Value::kList) {
      for (size_t k = 0; k < std::min(a.list->size(), b.list->size()); ++k) {
        if (!Equal((*a.list)[k], (*b.list)[k])) return Compare((*a.list)[k], (*b.list)[k], line);
      }
      return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
    }
    if (!a.defined()) FailUndefined(a, line);
    if (!b.defined()) FailUndefined(b, line);
    Fail(line, absl::StrCat("'<' not supported between '", TypeName(a), "' and '", TypeName(b), "'"));
  }

  bool Contains(const Value& container, const Value& item, int line) {
    switch (container.kind) {
      case Value::kString:
        if (item.kind != Value::kString) Fail(line, "'in <string>' requires a string on the left");
        return container.s.find(item.s) != std::string::npos;
      case Value::kList:
        for (const Value& v : *container.list) {
          if (Equal(v, item)) return true;
        }
        return false;
      case Value::kDict: return item.kind == Value::kString && container.Find(item.s) != nullptr;
      case Value::kUndefined: FailUndefined(container, line);
      default: Fail(line, absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
    }
  }

  Value Arith(const std::string& op, const Value& a, const Value& b, int line) {
    if (!a.defined()) FailUndefined(a, line);
    if (!b.defined()) FailUndefined(b, line);
    if (op == "+") {
      if (a.kind == Value::kString && b.kind == Value::kString) return Value::Str(a.s + b.s);
      if (a.kind == Value::kList && b.kind == Value::kList) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::MakeList(std::move(l));
      }
    }
    if (op == "*") {
      const Value* seq = a.kind == Value::kString || a.kind == Value::kList ? &a : b.kind == Value::kString || b.kind == Value::kList ? &b : nullptr;
      const Value* times = seq == &a ? &b : &a;
      if (seq && times->kind == Value::kInt) {
        if (times->i * static_cast<int64_t>(seq->kind == Value::kString ? seq->s.size() : seq->list->size()) >
            t_.limits.max_output_bytes) {
          Fail(line, "a repetition too large");
        }
        if (seq->kind == Value::kString) {
          std::string s;
          for (int64_t k = 0; k < times->i; ++k) s += seq->s;
          return Value::Str(s);
        }
        List l;
        for (int64_t k = 0; k < times->i; ++k) l.insert(l.end(), seq->list->begin(), seq->list->end());
        return Value::MakeList(std::move(l));
      }
    }
    if (a.is_number() && b.is_number()) {
      const bool ints = a.kind != Value::kFloat && b.kind != Value::kFloat;
      const int64_t x = a.kind == Value::kInt ? a.i : a.b, y = b.kind == Value::kInt ? b.i : b.b;
      const double p = a.number(), q = b.number();
      if (op == "+") return ints ? Value::Int(x + y) : Value::Float(p + q);
      if (op == "-") return ints ? Value::Int(x - y) : Value::Float(p - q);
      if (op == "*") return ints ? Value::Int(x * y) : Value::Float(p * q);
      if (op == "/") {
        if (q == 0) Fail(line, "division by zero");
        return Value::Float(p / q);
      }
      if (op == "//" || op == "%") {
        if (q == 0) Fail(line, "integer division or modulo by zero");
        if (ints) {
          int64_t d = x / y, m = x % y;
          if (m != 0 && ((m < 0) != (y < 0))) {
            --d;
            m += y;
          }
          return Value::Int(op == "//" ? d : m);
        }
        const double d = std::floor(p / q);
        return Value::Float(op == "//" ? d : p - d * q);
      }
      if (op == "**") {
        if (ints && y >= 0) {
          int64_t r = 1;
          for (int64_t k = 0; k < y && k < 64; ++k) r *= x;
          return Value::Int(r);
        }
        return Value::Float(std::pow(p, q));
      }
    }
    Fail(line, absl::StrCat("unsupported operand types for ", op, ": '", TypeName(a), "' and '", TypeName(b), "'"));
  }

  Value CallFilter(const std::string& name, const Args& a, const Kwargs& kw, int line) {
    const Value& v = a[0];
    auto kwarg = [&](const char* key, size_t pos) -> const Value* {
      for (const auto& [k, x] : kw) {
        if (k == key) return &x;
      }
      return pos < a.size() ? &a[pos] : nullptr;
    };
    if (name == "safe" || name == "e" || name == "escape") {
      if (name != "safe") Fail(line, "the escape filter is not supported (chat templates render unescaped)");
      return v;
    }
    if (name == "string") return Value::Str(Str(v));
    if (name == "trim") {
      const Value* chars = kwarg("chars", 1);
      return Value::Str(StripChars(Str(v), chars, true, true));
    }
    if (name == "length" || name == "count") {
      switch (v.kind) {
        case Value::kUndefined: return Value::Int(0);
        case Value::kString: return Value::Int(static_cast<int64_t>(SplitCodePoints(v.s).size()));
        case Value::kList: return Value::Int(static_cast<int64_t>(v.list->size()));
        case Value::kDict: return Value::Int(static_cast<int64_t>(v.dict->size()));
        default: Fail(line, absl::StrCat("object of type '", TypeName(v), "' has no len()"));
      }
    }
    if (name == "tojson") {
      int64_t indent = -1;
      if (const Value* i = kwarg("indent", 1); i && i->kind == Value::kInt) indent = i->i;
      for (const auto& [k, x] : kw) {
        if (k != "indent" && !(k == "ensure_ascii" && x.kind == Value::kBool && !x.b)) {
          Fail(line, absl::StrCat("tojson(", k, "=...) is not supported"));
        }
      }
      std::string out;
      ToJson(v, static_cast<int>(indent), 0, &out, line);
      return Value::Str(out);
    }
    if (name == "upper" || name == "lower") return Call(Method(Value::Str(Str(v)), name, line), {}, {}, line);
    if (name == "title") {
      // Jinja's title: words split at runs of [-\s({\[<], each with its
      // first character upper-cased and the rest lower-cased.
      const auto cps = SplitCodePoints(Str(v));
      auto separator = [](const std::string& c) {
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
        const UChar32 x = u.char32At(0);
        return x == '-' || x == '(' || x == '{' || x == '[' || x == '<' || u_isUWhiteSpace(x);
      };
      std::string out;
      bool first = true;
      for (const std::string& c : cps) {
        if (separator(c)) {
          out += c;
          first = true;
          continue;
        }
        out += Cased(c, first ? "upper" : "lower");
        first = false;
      }
      return Value::Str(out);
    }
    if (name == "capitalize") {
      // Python's str.capitalize: the first character title-cased, the rest lower-cased.
      const auto cps = SplitCodePoints(Str(v));
      std::string out;
      for (size_t k = 0; k < cps.size(); ++k) out += Cased(cps[k], k == 0 ? "title" : "lower");
      return Value::Str(out);
    }
    if (name == "default" || name == "d") {
      const Value* def = kwarg("default_value", 1);
      const Value* boolean = kwarg("boolean", 2);
      const bool use = boolean && Truthy(*boolean) ? !Truthy(v) : !v.defined();
      return use ? (def ? *def : Value::Str("")) : v;
    }
    if (name == "join") {
      const Value* sep = kwarg("d", 1);
      const Value* attr = kwarg("attribute", 2);
      std::string out;
      List items = Iterate(v, line);
      for (size_t k = 0; k < items.size(); ++k) {
        const Value item = attr ? GetAttr(items[k], Str(*attr), line) : items[k];
        out += (k && sep ? Str(*sep) : "") + Str(item);
      }
      return Value::Str(out);
    }
    if (name == "list") return Value::MakeList(Iterate(v, line));
    if (name == "first" || name == "last") {
      List items = Iterate(v, line);
      if (items.empty()) return Value::Undefined(name);
      return name == "first" ? items.front() : items.back();
    }
    if (name == "reverse") {
      if (v.kind == Value::kString) {
        auto cps = SplitCodePoints(v.s);
        std::reverse(cps.begin(), cps.end());
        return Value::Str(absl::StrJoin(cps, ""));
      }
      List items = Iterate(v, line);
      std::reverse(items.begin(), items.end());
      return Value::MakeList(std::move(items));
    }
    if (name == "items") {
      if (v.kind == Value::kUndefined) return Value::MakeList();
      if (v.kind != Value::kDict) Fail(line, "items expects a mapping");
      return Call(Method(v, "items", line), {}, {}, line);
    }
    if (name == "dictsort") {
      if (v.kind != Value::kDict) Fail(line, "dictsort expects a mapping");
      Dict d = *v.dict;
      std::stable_sort(d.begin(), d.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      List l;
      for (auto& [k, x] : d) l.push_back(Value::MakeTuple({Value::Str(k), x}));
      return Value::MakeList(std::move(l));
    }
    if (name == "replace") {
      if (a.size() < 3) Fail(line, "replace takes old and new");
      Args args(a.begin() + 1, a.end());
      return Call(Method(Value::Str(Str(v)), "replace", line), args, {}, line);
    }
    if (name == "int") {
      if (v.kind == Value::kInt) return v;
      if (v.kind == Value::kFloat) return Value::Int(static_cast<int64_t>(v.f));
      if (v.kind == Value::kBool) return Value::Int(v.b);
      if (v.kind == Value::kString) {
        try {
          return Value::Int(std::stoll(StripChars(v.s, nullptr, true, true)));
        } catch (...) {
        }
      }
      return Value::Int(0);
    }
    if (name == "float") {
      if (v.is_number()) return Value::Float(v.number());
      if (v.kind == Value::kString) return Value::Float(std::strtod(v.s.c_str(), nullptr));
      return Value::Float(0);
    }
    if (name == "abs") {
      if (v.kind == Value::kInt) return Value::Int(std::llabs(v.i));
      if (v.kind == Value::kFloat) return Value::Float(std::fabs(v.f));
      Fail(line, "abs takes a number");
    }
    if (name == "round") {
      const Value* prec = kwarg("precision", 1);
      const double scale = std::pow(10.0, prec && prec->kind == Value::kInt ? static_cast<double>(prec->i) : 0.0);
      return Value::Float(std::round(v.number() * scale) / scale);
    }
    if (name == "indent") {
      const Value* width = kwarg("width", 1);
      const Value* first = kwarg("first", 2);
      const std::string pad(width && width->kind == Value::kInt ? static_cast<size_t>(width->i) : 4, ' ');
      std::string s = Str(v), out;
      size_t start = 0;
      bool first_line = true;
      while (start <= s.size()) {
        size_t end = s.find('\n', start);
        const std::string ln = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if ((!first_line || (first && Truthy(*first))) && !ln.empty()) out += pad;
        out += ln;
        if (end == std::string::npos) break;
        out += "\n";
        start = end + 1;
        first_line = false;
      }
      return Value::Str(out);
    }
    if (name == "unique") {
      List out;
      for (const Value& x : Iterate(v, line)) {
        if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return Equal(x, y); })) out.push_back(x);
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "sort" || name == "min" || name == "max" || name == "sum") {
      List items = Iterate(v, line);
      const Value* attr = kwarg("attribute", name == "sort" ? 3 : 2);
      auto key = [&](const Value& x) { return attr ? GetAttr(x, Str(*attr), line) : x; };
      if (name == "sum") {
        Value total = Value::Int(0);
        for (const Value& x : items) total = Arith("+", total, key(x), line);
        return total;
      }
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return Compare(key(x), key(y), line) < 0; });
      if (name == "sort") {
        const Value* rev = kwarg("reverse", 1);
        if (rev && Truthy(*rev)) std::reverse(items.begin(), items.end());
        return Value::MakeList(std::move(items));
      }
      if (items.empty()) return Value::Undefined(name);
      return name == "min" ? items.front() : items.back();
    }
    if (name == "map") {
      const Value* attr = kwarg("attribute", 99);
      List out;
      for (const Value& x : Iterate(v, line)) {
        if (attr) {
          out.push_back(GetAttr(x, Str(*attr), line));
        } else {
          if (a.size() < 2 || a[1].kind != Value::kString) Fail(line, "map takes a filter name or attribute=");
          if (!KnownFilters().count(a[1].s)) Fail(line, absl::StrCat("map: the filter '", a[1].s, "' is not supported"));
          Args args = {x};
          args.insert(args.end(), a.begin() + 2, a.end());
          out.push_back(CallFilter(a[1].s, args, {}, line));
        }
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool keep_when = name == "select" || name == "selectattr";
      size_t k = 1;
      std::string attr;
      if (by_attr) {
        if (a.size() < 2 || a[1].kind != Value::kString) Fail(line, absl::StrCat(name, " takes an attribute name"));
        attr = a[1].s;
        k = 2;
      }
      std::string test;
      if (k < a.size()) {
        if (a[k].kind != Value::kString || !KnownTests().count(a[k].s)) Fail(line, absl::StrCat(name, ": unknown test"));
        test = a[k].s;
      }
      Args test_args(a.begin() + static_cast<std::ptrdiff_t>(std::min(k + 1, a.size())), a.end());
      List out;
      for (const Value& x : Iterate(v, line)) {
        const Value subject = by_attr ? GetAttr(x, attr, line) : x;
        const bool pass = test.empty() ? Truthy(subject) : Test(test, subject, test_args, line);
        if (pass == keep_when) out.push_back(x);
      }
      return Value::MakeList(std::move(out));
    }
    if (name == "attr") {
      if (a.size() < 2 || a[1].kind != Value::kString) Fail(line, "attr takes a name");
      return GetAttr(v, a[1].s, line);
    }
    if (name == "wordcount") {
      // Jinja's: the runs that Python's \w+ finds.
      int64_t n = 0;
      bool in = false;
      for (const std::string& c : SplitCodePoints(Str(v))) {
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(c);
        const bool w = IsWordChar(u.char32At(0));
        n += w && !in;
        in = w;
      }
      return Value::Int(n);
    }
    Fail(line, absl::StrCat("the filter '", name, "' is not supported"));
  }

  Value Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral: return e.literal;
      case Expr::kName: return Lookup(e.name);
      case Expr::kList:
      case Expr::kTuple: {
        List l;
        for (const auto& x : e.args) l.push_back(Eval(*x));
        return e.kind == Expr::kTuple ? Value::MakeTuple(std::move(l)) : Value::MakeList(std::move(l));
      }
      case Expr::kDict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = Eval(*e.args[k]);
          if (key.kind != Value::kString) Fail(e.line, "dict keys must be strings in chat templates");
          bool replaced = false;
          for (auto& kv : d) {
            if (kv.first == key.s) {
              kv.second = Eval(*e.args[k + 1]);
              replaced = true;
            }
          }
          if (!replaced) d.emplace_back(key.s, Eval(*e.args[k + 1]));
        }
        return Value::MakeDict(std::move(d));
      }
      case Expr::kAttr: return GetAttr(Eval(*e.args[0]), e.name, e.line);
      case Expr::kItem: return GetItem(Eval(*e.args[0]), Eval(*e.args[1]), e.line);
      case Expr::kSlice: {
        auto part = [&](size_t k) { return e.args[k] ? Eval(*e.args[k]) : Value::Undefined(); };
        return Slice(Eval(*e.args[0]), part(1), part(2), part(3), e.line);
      }
      case Expr::kCall: {
        const Value f = Eval(*e.args[0]);
        Args a;
        for (size_t k = 1; k < e.args.size(); ++k) a.push_back(Eval(*e.args[k]));
        Kwargs kw;
        for (const auto& [k, x] : e.kwargs) kw.emplace_back(k, Eval(*x));
        return Call(f, a, kw, e.line);
      }
      case Expr::kFilter: {
        Args a;
        for (const auto& x : e.args) a.push_back(Eval(*x));
        Kwargs kw;
        for (const auto& [k, x] : e.kwargs) kw.emplace_back(k, Eval(*x));
        return CallFilter(e.name, a, kw, e.line);
      }
      case Expr::kTest: {
        const Value v = Eval(*e.args[0]);
        Args a;
        for (size_t k = 1; k < e.args.size(); ++k) a.push_back(Eval(*e.args[k]));
        return Value::Bool(Test(e.name, v, a, e.line) != e.negated);
      }
      case Expr::kUnary: {
        const Value v = Eval(*e.args[0]);
        if (v.kind == Value::kInt) return Value::Int(e.name == "-" ? -v.i : v.i);
        if (v.kind == Value::kFloat) return Value::Float(e.name == "-" ? -v.f : v.f);
        if (!v.defined()) FailUndefined(v, e.line);
        Fail(e.line, absl::StrCat("bad operand type for unary ", e.name, ": '", TypeName(v), "'"));
      }
      case Expr::kCompare: {
        // a < b < c is (a < b) and (b < c), b evaluated once.
        Value a = Eval(*e.args[0]);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value b = Eval(*e.args[k + 1]);
          const std::string& op = e.ops[k];
          bool r;
          if (op == "==") {
            r = Equal(a, b);
          } else if (op == "!=") {
            r = !Equal(a, b);
          } else if (op == "in") {
            r = Contains(b, a, e.line);
          } else if (op == "not in") {
            r = !Contains(b, a, e.line);
          } else {
            const int c = Compare(a, b, e.line);
            r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
          }
          if (!r) return Value::Bool(false);
          a = std::move(b);
        }
        return Value::Bool(true);
      }
      case Expr::kBinary: return Arith(e.name, Eval(*e.args[0]), Eval(*e.args[1]), e.line);
      case Expr::kConcat: {
        const Value a = Eval(*e.args[0]);
        const Value b = Eval(*e.args[1]);
        return Value::Str(Str(a) + Str(b));
      }
      case Expr::kAnd: {
        const Value a = Eval(*e.args[0]);
        return Truthy(a) ? Eval(*e.args[1]) : a;
      }
      case Expr::kOr: {
        const Value a = Eval(*e.args[0]);
        return Truthy(a) ? a : Eval(*e.args[1]);
      }
      case Expr::kNot: return Value::Bool(!Truthy(Eval(*e.args[0])));
      case Expr::kCond:
        if (Truthy(Eval(*e.args[0]))) return Eval(*e.args[1]);
        return e.args[2] ? Eval(*e.args[2]) : Value::Undefined();
    }
    return Value::Undefined();
  }

  const Template& t_;
  int64_t now_;
  std::vector<std::map<std::string, Value>> scopes_;
  std::map<std::string, Value> globals_;
  int loop_depth_ = 0;
  int call_depth_ = 0;
  int64_t iterations_ = 0;
};

}  // namespace jinja

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(const std::string& source, const std::string& name,
                                                 ChatTemplateLimits limits) {
  try {
    auto t = std::make_shared<jinja::Template>();
    t->name = name;
    t->limits = limits;
    jinja::Parser p(jinja::Lex(source));
    t->body = p.ParseAll();
    ChatTemplate out;
    out.impl_ = std::move(t);
    return out;
  } catch (const jinja::RenderError& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.line, ": ", e.message));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the template cannot be read: ", e.what()));
  }
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  if (!impl_) return absl::FailedPreconditionError("no template");
  if (!context.is_object()) return absl::InvalidArgumentError("the chat-template context must be a JSON object");
  try {
    jinja::Renderer r(*impl_, now_);
    return r.Run(context);
  } catch (const jinja::RenderError& e) {
    return absl::InvalidArgumentError(absl::StrCat(impl_->name, ":", e.line, ": ", e.message));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(impl_->name, ": the template cannot be rendered: ", e.what()));
  }
}

}  // namespace attune::worker::text
