// attune tokenize (NOTE [assistant mask]) on the real tokenizers and chat
// templates npm ships: texts give Hugging Face's ids (the JS reference);
// conversations give the template's rendering (python3-jinja2), its ids, and
// an assistant mask whose tokens spell exactly each assistant message and
// what closes its turn (Qwen 3: earlier turns without their think block).
// Bad input exits 65 naming the line; a device as --output stays a device.

#include <sys/stat.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/testing/status_matchers.h"
#include "tests/testing/json_lines.h"
#include "tests/testing/process.h"
#include "worker/text/bpe_tokenizer.h"

namespace attune::worker::text {
namespace {

using ::attune::testing::Bin;
using ::attune::testing::Fixture;
using ::attune::testing::IsOk;
using ::attune::testing::RunCommand;
using Json = nlohmann::ordered_json;

using ::attune::testing::JsonLines;
using ::attune::testing::NpmTokenizer;

const char* kConversations[] = {
    R"({"messages": [{"role": "system", "content": "You are a clinical assistant."},
        {"role": "user", "content": "What is the usual dose of aspirin?"},
        {"role": "assistant", "content": "Typically 325 mg every 4 to 6 hours."},
        {"role": "user", "content": "And for children? 日本語 👍🏽"},
        {"role": "assistant", "content": "Not under 16, because of Reye's syndrome."}]})",
    R"({"messages": [{"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\nIt is 4."},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "<think>\nAgain.\n</think>\n\n6."}]})",
    R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "skip me", "weight": 0},
        {"role": "user", "content": "again"}, {"role": "assistant", "content": "train me"}]})",
};

// What each assistant message's trained tokens must spell, in order, for a template family.
std::vector<std::string> TrainedTexts(const std::string& pkg, const Json& messages) {
  std::vector<std::string> out;
  for (size_t k = 0; k < messages.size(); ++k) {
    const Json& m = messages[k];
    if (m["role"] != "assistant" || (m.contains("weight") && m["weight"] == 0)) continue;
    std::string content = m["content"];
    const bool last = k + 1 == messages.size();
    if (pkg == "tokenizer-qwen3") {
      // Earlier turns lose their think block; the last keeps it as written,
      // or gets an empty one.
      const size_t end = content.find("</think>");
      if (!last && end != std::string::npos) {
        content = content.substr(end + 8);
        content.erase(0, content.find_first_not_of('\n'));
      } else if (last && end == std::string::npos) {
        content = "<think>\n\n</think>\n\n" + content;
      }
      out.push_back(content + "<|im_end|>\n");
    } else if (pkg == "tokenizer-qwen2_5") {
      out.push_back(content + "<|im_end|>\n");
    } else {
      out.push_back(content + "<|eot_id|>");  // Llama 3: content trimmed, then the end of turn
    }
  }
  return out;
}

class TokenizeCliTest : public ::testing::TestWithParam<std::string> {
 protected:
  attune::testing::TempDir dir_{"tokenize_cli"};
};

TEST_P(TokenizeCliTest, ConversationsGiveTheTemplatesTextTheirIdsAndTheAssistantsTokens) {
  const std::string models = NpmTokenizer(GetParam());
  std::string input;
  for (const char* c : kConversations) input += Json::parse(c).dump() + "\n";
  attune::testing::WriteText(dir_ / "chats.jsonl", input);
  auto run = RunCommand(Bin("attune") + " tokenize --model " + models + " --input " + (dir_ / "chats.jsonl") +
                        " --output " + (dir_ / "out.jsonl"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto got = JsonLines(testing::ReadText(dir_ / "out.jsonl"));
  ASSERT_EQ(got.size(), std::size(kConversations));

  // The rendering: python3-jinja2 in transformers' environment.
  const Json config = Json::parse(testing::ReadText(models + "/tokenizer_config.json"));
  Json spec = {{"now", 0}, {"cases", Json::array()}};
  for (const char* c : kConversations) {
    Json ctx = {{"messages", Json::parse(c)["messages"]}, {"add_generation_prompt", false}};
    for (const char* k : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
      if (config.contains(k) && config[k].is_string()) ctx[k] = config[k];
    }
    spec["cases"].push_back({{"template", config["chat_template"]}, {"context", ctx}});
  }
  attune::testing::WriteText(dir_ / "cases.json", spec.dump());
  auto rendered = RunCommand("/usr/bin/python3 " + Fixture("render_chat_template.py") + " " + (dir_ / "cases.json"));
  ASSERT_EQ(rendered.exit_code, 0) << rendered.output;
  const auto want_text = JsonLines(rendered.output);

  // The ids: Hugging Face's JS tokenizer on that text, without added specials.
  std::string texts;
  for (const auto& g : got) texts += Json{{"text", g["text"]}}.dump() + "\n";
  attune::testing::WriteText(dir_ / "texts.jsonl", texts);
  auto ids = RunCommand("node " + Fixture("hf_tokenize.cjs") + " " + models + " " + (dir_ / "texts.jsonl"));
  ASSERT_EQ(ids.exit_code, 0) << ids.output;
  const auto want_ids = JsonLines(ids.output);

  auto tok = BpeTokenizer::FromTokenizerJson(models + "/tokenizer.json");
  ASSERT_THAT(tok.status(), IsOk());
  for (size_t r = 0; r < got.size(); ++r) {
    EXPECT_EQ(got[r]["text"], want_text[r]["output"]) << "conversation " << r;
    EXPECT_EQ(got[r]["ids"], want_ids[r]["pieces"]) << "conversation " << r;
    const auto id_list = got[r]["ids"].get<std::vector<int64_t>>();
    const auto mask = got[r]["assistant_mask"].get<std::vector<int>>();
    ASSERT_EQ(mask.size(), id_list.size());
    // Each run of trained tokens spells one assistant message and its turn's end.
    std::vector<std::string> runs;
    for (size_t i = 0; i < mask.size(); ++i) {
      if (!mask[i]) continue;
      std::vector<int64_t> run;
      while (i < mask.size() && mask[i]) run.push_back(id_list[i++]);
      runs.push_back((*tok)->Decode(run, false));
    }
    const auto messages = Json::parse(kConversations[r])["messages"];
    EXPECT_EQ(runs, TrainedTexts(GetParam(), messages)) << "conversation " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Npm, TokenizeCliTest,
                         ::testing::Values("tokenizer-llama3_1", "tokenizer-qwen2_5", "tokenizer-qwen3"),
                         [](const auto& info) { return info.param.substr(10); });

TEST(TokenizeCliErrorsTest, TextsAreHfIdsBadInputExits65AndDevNullStaysADevice) {
  attune::testing::TempDir dir("tokenize_cli_errors");
  const std::string models = NpmTokenizer("tokenizer-llama3");
  auto texts = RunCommand(Bin("attune") + " tokenize --model " + models + " --input " + Fixture("tokenizer_texts.jsonl"));
  ASSERT_EQ(texts.exit_code, 0) << texts.output;
  auto ref = RunCommand("node " + Fixture("hf_tokenize.cjs") + " " + models + " " + Fixture("tokenizer_texts.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto got = JsonLines(texts.output), want = JsonLines(ref.output);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i]["ids"], want[i]["ids"]) << "line " << i + 1;

  attune::testing::WriteText(dir / "bad.jsonl", "{\"text\": \"fine\"}\n{\"messages\": \"not a list\"}\n");
  auto bad = RunCommand(Bin("attune") + " tokenize --model " + models + " --input " + (dir / "bad.jsonl") +
                        " --output " + (dir / "out.jsonl"));
  EXPECT_EQ(bad.exit_code, 65) << bad.output;
  EXPECT_NE(bad.output.find("bad.jsonl:2: messages: must be a non-empty list"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::ifstream(dir / "out.jsonl").good()) << "nothing partial is left behind";

  // A template whose rendering of the whole conversation does not begin with
  // its rendering of the first turns cannot say which tokens are the assistant's.
  std::ofstream(dir / "tokenizer.json") << testing::ReadText(models + "/tokenizer.json");
  std::ofstream(dir / "tokenizer_config.json")
      << Json{{"chat_template", "{% for m in messages | reverse %}{{ m.role }}: {{ m.content }}\n{% endfor %}"}}.dump();
  attune::testing::WriteText(dir / "chat.jsonl", Json::parse(kConversations[2]).dump() + "\n");
  auto reversed = RunCommand(Bin("attune") + " tokenize --model " + dir.path() + " --input " + (dir / "chat.jsonl"));
  EXPECT_EQ(reversed.exit_code, 65) << reversed.output;
  EXPECT_NE(reversed.output.find("does not begin with its rendering up to messages[3]"), std::string::npos)
      << reversed.output;

  // A device as --output (made here: the real /dev is never touched) is
  // written through, not replaced.
  const std::string device = dir / "null";
  if (!attune::testing::MakeNullDevice(device)) GTEST_SKIP() << "not root: no character device to write to";
  auto written = RunCommand(Bin("attune") + " tokenize --model " + models + " --input " +
                            Fixture("tokenizer_texts.jsonl") + " --output " + device);
  EXPECT_EQ(written.exit_code, 0) << written.output;
  struct stat st {};
  ASSERT_EQ(::lstat(device.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device was replaced";
}

// NOTE [tokenizer.model]: a directory with SentencePiece's tokenizer.model
// and no tokenizer.json tokenises texts and conversations exactly as the
// tokenizer.json it was made from; a damaged one exits 65 naming the file.
TEST(TokenizeCliSentencePieceTest, ATokenizerModelDirectoryTokenisesAsItsTokenizerJson) {
  attune::testing::TempDir spm("tokenize_spm"), json("tokenize_spm_json");
  const std::string models = NpmTokenizer("tokenizer-llama2");
  auto made = RunCommand("/usr/bin/python3 " + Fixture("sentencepiece_reference.py") + " make " + models +
                         "/tokenizer.json " + spm.path());
  ASSERT_EQ(made.exit_code, 0) << made.output;
  Json config = Json::parse(testing::ReadText(spm / "tokenizer_config.json"));
  config["chat_template"] =
      "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
      "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";
  for (const auto* d : {&spm, &json}) attune::testing::WriteText(*d / "tokenizer_config.json", config.dump());
  attune::testing::WriteText(json / "tokenizer.json", testing::ReadText(models + "/tokenizer.json"));
  attune::testing::WriteText(spm / "in.jsonl",
                             R"({"text": "Hello world, 日本語 👍🏽"})"
                             "\n"
                             R"({"messages": [{"role": "user", "content": "Dose?"}, {"role": "assistant", "content": "325 mg."}]})"
                             "\n");
  std::vector<Json> outs;
  for (const auto* d : {&spm, &json}) {
    auto run = RunCommand(Bin("attune") + " tokenize --model " + d->path() + " --input " + (spm / "in.jsonl"));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const auto lines = JsonLines(run.output);
    ASSERT_EQ(lines.size(), 2u) << run.output;
    outs.push_back(Json(lines));
  }
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0][1]["text"], "<s>[INST] Dose? [/INST]325 mg.</s>");
  EXPECT_GT(outs[0][1]["assistant_mask"].size(), 0u);

  attune::testing::WriteText(spm / "tokenizer.model", "not a model");
  auto bad = RunCommand(Bin("attune") + " tokenize --model " + spm.path() + " --input " + (spm / "in.jsonl"));
  EXPECT_EQ(bad.exit_code, 65) << bad.output;
  EXPECT_NE(bad.output.find("tokenizer.model: (file): not a SentencePiece model"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace attune::worker::text
