// A chat template of arbitrary bytes: parsing refuses or accepts it without a
// crash; an accepted one renders a fixed conversation within small limits.
#include <string>

#include <nlohmann/json.hpp>

#include "worker/text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using attune::worker::text::ChatTemplate;
  static const nlohmann::ordered_json* context = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2? \u00e9"},
                 {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4", "tool_calls": [
                   {"type": "function", "function": {"name": "f", "arguments": {"x": 1, "y": [true, null, 2.5]}}}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})"));
  attune::worker::text::ChatTemplateLimits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_loop_iterations = 10000;
  limits.max_call_depth = 16;
  auto t = ChatTemplate::Parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz", limits);
  if (!t.ok()) return 0;
  (void)t->Render(*context);
  return 0;
}
