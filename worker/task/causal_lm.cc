// causal_lm: next-token training of a decoder (continued pretraining on
// domain text, supervised fine-tuning on conversations).

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <unordered_map>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/job_config.h"
#include "common/status_macros.h"
#include "common/text.h"
#include "worker/model/model.h"
#include "worker/task/task.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/chat_template.h"
#include "worker/text/chat_tokenize.h"

namespace attune::worker::task {
namespace {

using Json = nlohmann::ordered_json;

constexpr int64_t kIgnore = -100;

// NOTE [causal_lm data]: what each data.format trains.
// - messages: OpenAI's chat records, rendered by the model's chat template;
//   the trained tokens are exactly `attune tokenize`'s assistant_mask (NOTE
//   [assistant mask]), messages with "weight": 0 excluded.
// - alpaca: instruction (+ "\n" + input when given) as one user turn and
//   output as the assistant's, then as messages.
// - prompt_completion: prompt + completion tokenised as one text with the
//   tokenizer's specials, then EOS; trained: the tokens whose characters lie
//   in the completion, and the EOS.
// - text: the text with the tokenizer's specials, then EOS; every token is
//   trained but the first.
// train_on: all trains every token of a sequence but its first. A sequence
// longer than max_length is cut from the end; one left with no trained token
// is dropped and counted, as are malformed conversations (an unknown role, an
// assistant message without content, no assistant turn to train). With
// packing, conversations are packed into sequences of max_length (best fit
// decreasing), each attending only to itself (NOTE [packed sequences]);
// texts are concatenated and cut into max_length blocks, as HF run_clm
// groups them.
class CausalLm : public LanguageModelTask {
 public:
  const common::TaskInfo& info() const override { return *common::FindTask("causal_lm"); }
  data::LabelKind label_kind() const override { return data::LabelKind::kNone; }
  absl::Status CheckLabels(const data::LabelMap&, const std::string&) const override { return absl::OkStatus(); }
  std::vector<std::string> OutputNames(const data::LabelMap&) const override { return {}; }
  std::string problem_type() const override { return ""; }
  std::string architecture() const override { return "ForCausalLM"; }
  void AdjustReader(const common::JobConfig& c, data::ReaderOptions* o) const override {
    o->whole_record = c.data_format != "text";
  }

  absl::Status Configure(const text::Tokenizer& tok, const common::JobConfig& c) override {
    bpe_ = dynamic_cast<const text::BpeTokenizer*>(&tok);
    if (bpe_ == nullptr) {
      return absl::InvalidArgumentError(
          "task.type causal_lm: the model's tokenizer is WordPiece; a decoder's BPE tokenizer (tokenizer.json or tokenizer.model) is needed");
    }
    format_ = c.data_format.empty() ? "messages" : c.data_format;
    all_ = c.train_on == "all";
    packing_ = c.packing;
    eos_ = tok.special().sep;
    vocab_size_ = tok.vocab_size();
    template_name_ = "tokenizer_config.json chat_template";
    if (format_ == "messages" || format_ == "alpaca") {
      if (bpe_->chat_template().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "data.format ", format_,
            ": the model's tokenizer_config.json has no chat_template (use prompt_completion or text, or a tokenizer "
            "with a template)"));
      }
      auto t = text::ChatTemplate::Parse(bpe_->chat_template(), template_name_);
      if (!t.ok()) return t.status();
      template_ = std::make_shared<text::ChatTemplate>(*std::move(t));
    } else if (eos_ < 0) {
      return absl::InvalidArgumentError(absl::StrCat("data.format ", format_,
                                                     ": the tokenizer names no eos_token to end each example with"));
    } else if (!bpe_->chat_template().empty()) {
      // Multiple-choice questions are put through the template when there is one.
      auto t = text::ChatTemplate::Parse(bpe_->chat_template(), template_name_);
      if (t.ok()) template_ = std::make_shared<text::ChatTemplate>(*std::move(t));
    }
    return absl::OkStatus();
  }

  // NOTE [answer evaluation]: what evaluation.generate answers. messages:
  // the conversation up to its last assistant message, rendered with the
  // template's generation prompt; the reference is that message's content.
  // alpaca: the user turn as training renders it; the reference is output.
  // prompt_completion: the prompt with the tokenizer's specials; the reference
  // is the completion. Examples that training drops as malformed are skipped.
  absl::StatusOr<std::vector<GenerationCase>> GenerationCases(
      const std::vector<data::Example>& examples) const override {
    if (format_ == "text") return absl::InvalidArgumentError("evaluation.generate: data.format text has no answers");
    std::vector<GenerationCase> out;
    for (const auto& x : examples) {
      Encoded ignored;
      std::string reason, message;
      if (!EncodeOne(x.text, format_, false, &ignored, &reason, &message)) continue;
      const Json record = Json::parse(x.text, nullptr, false);
      GenerationCase g;
      g.line = x.line;
      if (format_ == "prompt_completion") {
        g.shown = record["prompt"].get<std::string>();
        g.reference = record["completion"].get<std::string>();
        g.prompt = bpe_->EncodeText(g.shown, true);
      } else {
        Json messages;
        if (format_ == "alpaca") {
          const std::string instruction = record["instruction"].get<std::string>();
          const std::string input = record.contains("input") && record["input"].is_string() ? record["input"].get<std::string>() : "";
          g.shown = input.empty() ? instruction : instruction + "\n" + input;
          g.reference = record["output"].get<std::string>();
          messages = Json::array({Json{{"role", "user"}, {"content", g.shown}}});
        } else {
          const Json& all = record["messages"];
          size_t last = all.size();
          for (size_t k = all.size(); k-- > 0;) {
            if (all[k]["role"] == "assistant") {
              last = k;
              break;
            }
          }
          if (last == all.size() || last == 0) continue;  // no question before the answer
          messages = Json::array();
          for (size_t k = 0; k < last; ++k) {
            messages.push_back(all[k]);
            if (all[k]["role"] == "user") g.shown = all[k]["content"].get<std::string>();
          }
          g.reference = all[last]["content"].get<std::string>();
        }
        Json conversation = {{"messages", messages}};
        if (record.contains("tools")) conversation["tools"] = record["tools"];
        auto tokenized = text::TokenizeRecord(*bpe_, template_.get(), template_name_, conversation, true);
        if (!tokenized.ok()) continue;
        g.prompt = (*tokenized)["ids"].get<std::vector<int64_t>>();
      }
      if (g.prompt.empty()) continue;
      out.push_back(std::move(g));
    }
    return out;
  }

  // The token the chat template closes an assistant turn with, when it is a
  // special token (Llama 3's <|eot_id|>, ChatML's <|im_end|>): a base model's
  // eos_token is often another, and an answer must stop at the turn's end.
  std::set<int64_t> AnswerStopIds() const override {
    if (template_ == nullptr || format_ == "prompt_completion" || format_ == "text") return {};
    const int64_t id = text::EndOfTurnToken(*bpe_, *template_, template_name_);
    return id >= 0 ? std::set<int64_t>{id} : std::set<int64_t>{};
  }

  // NOTE [multiple choice]: each choice is scored as lm-evaluation-harness
  // scores a continuation, by the summed log-likelihood of its tokens given
  // the question; here the tokens are those training would train in the
  // example that answers the question with the choice; an example longer
  // than max_length loses its first tokens (the question's start). With a chat template:
  // the messages (or the question as one user turn), earlier assistant turns
  // not scored, then the choice as the assistant's answer (its end-of-turn
  // token included). Without one: {"prompt": question, "completion": " " +
  // choice} as prompt_completion trains it (EOS included).
  absl::StatusOr<std::vector<ChoiceQuestion>> ChoiceQuestions(const std::string& jsonl, const std::string& source,
                                                              int max_length) const override {
    std::vector<ChoiceQuestion> out;
    ATTUNE_RETURN_IF_ERROR(common::ForEachLine(jsonl, [&](int64_t line_no, std::string_view line) -> absl::Status {
      auto bad = [&](const std::string& why) {
        return absl::InvalidArgumentError(absl::StrCat("evaluation.multiple_choice ", source, ":", line_no, ": ", why));
      };
      const Json r = Json::parse(line, nullptr, false);
      if (!r.is_object()) return bad("not a JSON object");
      if (!r.contains("choices") || !r["choices"].is_array() || r["choices"].size() < 2 || r["choices"].size() > 64) {
        return bad("needs \"choices\": a list of 2 to 64 strings");
      }
      if (!r.contains("answer") || !r["answer"].is_number_integer() || r["answer"].get<int64_t>() < 0 ||
          r["answer"].get<int64_t>() >= static_cast<int64_t>(r["choices"].size())) {
        return bad(absl::StrCat("needs \"answer\": the index of the right choice, in [0, ", r["choices"].size(), ")"));
      }
      const bool has_messages = r.contains("messages"), has_question = r.contains("question");
      if (has_messages == has_question) return bad("needs one of \"messages\" (a list) and \"question\" (a string)");
      if (has_question && (!r["question"].is_string() || r["question"].get<std::string>().empty())) {
        return bad("\"question\" must be a non-empty string");
      }
      if (has_messages && (!r["messages"].is_array() || r["messages"].empty())) {
        return bad("\"messages\" must be a non-empty list");
      }
      if (has_messages && template_ == nullptr) {
        return bad("\"messages\" needs a chat template, and the model's tokenizer has none (use \"question\")");
      }
      ChoiceQuestion q;
      q.line = line_no;
      q.answer = r["answer"].get<int>();
      for (size_t k = 0; k < r["choices"].size(); ++k) {
        const Json& choice = r["choices"][k];
        if (!choice.is_string() || choice.get<std::string>().empty()) {
          return bad(absl::StrCat("choices[", k, "] must be a non-empty string"));
        }
        Json example;
        std::string format = "messages";
        if (template_ != nullptr) {
          Json messages = has_messages ? r["messages"]
                                       : Json::array({Json{{"role", "user"}, {"content", r["question"]}}});
          for (Json& m : messages) {
            if (m.is_object() && m.contains("role") && m["role"] == "assistant") m["weight"] = 0;
          }
          messages.push_back({{"role", "assistant"}, {"content", choice}});
          example = {{"messages", messages}};
        } else {
          format = "prompt_completion";
          example = {{"prompt", r["question"]}, {"completion", " " + choice.get<std::string>()}};
        }
        Encoded e;
        std::string reason, message;
        if (!EncodeOne(example.dump(), format, false, &e, &reason, &message)) {
          return bad(absl::StrCat("choices[", k, "]: ", reason, message.empty() ? "" : ": ", message));
        }
        if (static_cast<int64_t>(e.ids.size()) > max_length) {
          // Cut from the left, as lm-evaluation-harness cuts a long context,
          // if every scored token keeps a token before it.
          const size_t cut = e.ids.size() - static_cast<size_t>(max_length);
          const auto first = std::find_if(e.piece_labels.begin() + 1, e.piece_labels.end(),
                                          [](int64_t l) { return l != kIgnore; }) - e.piece_labels.begin();
          if (static_cast<size_t>(first) <= cut) {
            return bad(absl::StrCat("choices[", k, "] does not fit data.max_length ", max_length, ": the answer and one token before it take ",
                                    e.ids.size() - static_cast<size_t>(first) + 1, " tokens"));
          }
          e.ids.erase(e.ids.begin(), e.ids.begin() + static_cast<long>(cut));
          e.piece_labels.erase(e.piece_labels.begin(), e.piece_labels.begin() + static_cast<long>(cut));
          q.truncated = true;
        }
        e.types.assign(e.ids.size(), 0);
        // The scored continuation's characters, as lm-evaluation-harness's acc_norm counts them (the
        // space before the choice included where there is one).
        const std::string text = format == "prompt_completion" ? " " + choice.get<std::string>() : choice.get<std::string>();
        q.choice_chars.push_back(std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xC0) != 0x80; }));
        q.choices.push_back(std::move(e));
      }
      out.push_back(std::move(q));
      return absl::OkStatus();
    }));
    if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("evaluation.multiple_choice ", source, ": no questions"));
    return out;
  }

  std::vector<Encoded> Encode(const text::Tokenizer&, const std::vector<data::Example>& examples, int max_length,
                              EncodeReport* report) const override {
    EncodeReport local;
    EncodeReport& r = report ? *report : local;
    std::vector<Encoded> one;
    if (format_ == "text" && packing_) return Blocks(examples, max_length, &r);
    for (const auto& x : examples) {
      Encoded e;
      std::string reason, message;
      if (!EncodeOne(x.text, format_, all_, &e, &reason, &message)) {
        r.Drop(reason, x.line, message);
        continue;
      }
      const bool cut = static_cast<int64_t>(e.ids.size()) > max_length;
      if (cut) {
        e.ids.resize(static_cast<size_t>(max_length));
        e.piece_labels.resize(static_cast<size_t>(max_length));
      }
      if (e.ids.size() < 2 ||
          std::all_of(e.piece_labels.begin() + 1, e.piece_labels.end(), [](int64_t l) { return l == kIgnore; })) {
        r.Drop(cut ? "no_trained_token_within_max_length" : "no_trained_tokens", x.line);
        continue;
      }
      r.truncated += cut;
      e.types.assign(e.ids.size(), 0);
      one.push_back(std::move(e));
    }
    r.examples = static_cast<int64_t>(one.size());
    std::vector<Encoded> out = packing_ ? Pack(std::move(one), max_length) : std::move(one);
    r.sequences = static_cast<int64_t>(out.size());
    return out;
  }

  Batch Collate(const std::vector<Encoded>& data, const std::vector<int64_t>& idx, const CollateContext& ctx,
                int) const override {
    std::vector<std::vector<int64_t>> ids(idx.size()), types(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      ids[i] = data[static_cast<size_t>(idx[i])].ids;
      types[i].assign(ids[i].size(), 0);
    }
    // A decoder without a pad token pads with id 0: padding is never attended to nor trained.
    Batch b = PadRows(ids, types, ctx.pad_id >= 0 ? ctx.pad_id : 0);
    const int64_t t = b.ids.size(1);
    auto mask = b.mask.accessor<int64_t, 2>();
    std::vector<int64_t> positions, targets, rows;
    for (size_t i = 0; i < idx.size(); ++i) {
      const Encoded& e = data[static_cast<size_t>(idx[i])];
      for (size_t k = 0; k < e.segments.size(); ++k) mask[static_cast<int64_t>(i)][static_cast<int64_t>(k)] = e.segments[k];
      for (size_t k = 1; k < e.ids.size(); ++k) {
        if (e.piece_labels[k] == kIgnore) continue;
        if (!e.segments.empty() && e.segments[k] != e.segments[k - 1]) continue;  // an example's first token
        positions.push_back(static_cast<int64_t>(i) * t + static_cast<int64_t>(k) - 1);
        targets.push_back(e.ids[k]);
        rows.push_back(static_cast<int64_t>(i));
      }
    }
    SetPositions(&b, positions, targets, rows);
    return b;
  }

  at::Tensor Forward(model::Model& model, const Batch& b) const override {
    return model.NextTokenLogits(model.Encode(b.ids, b.types, b.mask), b.positions);
  }

  // NOTE [bigram baseline]: a bigram model of the training sequences'
  // tokens with Witten-Bell smoothing, p(w | v) = (c(v, w) + T(v) p1(w)) /
  // (c(v) + T(v)), T(v) the distinct tokens seen after v and p1 the add-one
  // unigram; scored at the validation set's trained tokens. Its top
  // prediction after v is v's most frequent follower (the most frequent
  // token after an unseen v). What the model must beat to have learnt more
  // than which token tends to follow which.
  Baseline ComputeBaseline(const std::vector<Encoded>& train, const std::vector<Encoded>& validation,
                           int) const override {
    const auto v_size = static_cast<size_t>(std::max(vocab_size_, 1));
    std::vector<double> unigram(v_size, 1.0);
    double total = static_cast<double>(v_size);
    std::unordered_map<uint64_t, double> pair;
    std::vector<double> context(v_size, 0.0), followers(v_size, 0.0), best_count(v_size, 0.0);
    std::vector<int64_t> best(v_size, -1);
    auto in_range = [&](int64_t id) { return id >= 0 && static_cast<size_t>(id) < v_size; };
    for (const auto& e : train) {
      for (size_t k = 0; k < e.ids.size(); ++k) {
        if (!in_range(e.ids[k])) continue;
        unigram[static_cast<size_t>(e.ids[k])] += 1;
        total += 1;
        if (k == 0 || !in_range(e.ids[k - 1]) || (!e.segments.empty() && e.segments[k] != e.segments[k - 1])) continue;
        const auto v = static_cast<size_t>(e.ids[k - 1]);
        double& c = pair[static_cast<uint64_t>(v) * v_size + static_cast<uint64_t>(e.ids[k])];
        if (c == 0) followers[v] += 1;
        c += 1;
        context[v] += 1;
        if (c > best_count[v]) {
          best_count[v] = c;
          best[v] = e.ids[k];
        }
      }
    }
    const auto top = static_cast<int64_t>(std::max_element(unigram.begin(), unigram.end()) - unigram.begin());
    double nll = 0;
    int64_t tokens = 0, right = 0;
    for (const auto& e : validation) {
      for (size_t k = 1; k < e.ids.size(); ++k) {
        if (e.piece_labels[k] == kIgnore || (!e.segments.empty() && e.segments[k] != e.segments[k - 1])) continue;
        const int64_t w = e.ids[k], v = e.ids[k - 1];
        const double p1 = (in_range(w) ? unigram[static_cast<size_t>(w)] : 1.0) / total;
        double p = p1;
        int64_t guess = top;
        if (in_range(v) && context[static_cast<size_t>(v)] > 0) {
          const auto vs = static_cast<size_t>(v);
          auto it = in_range(w) ? pair.find(static_cast<uint64_t>(vs) * v_size + static_cast<uint64_t>(w)) : pair.end();
          const double c = it == pair.end() ? 0.0 : it->second;
          p = (c + followers[vs] * p1) / (context[vs] + followers[vs]);
          guess = best[vs];
        }
        nll -= std::log(p);
        ++tokens;
        right += guess == w;
      }
    }
    eval::Metrics m = eval::ComputeLmMetrics("causal_lm", static_cast<int64_t>(validation.size()), nll, tokens, right);
    return {"bigram", "a bigram model of the training tokens (Witten-Bell smoothed), blind to all but the last token",
            {{"loss", m.loss}, {"perplexity", m.perplexity}, {"token_accuracy", m.accuracy}},
            {}};
  }

  nlohmann::json PredictLine(const std::vector<double>&, const std::vector<std::string>&) const override {
    return nlohmann::json::object();
  }

 private:
  // One example's ids and labels (an example of `format`, trained on every
  // token when `all`), or false with the reason it is dropped.
  bool EncodeOne(const std::string& text, const std::string& format, bool all, Encoded* e, std::string* reason,
                 std::string* message) const {
    if (format == "text") {
      e->ids = bpe_->EncodeText(text, true);
      e->ids.push_back(eos_);
      e->piece_labels = e->ids;
      return true;
    }
    const Json record = Json::parse(text, nullptr, false);
    auto field = [&](const char* key, bool required, std::string* out) {
      if (!record.contains(key) || record[key].is_null()) return !required;
      if (!record[key].is_string()) return false;
      *out = record[key].get<std::string>();
      return !required || !out->empty();
    };
    if (format == "prompt_completion") {
      std::string prompt, completion;
      if (!field("prompt", true, &prompt) || !field("completion", true, &completion)) {
        *reason = "malformed_prompt_completion";
        *message = "needs a non-empty string prompt and completion";
        return false;
      }
      const std::string full = prompt + completion;
      std::vector<std::pair<size_t, size_t>> offsets;
      e->ids = bpe_->EncodeWithOffsets(full, true, &offsets);
      e->piece_labels.assign(e->ids.size(), kIgnore);
      for (size_t k = 0; k < e->ids.size(); ++k) {
        const auto [b, end] = offsets[k];
        if (all || (end > b && b >= prompt.size())) e->piece_labels[k] = e->ids[k];
      }
      e->ids.push_back(eos_);
      e->piece_labels.push_back(eos_);
      return true;
    }
    Json messages;
    if (format == "alpaca") {
      std::string instruction, input, output;
      if (!field("instruction", true, &instruction) || !field("input", false, &input) ||
          !field("output", true, &output)) {
        *reason = "malformed_alpaca";
        *message = "needs non-empty string instruction and output (input: a string when given)";
        return false;
      }
      messages = Json::array({Json{{"role", "user"}, {"content", input.empty() ? instruction : instruction + "\n" + input}},
                              Json{{"role", "assistant"}, {"content", output}}});
    } else {
      if (!record.contains("messages") || !record["messages"].is_array() || record["messages"].empty()) {
        *reason = "malformed_conversation";
        *message = "needs a non-empty messages list";
        return false;
      }
      messages = record["messages"];
    }
    bool trained = false;
    for (size_t k = 0; k < messages.size(); ++k) {
      const Json& m = messages[k];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
          !m["content"].is_string()) {
        *reason = "malformed_conversation";
        *message = absl::StrCat("messages[", k, "] needs a role and a string content");
        return false;
      }
      const std::string role = m["role"].get<std::string>();
      if (role != "system" && role != "user" && role != "assistant") {
        *reason = "unknown_role";
        *message = absl::StrCat("messages[", k, "]: role '", role.substr(0, 64), "' is not system, user or assistant");
        return false;
      }
      if (role == "assistant" && m["content"].get<std::string>().empty()) {
        *reason = "empty_assistant_content";
        return false;
      }
      if (m.contains("weight") && !(m["weight"] == 0 || m["weight"] == 1)) {
        *reason = "malformed_conversation";
        *message = absl::StrCat("messages[", k, "].weight must be 0 or 1");
        return false;
      }
      trained |= role == "assistant" && !(m.contains("weight") && m["weight"] == 0);
    }
    if (!trained) {
      *reason = "no_assistant_turn";
      return false;
    }
    Json conversation = {{"messages", messages}};
    if (record.contains("tools")) conversation["tools"] = record["tools"];
    auto tokenized = text::TokenizeRecord(*bpe_, template_.get(), template_name_, conversation, false);
    if (!tokenized.ok()) {
      *reason = "template_refused";
      *message = std::string(tokenized.status().message());
      return false;
    }
    e->ids = (*tokenized)["ids"].get<std::vector<int64_t>>();
    const auto mask = (*tokenized)["assistant_mask"].get<std::vector<int>>();
    e->piece_labels.assign(e->ids.size(), kIgnore);
    for (size_t k = 0; k < e->ids.size(); ++k) {
      if (all || mask[k]) e->piece_labels[k] = e->ids[k];
    }
    return true;
  }

  // Examples packed into sequences of at most max_length, best fit decreasing:
  // longest first (ties in data order), each into the sequence it fills most
  // closely (the fullest that has room), else into a new one.
  // O(n log n).
  static std::vector<Encoded> Pack(std::vector<Encoded> examples, int max_length) {
    std::vector<size_t> order(examples.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return examples[a].ids.size() > examples[b].ids.size(); });
    std::vector<Encoded> out;
    std::multimap<size_t, size_t> room;  // free tokens -> sequence, in creation order among equals
    for (size_t i : order) {
      Encoded& e = examples[i];
      auto fit = room.lower_bound(e.ids.size());
      size_t at;
      if (fit == room.end()) {
        at = out.size();
        out.emplace_back();
      } else {
        at = fit->second;
        room.erase(fit);
      }
      Encoded& into = out[at];
      const int64_t segment = into.segments.empty() ? 1 : into.segments.back() + 1;
      into.ids.insert(into.ids.end(), e.ids.begin(), e.ids.end());
      into.piece_labels.insert(into.piece_labels.end(), e.piece_labels.begin(), e.piece_labels.end());
      into.segments.insert(into.segments.end(), e.ids.size(), segment);
      room.emplace(static_cast<size_t>(max_length) - into.ids.size(), at);
    }
    for (auto& o : out) o.types.assign(o.ids.size(), 0);
    return out;
  }

  // format text with packing: every text with its specials and EOS,
  // concatenated and cut into max_length blocks; the last partial block is
  // kept. Each block's tokens but its first are trained.
  std::vector<Encoded> Blocks(const std::vector<data::Example>& examples, int max_length, EncodeReport* r) const {
    std::vector<int64_t> stream;
    for (const auto& x : examples) {
      const std::vector<int64_t> ids = bpe_->EncodeText(x.text, true);
      stream.insert(stream.end(), ids.begin(), ids.end());
      stream.push_back(eos_);
    }
    std::vector<Encoded> out;
    const auto block = static_cast<size_t>(max_length);
    for (size_t at = 0; at + 1 < stream.size(); at += block) {
      Encoded e;
      e.ids.assign(stream.begin() + static_cast<long>(at),
                   stream.begin() + static_cast<long>(std::min(stream.size(), at + block)));
      e.piece_labels = e.ids;
      e.types.assign(e.ids.size(), 0);
      out.push_back(std::move(e));
    }
    r->examples = static_cast<int64_t>(examples.size());
    r->sequences = static_cast<int64_t>(out.size());
    return out;
  }

  const text::BpeTokenizer* bpe_ = nullptr;
  std::shared_ptr<text::ChatTemplate> template_;
  std::string template_name_, format_ = "messages";
  bool all_ = false, packing_ = false;
  int64_t eos_ = -1;
  int vocab_size_ = 1;
};

}  // namespace

std::unique_ptr<Task> NewCausalLm() { return std::make_unique<CausalLm>(); }

}  // namespace attune::worker::task
