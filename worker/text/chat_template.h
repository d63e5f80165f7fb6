#pragma once

// Chat templates: tokenizer_config.json's `chat_template` rendered as
// transformers' apply_chat_template renders it, by an interpreter of the
// Jinja2 subset chat templates use (NOTE [chat templates]). The environment
// is transformers': trim_blocks, lstrip_blocks, loop controls (break,
// continue), the `generation` block, raise_exception, strftime_now, and its
// tojson (ensure_ascii off, insertion order kept); values behave as Python's
// (truthiness, slicing by code point, str() and repr() of numbers, lists and
// dicts), undefined names as Jinja2's default Undefined. A construct outside
// the subset (include, extends, call blocks, an unknown filter or test) is
// refused when the template is parsed, naming it and the line, never
// rendered differently. Torch-free; a parsed template is immutable and may be
// rendered from several threads.

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace attune::worker::text {

namespace jinja {
struct Template;
}

struct ChatTemplateLimits {
  int64_t max_output_bytes = int64_t{64} << 20;
  int64_t max_loop_iterations = 1'000'000;
  int max_call_depth = 64;  // macro recursion
};

class ChatTemplate {
 public:
  // `name` (a file, a key) is named in errors with the line.
  static absl::StatusOr<ChatTemplate> Parse(const std::string& source, const std::string& name,
                                            ChatTemplateLimits limits = {});
  // `context`: the variables (messages, tools, add_generation_prompt,
  // bos_token, ...), keys in the order the caller gave them. Errors:
  // kInvalidArgument for the template's raise_exception (its message) and for
  // an operation Python would refuse (naming the line).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  // strftime_now's clock, for tests (unix seconds, local time; 0: now).
  void set_now_for_testing(int64_t unix_seconds) { now_ = unix_seconds; }

 private:
  std::shared_ptr<const jinja::Template> impl_;
  int64_t now_ = 0;
};

}  // namespace attune::worker::text
