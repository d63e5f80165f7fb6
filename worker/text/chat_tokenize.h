#pragma once

// What `attune tokenize` gives for one input record (NOTE [assistant mask]):
//   {"text": s}          -> {"ids": [...]}: HF's tokenizer(s)["input_ids"];
//   {"messages": [...]}  -> {"text": rendered, "ids": [...], "assistant_mask": [...]}: the conversation
//                           rendered by the chat template, its ids without added specials, and 1 on
//                           exactly the tokens of each assistant message.
// Torch-free.

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/chat_template.h"

namespace attune::worker::text {

// `tmpl` may be null (a tokenizer without a chat template): a conversation
// is then refused. `template_name` names the template in errors.
absl::StatusOr<nlohmann::ordered_json> TokenizeRecord(const BpeTokenizer& tok, const ChatTemplate* tmpl,
                                                      const std::string& template_name,
                                                      const nlohmann::ordered_json& record,
                                                      bool add_generation_prompt);

// The special token `tmpl` closes an assistant turn with (Llama 3's
// <|eot_id|>, ChatML's <|im_end|>), or -1 when it closes turns with ordinary
// text or cannot render a turn. A base model's eos_token is often another
// token, and a generated answer must stop at its turn's end.
int64_t EndOfTurnToken(const BpeTokenizer& tok, const ChatTemplate& tmpl, const std::string& template_name);

}  // namespace attune::worker::text
