#include "worker/train/predict_decoder.h"

#include <optional>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/text.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/chat_template.h"
#include "worker/text/chat_tokenize.h"
#include "worker/train/generate.h"

namespace attune::worker::train {
namespace {

using Json = nlohmann::ordered_json;

struct Record {
  int64_t line = 0;
  Json tokenized;  // attune tokenize's object: ids, and for a conversation its text and assistant_mask
};

}  // namespace

absl::StatusOr<std::set<int64_t>> StopIds(const model::DecoderLmImpl& m, const text::BpeTokenizer& tok,
                                          const std::string& model_dir) {
  std::set<int64_t> ids;
  for (const auto& [name, token] : tok.named_tokens()) {
    if (name == "eos_token" && tok.TokenId(token) >= 0) ids.insert(tok.TokenId(token));
  }
  const std::string path = model_dir + "/generation_config.json";
  std::vector<int64_t> from_config = m.config().eos_token_ids;
  auto text = model_dir.empty() ? absl::StatusOr<std::string>(absl::NotFoundError("no model directory"))
                                : common::ReadFile(path, int64_t{1} << 20);
  if (text.ok()) {
    const Json j = Json::parse(*text, nullptr, false);
    if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      from_config.clear();
      const Json& e = j["eos_token_id"];
      for (const Json& v : e.is_array() ? e : Json::array({e})) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= m.config().vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": eos_token_id must be token ids below vocab_size ",
                                                         m.config().vocab_size, ", not ", e.dump()));
        }
        from_config.push_back(v.get<int64_t>());
      }
    }
  } else if (!absl::IsNotFound(text.status())) {
    return text.status();
  }
  ids.insert(from_config.begin(), from_config.end());
  return ids;
}

absl::Status PredictCausalLm(model::DecoderLmImpl& m, const std::string& model_dir, const std::string& input,
                             const PredictOptions& o, std::ostream& out, PredictStats* stats) {
  const bool generate = o.max_new_tokens > 0;
  if (generate == o.logprobs) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, " is a causal language model (", m.config().architecture,
                                                   "): give --logprobs or --max_new_tokens N (one of them)"));
  }
  ATTUNE_ASSIGN_OR_RETURN(const std::unique_ptr<text::BpeTokenizer> tok,
                          text::BpeTokenizer::FromDirectory(model_dir));
  if (static_cast<int64_t>(tok->vocab().size()) > m.config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": the tokenizer has ", tok->vocab().size(),
                                                   " tokens but ", model_dir, "/config.json's vocab_size is ",
                                                   m.config().vocab_size));
  }
  const std::string template_name = model_dir + "/tokenizer_config.json: chat_template";
  std::optional<text::ChatTemplate> tmpl;
  if (!tok->chat_template().empty()) {
    ATTUNE_ASSIGN_OR_RETURN(text::ChatTemplate parsed, text::ChatTemplate::Parse(tok->chat_template(), template_name));
    tmpl = std::move(parsed);
  }
  std::set<int64_t> stop_ids;
  if (generate) {
    ATTUNE_ASSIGN_OR_RETURN(stop_ids, StopIds(m, *tok, model_dir));
    // A conversation's answer also ends with its turn.
    if (tmpl) {
      if (const int64_t eot = text::EndOfTurnToken(*tok, *tmpl, template_name); eot >= 0) stop_ids.insert(eot);
    }
  }
  // A stop string that is a special token's text stops at that token.
  std::string stop = o.stop;
  if (!stop.empty() && tok->TokenId(stop) >= 0 && tok->IsSpecial(tok->TokenId(stop))) {
    stop_ids.insert(tok->TokenId(stop));
    stop.clear();
  }
  ATTUNE_ASSIGN_OR_RETURN(const std::string text, common::ReadFile(input, int64_t{4} << 30));

  SamplingOptions so;
  so.max_new_tokens = o.max_new_tokens;
  so.temperature = o.temperature;
  so.top_p = o.top_p;
  so.top_k = o.top_k;
  std::vector<Record> batch;
  // The records of a batch in input order, then written.
  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    std::vector<std::vector<int64_t>> ids;
    for (const Record& r : batch) ids.push_back(r.tokenized["ids"].get<std::vector<int64_t>>());
    auto fail_at = [&](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat(input, ": ", s.message()));
    };
    if (!generate) {
      auto lp = TokenLogprobs(m, ids);
      if (!lp.ok()) return fail_at(lp.status());
      for (size_t i = 0; i < batch.size(); ++i) {
        Json j = batch[i].tokenized;
        j["logprobs"] = (*lp)[i];
        out << j.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
      }
    } else {
      std::vector<uint64_t> seeds;
      for (const Record& r : batch) seeds.push_back(o.seed + static_cast<uint64_t>(r.line));
      // With a stop string, a row ends once its text (special tokens
      // skipped) contains it.
      std::function<bool(size_t, const std::vector<int64_t>&)> stopped;
      if (!stop.empty()) {
        stopped = [&](size_t, const std::vector<int64_t>& g) {
          return tok->Decode(g, /*skip_special_tokens=*/true).find(stop) != std::string::npos;
        };
      }
      GenerationStats gs;
      auto got = Generate(m, ids, so, seeds, stop_ids, stopped, &gs);
      if (!got.ok()) return fail_at(got.status());
      if (stats != nullptr) {
        stats->prompt_tokens += gs.prompt_tokens;
        stats->generated_tokens += gs.generated_tokens;
        stats->prefill_seconds += gs.prefill_seconds;
        stats->decode_seconds += gs.decode_seconds;
      }
      for (size_t i = 0; i < batch.size(); ++i) {
        const Generation& g = (*got)[i];
        std::string generated = tok->Decode(g.ids, /*skip_special_tokens=*/true);
        if (!stop.empty()) {
          if (size_t at = generated.find(stop); at != std::string::npos) generated.resize(at);
        }
        Json j = {{"generated_ids", g.ids},
                  {"generated_text", generated},
                  {"finish_reason", g.finish_reason},
                  {"prompt_tokens", ids[i].size()}};
        out << j.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
      }
    }
    batch.clear();
    out.flush();
    if (!out) return absl::UnavailableError("cannot write predictions");
    return absl::OkStatus();
  };

  const int64_t limit = m.config().max_position_embeddings;
  ATTUNE_RETURN_IF_ERROR(common::ForEachLine(text, [&](int64_t line_no, std::string_view line) -> absl::Status {
    auto where = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(input, ":", line_no, ": ", what));
    };
    Json record = Json::parse(line, nullptr, false);
    if (record.is_discarded()) return where("not JSON");
    if (record.is_object() && o.text_column != "text" && record.contains(o.text_column)) {
      record["text"] = record[o.text_column];
    }
    auto tokenized = text::TokenizeRecord(*tok, tmpl ? &*tmpl : nullptr, template_name, record, generate);
    if (!tokenized.ok()) return where(std::string(tokenized.status().message()));
    const auto n = static_cast<int64_t>((*tokenized)["ids"].size());
    if (n == 0 && generate) return where("the prompt has no tokens");
    if (n > limit || (generate && n >= limit)) {
      return where(absl::StrCat(n, " tokens; the model's max_position_embeddings is ", limit,
                                generate ? " (and generation needs one more)" : ""));
    }
    batch.push_back({line_no, std::move(*tokenized)});
    if (batch.size() >= static_cast<size_t>(o.batch_size)) return flush();
    return absl::OkStatus();
  }));
  return flush();
}

}  // namespace attune::worker::train
