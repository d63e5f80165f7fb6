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

}  // namespace attune::worker::text
