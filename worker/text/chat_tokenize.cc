#include "worker/text/chat_tokenize.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace attune::worker::text {
namespace {

using Json = nlohmann::ordered_json;

Json Context(const BpeTokenizer& tok, const Json& record, Json messages, bool add_generation_prompt) {
  Json ctx = {{"messages", std::move(messages)}, {"add_generation_prompt", add_generation_prompt}};
  if (record.contains("tools")) ctx["tools"] = record["tools"];
  for (const auto& [name, token] : tok.named_tokens()) ctx[name] = token;
  return ctx;
}

}  // namespace

// NOTE [assistant mask]: which tokens of a rendered conversation are the
// assistant's. For assistant message k, with F the full rendering, P the
// rendering of messages[:k] with the generation prompt (F must start with
// P) and T the rendering of messages[:k+1]: the trained characters are
// F[len(P) : len(P)+len(X)], X being the longest suffix of T[len(P):] that F
// continues with at len(P). When T is a prefix of F (Llama 3, ChatML, Qwen
// 2.5) X is all of T[len(P):]: the message and what closes its turn. Qwen 3
// renders earlier turns without their think block; the rule then trains
// their content and <|im_end|>\n. A token is trained when the characters it
// stands for lie in a trained span. Messages with "weight": 0 are not trained.
absl::StatusOr<Json> TokenizeRecord(const BpeTokenizer& tok, const ChatTemplate* tmpl, const std::string& template_name,
                                    const Json& record, bool add_generation_prompt) {
  if (!record.is_object()) return absl::InvalidArgumentError("a record must be a JSON object");
  if (record.contains("text")) {
    if (!record["text"].is_string()) return absl::InvalidArgumentError("text: must be a string");
    return Json{{"ids", tok.EncodeText(record["text"].get<std::string>(), true)}};
  }
  if (!record.contains("messages")) return absl::InvalidArgumentError("a record needs \"text\" or \"messages\"");
  const Json& messages = record["messages"];
  if (!messages.is_array() || messages.empty()) return absl::InvalidArgumentError("messages: must be a non-empty list");
  for (size_t k = 0; k < messages.size(); ++k) {
    const Json& m = messages[k];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", k, "]: needs a role string"));
    }
    if (m.contains("weight") && !(m["weight"] == 0 || m["weight"] == 1)) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", k, "].weight: must be 0 or 1"));
    }
  }
  if (tmpl == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(template_name, ": the tokenizer has no chat_template"));
  }
  auto render = [&](size_t count, bool gen) -> absl::StatusOr<std::string> {
    Json part = Json::array();
    for (size_t k = 0; k < count; ++k) part.push_back(messages[k]);
    return tmpl->Render(Context(tok, record, std::move(part), gen));
  };
  auto full = render(messages.size(), add_generation_prompt);
  if (!full.ok()) return full.status();
  const std::string& f = *full;
  std::vector<std::pair<size_t, size_t>> trained;
  for (size_t k = 0; k < messages.size(); ++k) {
    const Json& m = messages[k];
    if (m["role"] != "assistant" || (m.contains("weight") && m["weight"] == 0)) continue;
    auto p = render(k, true);
    if (!p.ok()) return p.status();
    auto t = render(k + 1, false);
    if (!t.ok()) return t.status();
    if (f.compare(0, p->size(), *p) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          template_name, ": the conversation's rendering does not begin with its rendering up to messages[", k,
          "] with the generation prompt, so the assistant's tokens cannot be told apart"));
    }
    const std::string u = t->size() > p->size() ? t->substr(p->size()) : "";
    size_t x = 0;  // the longest suffix of u that f continues with at len(p)
    for (size_t skip = 0; skip <= u.size(); ++skip) {
      const size_t len = u.size() - skip;
      if (f.compare(p->size(), len, u, skip, len) == 0) {
        x = len;
        break;
      }
    }
    if (x > 0) trained.emplace_back(p->size(), p->size() + x);
  }
  std::vector<std::pair<size_t, size_t>> offsets;
  const std::vector<int64_t> ids = tok.EncodeWithOffsets(f, false, &offsets);
  std::vector<int> mask(ids.size(), 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto [b, e] = offsets[i];
    for (const auto& [lo, hi] : trained) {
      if (e > b && b >= lo && e <= hi) mask[i] = 1;
    }
  }
  return Json{{"text", f}, {"ids", ids}, {"assistant_mask", mask}};
}

int64_t EndOfTurnToken(const BpeTokenizer& tok, const ChatTemplate& tmpl, const std::string& template_name) {
  const Json probe = {{"messages", Json::array({Json{{"role", "user"}, {"content", "q"}},
                                                Json{{"role", "assistant"}, {"content", "a"}}})}};
  auto tokenized = TokenizeRecord(tok, &tmpl, template_name, probe, false);
  if (!tokenized.ok()) return -1;
  const auto ids = (*tokenized)["ids"].get<std::vector<int64_t>>();
  const auto mask = (*tokenized)["assistant_mask"].get<std::vector<int>>();
  // From the turn's end back to its content: the last special token, past
  // any whitespace the template adds after it (ChatML's newline).
  for (size_t k = ids.size(); k-- > 0;) {
    if (!mask[k]) continue;
    if (tok.IsSpecial(ids[k])) return ids[k];
    if (tok.Decode({ids[k]}, false).find_first_not_of(" \t\r\n") != std::string::npos) return -1;  // the answer
  }
  return -1;
}

}  // namespace attune::worker::text
