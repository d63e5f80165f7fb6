// attune predict with decoder LLMs (worker/train/generate.h): tiny random
// Llama 3.1 and Qwen 3 checkpoints (make_tiny_decoder.py) carrying the real
// tokenizers and chat templates npm ships. Log-probabilities and greedy
// continuations, batched with a KV cache and left padding, equal an
// independent float64 forward pass that recomputes the whole sequence at
// every step (decoder_generate_reference.py); generated text is what
// Hugging Face's JavaScript tokenizer decodes. Generation stops at EOS ids and
// stop strings; sampling is reproducible whatever the batch; bad input exits
// 65 naming the line or file; --output replaces only a regular file.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/json_lines.h"
#include "tests/testing/process.h"

namespace attune {
namespace {

using ::attune::testing::Bin;
using ::attune::testing::Fixture;
using ::attune::testing::RunCommand;
using Json = nlohmann::ordered_json;

using ::attune::testing::JsonLines;
using ::attune::testing::NpmTokenizer;

const char* kInput =
    R"({"text": "The patient was given 325 mg of aspirin"}
{"messages": [{"role": "system", "content": "You answer questions about contracts."}, {"role": "user", "content": "Is a verbal agreement binding?"}]}
{"text": "Q3 revenue rose 12%"}
{"messages": [{"role": "user", "content": "日本語で? 👍🏽"}]}
)";

// make_tiny_decoder.py at `path` with `arch_flags`, carrying the npm
// `tokenizer` package's files and generation_config.json's `eos` ids.
attune::testing::CommandResult MakeDecoder(const std::string& path, const std::string& arch_flags,
                                           const std::string& tokenizer, const std::string& eos) {
  return RunCommand("/usr/bin/python3 " + Fixture("make_tiny_decoder.py") + " " + path + " " + arch_flags +
                    " --tokenizer " + NpmTokenizer(tokenizer) + " --eos " + eos);
}

struct Family {
  std::string name, tokenizer, flags, eos;
};
void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

class GenerateCliTest : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    const Family& f = GetParam();
    auto made = MakeDecoder(model_, f.flags, f.tokenizer, f.eos);
    ASSERT_EQ(made.exit_code, 0) << made.output;
    attune::testing::WriteText(dir_ / "in.jsonl", kInput);
  }
  // attune with `args`; its JSON lines from --output.
  std::vector<Json> Attune(const std::string& args, const std::string& out_name = "out.jsonl") {
    const std::string out = dir_ / out_name;
    auto run = RunCommand(Bin("attune") + " " + args + " --output " + out);
    EXPECT_EQ(run.exit_code, 0) << args << "\n" << run.output;
    last_output_ = run.output;
    return JsonLines(attune::testing::ReadText(out));
  }
  std::vector<Json> Predict(const std::string& flags) {
    return Attune("predict --model " + model_ + " --input " + (dir_ / "in.jsonl") + " " + flags);
  }
  // The reference's answer for each {"ids", "max_new_tokens", "stop_ids"}.
  std::vector<Json> Reference(const std::vector<Json>& requests) {
    std::string text;
    for (const Json& r : requests) text += r.dump() + "\n";
    attune::testing::WriteText(dir_ / "ref_in.jsonl", text);
    auto run = RunCommand("/usr/bin/python3 " + Fixture("decoder_generate_reference.py") + " " + model_ + " " +
                          (dir_ / "ref_in.jsonl"));
    EXPECT_EQ(run.exit_code, 0) << run.output;
    return JsonLines(run.output);
  }

  attune::testing::TempDir dir_{"generate_" + GetParam().name};
  std::string model_ = dir_ / "model";
  std::string last_output_;
};

TEST_P(GenerateCliTest, LogprobsAndGreedyContinuationsMatchAnIndependentReference) {
  const std::vector<int64_t> eos = [&] {
    std::vector<int64_t> out;
    std::istringstream in(GetParam().eos);
    for (std::string x; std::getline(in, x, ',');) out.push_back(std::stoll(x));
    return out;
  }();
  // Prompts as attune tokenize gives them (checked against HF's JS
  // tokenizer and python3-jinja2 in tokenize_cli_test).
  const auto prompts = Attune("tokenize --model " + model_ + " --input " + (dir_ / "in.jsonl") +
                                  " --add_generation_prompt",
                              "prompts.jsonl");
  const auto plain = Attune("tokenize --model " + model_ + " --input " + (dir_ / "in.jsonl"), "plain.jsonl");
  ASSERT_EQ(prompts.size(), 4u);
  // Batches of 3 and 1: left padding and a batch of its own.
  const auto generated = Predict("--max_new_tokens 10 --batch_size 3 --threads 2");
  EXPECT_NE(last_output_.find("generated tokens in"), std::string::npos) << last_output_;
  EXPECT_NE(last_output_.find("tokens/s"), std::string::npos) << last_output_;
  const auto scored = Predict("--logprobs --batch_size 4");
  ASSERT_EQ(generated.size(), 4u);
  ASSERT_EQ(scored.size(), 4u);
  std::vector<Json> requests;
  for (const Json& p : prompts) requests.push_back({{"ids", p["ids"]}, {"max_new_tokens", 10}, {"stop_ids", eos}});
  for (const Json& s : scored) requests.push_back({{"ids", s["ids"]}, {"max_new_tokens", 0}, {"stop_ids", eos}});
  const auto ref = Reference(requests);
  ASSERT_EQ(ref.size(), 8u);
  std::string decode_requests;
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE("record " + std::to_string(i));
    // Greedy steps whose two best tokens are this far apart cannot flip
    // between float32 and float64.
    EXPECT_GT(ref[i]["min_margin"].get<double>(), 1e-3);
    EXPECT_EQ(generated[i]["generated_ids"], ref[i]["generated_ids"]);
    EXPECT_EQ(generated[i]["finish_reason"], ref[i]["finish_reason"]);
    EXPECT_EQ(generated[i]["prompt_tokens"], prompts[i]["ids"].size());
    decode_requests += Json{{"decode", generated[i]["generated_ids"]}}.dump() + "\n";
    // Log-probabilities: the ids are attune tokenize's (a text with the
    // post-processor's specials, a conversation as rendered).
    EXPECT_EQ(scored[i]["ids"], plain[i]["ids"]);
    const auto got = scored[i]["logprobs"].get<std::vector<double>>();
    const auto want = ref[4 + i]["logprobs"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), scored[i]["ids"].size() - 1);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (size_t k = 0; k < got.size(); ++k) worst = std::max(worst, std::abs(got[k] - want[k]));
    EXPECT_LT(worst, 1e-4);
    if (scored[i].contains("messages") || plain[i].contains("assistant_mask")) {
      EXPECT_EQ(scored[i]["assistant_mask"], plain[i]["assistant_mask"]);
    }
  }
  attune::testing::WriteText(dir_ / "decode.jsonl", decode_requests);
  auto decoded = RunCommand("node " + Fixture("hf_tokenize.cjs") + " " + model_ + " " + (dir_ / "decode.jsonl"));
  ASSERT_EQ(decoded.exit_code, 0) << decoded.output;
  const auto texts = JsonLines(decoded.output);
  ASSERT_EQ(texts.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(generated[i]["generated_text"], texts[i]["text"]) << "record " << i;
}

TEST_P(GenerateCliTest, StopsAtEosIdsAndStopStringsAndSamplesTheSameWhateverTheBatch) {
  const auto greedy = Predict("--max_new_tokens 8");
  ASSERT_EQ(greedy.size(), 4u);
  // An EOS id from generation_config.json: the third greedy token of record 0.
  const auto first = greedy[0]["generated_ids"].get<std::vector<int64_t>>();
  ASSERT_EQ(first.size(), 8u) << greedy[0];
  const int64_t stop_id = first[2];
  attune::testing::WriteText(model_ + "/generation_config.json", Json{{"eos_token_id", stop_id}}.dump());
  const auto stopped = Predict("--max_new_tokens 8");
  for (size_t i = 0; i < 4; ++i) {
    const auto want = greedy[i]["generated_ids"].get<std::vector<int64_t>>();
    const auto got = stopped[i]["generated_ids"].get<std::vector<int64_t>>();
    const auto at = std::find(want.begin(), want.end(), stop_id);
    // Stopped at its first stop id, the id kept; else unchanged.
    EXPECT_EQ(got, std::vector<int64_t>(want.begin(), at == want.end() ? at : at + 1)) << "record " << i;
    EXPECT_EQ(stopped[i]["finish_reason"], at == want.end() ? "length" : "stop") << "record " << i;
  }
  EXPECT_LE(stopped[0]["generated_ids"].size(), 3u);
  std::remove((model_ + "/generation_config.json").c_str());

  // A stop string from inside record 0's greedy text (one whole character
  // from its middle): the text ends before its first occurrence.
  const std::string text = greedy[0]["generated_text"];
  ASSERT_GE(text.size(), 4u) << greedy[0];
  size_t from = text.size() / 2;
  while (from > 0 && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) --from;
  size_t to = from + 1;
  while (to < text.size() && (static_cast<unsigned char>(text[to]) & 0xC0) == 0x80) ++to;
  const std::string stop = text.substr(from, to - from);
  std::string quoted = "'";
  for (char ch : stop) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  const auto cut = Predict("--max_new_tokens 8 --stop " + quoted + "'");
  EXPECT_EQ(cut[0]["finish_reason"], "stop");
  EXPECT_EQ(cut[0]["generated_text"], text.substr(0, text.find(stop)));
  const auto cut_ids = cut[0]["generated_ids"].get<std::vector<int64_t>>();
  EXPECT_LT(cut_ids.size(), first.size());
  EXPECT_EQ(cut_ids, std::vector<int64_t>(first.begin(), first.begin() + static_cast<long>(cut_ids.size())));

  // Sampling: the same seed gives the same tokens in batches of 1 and 4;
  // another seed other tokens; top_k 1 and a tiny top_p are greedy.
  const auto a = Predict("--max_new_tokens 8 --temperature 1.5 --seed 11 --batch_size 1");
  const auto b = Predict("--max_new_tokens 8 --temperature 1.5 --seed 11 --batch_size 4");
  const auto c = Predict("--max_new_tokens 8 --temperature 1.5 --seed 12 --batch_size 4");
  const auto k1 = Predict("--max_new_tokens 8 --temperature 1.5 --top_k 1 --seed 3");
  const auto p0 = Predict("--max_new_tokens 8 --temperature 1.5 --top_p 1e-6 --seed 3");
  int differs = 0, from_greedy = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a[i]["generated_ids"], b[i]["generated_ids"]) << "record " << i;
    differs += a[i]["generated_ids"] != c[i]["generated_ids"];
    from_greedy += a[i]["generated_ids"] != greedy[i]["generated_ids"];
    EXPECT_EQ(k1[i]["generated_ids"], greedy[i]["generated_ids"]) << "record " << i;
    EXPECT_EQ(p0[i]["generated_ids"], greedy[i]["generated_ids"]) << "record " << i;
  }
  EXPECT_GT(differs, 0);
  EXPECT_GT(from_greedy, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateCliTest,
                         ::testing::Values(Family{"llama3_1", "tokenizer-llama3_1", "--arch llama3", "128001,128008,128009"},
                                           Family{"qwen3", "tokenizer-qwen3", "--arch qwen3 --tie", "151645,151643"}),
                         [](const auto& info) { return info.param.name; });

TEST(GenerateCliErrorsTest, BadInputExits65NamingTheLineOrFileAndLeavesTheOutputAlone) {
  attune::testing::TempDir dir("generate_errors");
  const std::string model = dir / "model";
  auto made = MakeDecoder(model, "--arch qwen3 --tie", "tokenizer-qwen3", "151645");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::string words;
  for (int i = 0; i < 200; ++i) words += " word";
  attune::testing::WriteText(dir / "long.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"" + words + "\"}\n");
  attune::testing::WriteText(dir / "bad.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  attune::testing::WriteText(dir / "ok.jsonl", "{\"text\": \"ok\"}\n");
  const std::string out = dir / "out.jsonl";
  attune::testing::WriteText(out, "earlier results\n");
  const std::string predict = Bin("attune") + " predict --model " + model + " --output " + out + " --input ";
  struct Bad {
    std::string args;
    int exit_code;
    std::string says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {dir / "ok.jsonl", 65, "give --logprobs or --max_new_tokens N"},
           {(dir / "long.jsonl") + " --max_new_tokens 4", 65, "long.jsonl:2: 200 tokens; the model's max_position_embeddings is 128"},
           {(dir / "long.jsonl") + " --logprobs", 65, "long.jsonl:2: 200 tokens"},
           {(dir / "bad.jsonl") + " --logprobs", 65, "bad.jsonl:2: not JSON"},
           {(dir / "ok.jsonl") + " --logprobs --max_new_tokens 3", 2, "two modes"},
           {(dir / "ok.jsonl") + " --max_new_tokens 3 --temperature -1", 2, "--temperature must be in [0, 100]"},
           {(dir / "ok.jsonl") + " --max_new_tokens 3 --top_p 0", 2, "--top_p in (0, 1]"},
       }) {
    auto run = RunCommand(predict + bad.args);
    EXPECT_EQ(run.exit_code, bad.exit_code) << bad.args << "\n" << run.output;
    EXPECT_NE(run.output.find(bad.says), std::string::npos) << bad.args << "\n" << run.output;
    EXPECT_EQ(attune::testing::ReadText(out), "earlier results\n") << bad.args;
  }
  attune::testing::WriteText(model + "/generation_config.json", R"({"eos_token_id": ["x"]})");
  auto run = RunCommand(predict + (dir / "ok.jsonl") + " --max_new_tokens 3");
  EXPECT_EQ(run.exit_code, 65) << run.output;
  EXPECT_NE(run.output.find("generation_config.json: eos_token_id must be token ids"), std::string::npos) << run.output;
  std::remove((model + "/generation_config.json").c_str());

}

// Hardening: --output is never replaced unless it is a regular file. A
// character device (made here, as root; the real /dev is never touched) and
// a FIFO are written through; a symbolic link, the input and anything inside
// --model are refused with exit 2 and left as they were; "-" is standard
// output.
TEST(PredictOutputTargetsTest, DevicesAndFifosAreWrittenThroughLinksAndTheModelAreRefused) {
  attune::testing::TempDir dir("predict_targets");
  const std::string model = dir / "model";
  auto made = MakeDecoder(model, "--arch llama3", "tokenizer-llama3_1", "128009");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string input = dir / "in.jsonl";
  attune::testing::WriteText(input, "{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n");
  const std::string predict = Bin("attune") + " predict --model " + model + " --input " + input +
                              " --max_new_tokens 2 --output ";
  struct stat st {};
  const std::string device = dir / "null";
  if (attune::testing::MakeNullDevice(device)) {
    auto run = RunCommand(predict + device);
    EXPECT_EQ(run.exit_code, 0) << run.output;
    ASSERT_EQ(::lstat(device.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device was replaced";
  } else {
    std::cerr << "not root: the character-device case is not run\n";
  }
  const std::string fifo = dir / "fifo", copy = dir / "from_fifo.jsonl";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto run = RunCommand("sh -c 'cat " + fifo + " > " + copy + " 2>&1 & reader=$!; " + predict + fifo +
                        "; rc=$?; wait $reader; exit $rc'");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  EXPECT_EQ(JsonLines(attune::testing::ReadText(copy)).size(), 2u);

  const std::string target = dir / "target.jsonl", link = dir / "link.jsonl";
  attune::testing::WriteText(target, "keep\n");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  const std::string weights = model + "/model.safetensors";
  const auto weights_size = std::filesystem::file_size(weights);
  for (const auto& [path, says] : std::vector<std::pair<std::string, std::string>>{
           {link, "is a symbolic link"},
           {input, "is the --input file"},
           {weights, "is inside the --model directory"},
           {model + "/new.jsonl", "is inside the --model directory"}}) {
    run = RunCommand(predict + path);
    EXPECT_EQ(run.exit_code, 2) << path << "\n" << run.output;
    EXPECT_NE(run.output.find(says), std::string::npos) << run.output;
  }
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(attune::testing::ReadText(target), "keep\n");
  EXPECT_EQ(std::filesystem::file_size(weights), weights_size);
  EXPECT_FALSE(std::filesystem::exists(model + "/new.jsonl"));
  EXPECT_EQ(JsonLines(attune::testing::ReadText(input)).size(), 2u);

  run = RunCommand(Bin("attune") + " predict --model " + model + " --input " + input + " --max_new_tokens 2 --output -");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(run.output.find("Did you really mean"), std::string::npos) << run.output;
  EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 3) << run.output;  // 2 records, 1 figures line
  EXPECT_EQ(run.output.rfind("{\"generated_ids\":", 0), 0u) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "-"));
}

}  // namespace
}  // namespace attune
