// The allow-list unpickler on hand-written pickles: what a state_dict needs
// is read, a strided view is gathered exactly, and everything else (other
// globals, opcodes, views beyond their storage, truncation, corruption) is
// refused without a crash.

#include "common/torch_pickle.h"

#include <cstring>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace attune::common {
namespace {

using ::testing::HasSubstr;

std::string Global(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string Str(const std::string& s) {
  std::string out = "X";
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((s.size() >> (8 * i)) & 0xff));
  return out + s;
}
std::string Int(int v) { return std::string("K") + static_cast<char>(v); }

// {"w": a (2, 3) view with strides (1, 2) at offset 1 of a 7-float storage},
// the layout torch.save gives a transposed tensor.
std::string StateDict(const std::string& dict_global = Global("collections", "OrderedDict"), int numel = 7,
                      int cols = 3) {
  std::string p = "\x80\x02";
  p += dict_global + ")R";
  p += "(" + Str("w") + Global("torch._utils", "_rebuild_tensor_v2");
  p += "((" + Str("storage") + Global("torch", "FloatStorage") + Str("0") + Str("cpu") + Int(numel) + "tQ";
  p += Int(1) + Int(2) + Int(cols) + "\x86" + Int(1) + Int(2) + "\x86" + "\x89";
  p += Global("collections", "OrderedDict") + ")R";
  p += "tRu.";
  return p;
}

std::string Floats(int n) {
  std::string out(static_cast<size_t>(n) * 4, '\0');
  for (int i = 0; i < n; ++i) {
    float f = static_cast<float>(i);
    std::memcpy(&out[static_cast<size_t>(i) * 4], &f, 4);
  }
  return out;
}

TEST(TorchPickleTest, ReadsAStateDictAndGathersAStridedView) {
  auto d = ParseStateDictPickle(StateDict(), "t");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->tensors.size(), 1u);
  const auto& [name, t] = d->tensors[0];
  EXPECT_EQ(name, "w");
  EXPECT_EQ(t.dtype, "F32");
  EXPECT_EQ(t.offset, 1);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.stride, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(d->storages.at("0").numel, 7);
  auto st = Materialize(t, Floats(7), "t");
  ASSERT_TRUE(st.ok()) << st.status();
  std::vector<float> got(6);
  std::memcpy(got.data(), st->data.data(), 24);
  EXPECT_EQ(got, (std::vector<float>{1, 3, 5, 2, 4, 6}));  // element (i, j) is storage[1 + i + 2j]
}

TEST(TorchPickleTest, RefusesGlobalsOutsideTheAllowListByName) {
  auto d = ParseStateDictPickle(StateDict(Global("posix", "system")), "evil.bin");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("evil.bin: refuses global posix.system"));
  std::string p = "\x80\x02" + Global("builtins", "eval") + "(" + Str("1") + "tR.";
  EXPECT_THAT(ParseStateDictPickle(p, "e").status().message(), HasSubstr("refuses global builtins.eval"));
  // STACK_GLOBAL (protocol 4) goes through the same check.
  p = "\x80\x04" + Str("os") + Str("system") + "\x93" + "(" + Str("id") + "tR.";
  EXPECT_THAT(ParseStateDictPickle(p, "e").status().message(), HasSubstr("refuses global os.system"));
}

TEST(TorchPickleTest, RefusesOtherOpcodesAndShapes) {
  EXPECT_THAT(ParseStateDictPickle("\x80\x02\x81.", "o").status().message(), HasSubstr("refuses pickle opcode 0x81"));
  EXPECT_THAT(ParseStateDictPickle("\x80\x02" + Str("x") + ".", "o").status().message(), HasSubstr("not a state_dict"));
  EXPECT_THAT(ParseStateDictPickle(std::string(100000, '('), "o").status().message(), HasSubstr("too many MARKs"));
  EXPECT_THAT(ParseStateDictPickle(std::string(70000, ']'), "o").status().message(), HasSubstr("stack too deep"));
  EXPECT_THAT(ParseStateDictPickle("\x80\x02h\x05.", "o").status().message(), HasSubstr("never stored"));
}

// l = []; l.append(l); and a dict that holds itself: refused (not a state
// dict) and, under the sanitizer build's leak checker, freed (the reference
// cycles leaked before; fuzz_torch_pickle found it).
TEST(TorchPickleTest, AValueThatHoldsItselfIsRefusedAndFreed) {
  const std::string list_in_itself("\x80\x02]q\x00h\x00" "a.", 9);  // "\x00" "a": not \x00a
  EXPECT_THAT(ParseStateDictPickle(list_in_itself, "self.pkl").status().message(), HasSubstr("not a state_dict"));
  const std::string dict_in_itself("\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s.", 15);
  EXPECT_THAT(ParseStateDictPickle(dict_in_itself, "self.pkl").status().message(), HasSubstr("k: a dict, not a tensor"));
}

TEST(TorchPickleTest, RefusesAViewBeyondItsStorage) {
  // (2, 4) with strides (1, 2) from offset 1 reaches element 8 of 7.
  auto d = ParseStateDictPickle(StateDict(Global("collections", "OrderedDict"), 7, 4), "t");
  ASSERT_TRUE(d.ok()) << d.status();
  auto st = Materialize(d->tensors[0].second, Floats(7), "t");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.status().message(), HasSubstr("reaches element 8 of 7"));
}

TEST(TorchPickleTest, EveryTruncationIsRefused) {
  const std::string p = StateDict();
  for (size_t n = 0; n < p.size(); ++n) {
    EXPECT_FALSE(ParseStateDictPickle(p.substr(0, n), "t").ok()) << n;
  }
  EXPECT_FALSE(ReadLegacyTorchFile("PK\x03\x04 not legacy", "t").ok());
  EXPECT_THAT(ReadLegacyTorchFile(p, "t").status().message(), HasSubstr("not a PyTorch file"));
}

// A small deterministic fuzzer: corrupted pickles never crash the parser or
// the gather (run under the sanitizers in CI's debug builds).
TEST(TorchPickleTest, CorruptedPicklesNeverCrash) {
  const std::string p = StateDict();
  const std::string storage = Floats(7);
  std::mt19937 rng(7);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string m = p;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0: m[at] = static_cast<char>(rng()); break;
        case 1: m.erase(at, 1 + rng() % 3); break;
        default: m.insert(at, 1, static_cast<char>(rng())); break;
      }
      if (m.empty()) m = "x";
    }
    auto d = ParseStateDictPickle(m, "fuzz");
    if (!d.ok()) continue;
    ++parsed;
    for (const auto& [name, t] : d->tensors) (void)Materialize(t, storage, "fuzz");
  }
  EXPECT_GT(parsed, 0);  // some mutations stay valid (a changed size or offset) and are gathered or refused
}

}  // namespace
}  // namespace attune::common
