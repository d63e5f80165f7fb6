#include "worker/data/dataset.h"

#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace attune::worker::data {
namespace {

namespace fs = std::filesystem;
using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

class DataTest : public ::testing::Test {
 protected:
  std::string File(const std::string& name, const std::string& content) {
    fs::path dir = fs::temp_directory_path() / ("attune_data_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::string path = (dir / name).string();
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
  static void TearDownTestSuite() {
    fs::remove_all(fs::temp_directory_path() / ("attune_data_" + std::to_string(::getpid())));
  }
};

TEST_F(DataTest, CsvQuotedFieldsNewlinesQuotesCrlfAndBom) {
  std::string path = File("a.csv",
                          "\xEF\xBB\xBFid,text,label\r\n"
                          "1,\"hello, world\",pos\r\n"
                          "2,\"she said \"\"hi\"\"\nand left\",neg\r\n"
                          "3,plain,pos\n");
  auto r = ReadRecords(path, {});
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ(*(*r)[0].text, "hello, world");
  EXPECT_EQ(*(*r)[1].text, "she said \"hi\"\nand left");
  EXPECT_EQ(*(*r)[1].label, "neg");
  EXPECT_EQ((*r)[1].line, 3);
  EXPECT_EQ((*r)[2].line, 5);  // the embedded newline counts
  EXPECT_EQ(*(*r)[2].label, "pos");
}

TEST_F(DataTest, PlainTextIsOneRecordPerParagraphAndHasNoLabels) {
  std::string path = File("p.txt",
                          "\xEF\xBB\xBF" "First paragraph,\r\nits second line.\r\n\r\n \t\n\n"
                          "Second one.\nTrailing line without newline");
  ReaderOptions o;
  o.require_label = false;
  auto r = ReadRecords(path, o);
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ(*(*r)[0].text, "First paragraph,\nits second line.");
  EXPECT_EQ((*r)[0].line, 1);
  EXPECT_EQ(*(*r)[1].text, "Second one.\nTrailing line without newline");
  EXPECT_EQ((*r)[1].line, 6);
  EXPECT_FALSE((*r)[0].label.has_value());
  // A directory: its .txt files in name order, nothing else.
  File("dir/b.txt", "bee\n");
  File("dir/a.txt", "ay\n\nay two\n");
  File("dir/c.csv", "text\nsee\n");
  auto d = ReadRecords(fs::path(path).parent_path() / "dir", o);
  ASSERT_THAT(d, IsOk());
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ(*(*d)[0].text, "ay");
  EXPECT_EQ(*(*d)[2].text, "bee");
  // Labelled tasks cannot read it; an oversized paragraph names its line.
  EXPECT_THAT(ReadRecords(path, {}), StatusIs(absl::StatusCode::kInvalidArgument,
                                              "only tasks masked_lm and causal_lm (data.format text) read it"));
  o.max_field_bytes = 20;
  EXPECT_THAT(ReadRecords(path, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                             "p.txt:2: paragraph exceeds the 20-byte field limit"));
  CleaningPolicy none;
  none.kind = LabelKind::kNone;
  CleanResult c = Clean(*d, none, std::nullopt, "dir");
  EXPECT_EQ(c.examples.size(), 3u);
  EXPECT_EQ(c.labels.size(), 0);
}

TEST_F(DataTest, ConllAndJsonlTokenLists) {
  ReaderOptions o;
  o.token_lists = true;
  o.text_column = "words";
  o.label_column = "tags";
  std::string conll = File("n.conll", "-DOCSTART- -X- O O\n\nAspirin NN B-DRUG\nhelps\tVB\tO\n\n\nfever NN B-DIS\n");
  auto r = ReadRecords(conll, o);
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].words, (std::vector<std::string>{"Aspirin", "helps"}));
  EXPECT_EQ((*r)[0].tags, (std::vector<std::string>{"B-DRUG", "O"}));
  EXPECT_EQ((*r)[0].line, 3);
  EXPECT_EQ((*r)[1].line, 7);
  EXPECT_THAT(ReadRecords(File("bad.conll", "token-without-tag\n"), o),
              StatusIs(absl::StatusCode::kInvalidArgument, "bad.conll:1: expected a token and its tag"));
  EXPECT_THAT(ReadRecords(conll, {}), StatusIs(absl::StatusCode::kInvalidArgument, "only task token_classification"));
  std::string jsonl = File("n.jsonl", "{\"words\": [\"a\", \"b\"], \"tags\": [\"O\", \"B-X\"]}\n"
                                      "{\"words\": [\"c\"], \"tags\": [\"O\", \"O\"]}\n");
  auto j = ReadRecords(jsonl, o);
  ASSERT_THAT(j, IsOk());
  CleaningPolicy tags;
  tags.kind = LabelKind::kTags;
  CleanResult c = Clean(*j, tags, std::nullopt, "n.jsonl");
  ASSERT_EQ(c.examples.size(), 1u);
  EXPECT_EQ(c.report.dropped["tag_count_mismatch"], 1);
  EXPECT_EQ(c.labels.labels(), (std::vector<std::string>{"B-X", "O"}));
  EXPECT_EQ(c.examples[0].tags, (std::vector<int>{1, 0}));
  EXPECT_THAT(ReadRecords(File("s.jsonl", "{\"words\": \"a b\", \"tags\": []}\n"), o),
              StatusIs(absl::StatusCode::kInvalidArgument, "field 'words' must be an array"));
}

TEST_F(DataTest, CsvDuplicateHeaderNamesAreRefused) {
  // Which "text" is the text would be a guess; pandas would rename one.
  EXPECT_THAT(ReadRecords(File("dup.csv", "text,label,text\na,pos,b\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "dup.csv:1: column 'text' appears twice in the header"));
  EXPECT_THAT(ReadRecords(File("dup.tsv", "id\ttext\tlabel\tid\n1\ta\tpos\t2\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "column 'id' appears twice"));
  // Unnamed columns (a pandas index) are not names, and may repeat.
  EXPECT_THAT(ReadRecords(File("unnamed.csv", ",text,,label\n0,a,x,pos\n"), {}), IsOk());
}

TEST_F(DataTest, CsvUnbalancedQuoteNamesFileAndLine) {
  std::string path = File("b.csv", "text,label\nok,1\n\"never closed,1\nmore,0\n");
  EXPECT_THAT(ReadRecords(path, {}), StatusIs(absl::StatusCode::kInvalidArgument, "b.csv:3: unterminated quoted field"));
}

TEST_F(DataTest, CsvWrongFieldCountNamesLine) {
  std::string path = File("c.csv", "text,label\nok,1\nextra,1,2\n");
  EXPECT_THAT(ReadRecords(path, {}), StatusIs(absl::StatusCode::kInvalidArgument, "c.csv:3: expected 2 fields"));
}

TEST_F(DataTest, CsvMissingColumnAndEmptyFile) {
  EXPECT_THAT(ReadRecords(File("d.csv", "body,label\nx,1\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "no column named 'text'"));
  EXPECT_THAT(ReadRecords(File("e.csv", ""), {}), StatusIs(absl::StatusCode::kInvalidArgument, "empty"));
  auto header_only = ReadRecords(File("f.csv", "text,label\n"), {});
  ASSERT_THAT(header_only, IsOk());
  EXPECT_TRUE(header_only->empty());
}

TEST_F(DataTest, CsvCharacterAfterClosingQuoteIsAnError) {
  EXPECT_THAT(ReadRecords(File("g.csv", "text,label\n\"a\"b,1\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "g.csv:2: unexpected character 'b'"));
}

TEST_F(DataTest, HugeFieldIsRefusedWithBoundedMemory) {
  // A 100 MB field with a 1 MiB cap: the reader stops at the cap.
  fs::path dir = fs::temp_directory_path() / ("attune_data_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string path = (dir / "huge.csv").string();
  {
    std::ofstream f(path, std::ios::binary);
    f << "text,label\n\"";
    std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 100; ++i) f << chunk;
    f << "\",1\n";
  }
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  EXPECT_THAT(ReadRecords(path, {}), StatusIs(absl::StatusCode::kInvalidArgument, "huge.csv:2: field 1 exceeds"));
  getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 50 * 1024) << "KiB of extra peak RSS";
}

TEST_F(DataTest, JsonlIntegerLabelsNullsAndErrors) {
  std::string path = File("a.jsonl",
                          "{\"text\": \"one\", \"label\": 1}\n"
                          "\n"
                          "{\"text\": \"two\", \"label\": \"neg\", \"extra\": [1]}\r\n"
                          "{\"text\": null, \"label\": 0}\n");
  auto r = ReadRecords(path, {});
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ(*(*r)[0].label, "1");
  EXPECT_EQ((*r)[1].line, 3);
  EXPECT_FALSE((*r)[2].text.has_value());
  EXPECT_THAT(ReadRecords(File("b.jsonl", "{\"text\": \"a\", \"label\": 1}\n{broken\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "b.jsonl:2: not valid JSON"));
  EXPECT_THAT(ReadRecords(File("c.jsonl", "[1, 2]\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "c.jsonl:1: a JSONL line must be a JSON object"));
  EXPECT_THAT(ReadRecords(File("d.jsonl", "{\"text\": {\"a\": 1}, \"label\": 1}\n"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, "field 'text' must be a string or a number"));
  EXPECT_THAT(ReadRecords(File("e.xml", "x"), {}), StatusIs(absl::StatusCode::kInvalidArgument, "unknown data format"));
  EXPECT_THAT(ReadRecords("/nonexistent/x.csv", {}), StatusIs(absl::StatusCode::kNotFound, "x.csv"));
}

// NOTE [JSON numbers as written]: an integral number within int64 reads as
// that integer; any other number as the line spells it. 3333e34 used to reach
// a float-to-int64 cast out of range (fuzz_data_reader).
TEST_F(DataTest, JsonlNumbersReadAsIntegersOrAsWritten) {
  std::string path = File("n.jsonl",
                          "{\"text\": \"a\", \"label\": 3333e34}\n"
                          "{\"text\": \"b\", \"label\": -1e19}\n"
                          "{\"text\": \"c\", \"label\": 1.0}\n"
                          "{\"text\": \"d\", \"label\": 1e2}\n"
                          "{\"text\": \"e\", \"label\": 0.10}\n"
                          "{\"text\": 2.50, \"label\": -0.0}\n"
                          "{\"text\": \"f\", \"label\": 9223372036854775807}\n");
  auto r = ReadRecords(path, {});
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->size(), 7u);
  std::vector<std::string> labels;
  for (const Record& rec : *r) labels.push_back(*rec.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"3333e34", "-1e19", "1", "100", "0.10", "0", "9223372036854775807"}));
  EXPECT_EQ(*(*r)[5].text, "2.50");
  // Multi-label arrays and regression targets read the same way.
  ReaderOptions multi;
  multi.label_list = true;
  auto m = ReadRecords(File("m.jsonl", "{\"text\": \"a\", \"label\": [3333e34, 2.0, \"x\"]}\n"), multi);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(*(*m)[0].label, "3333e34;2;x");
  auto reg = ReadRecords(File("r.jsonl", "{\"text\": \"a\", \"label\": 3333e34}\n"), {});
  ASSERT_THAT(reg, IsOk());
  CleaningPolicy number;
  number.kind = LabelKind::kNumber;
  CleanResult c = Clean(*reg, number, std::nullopt, "r.jsonl");
  ASSERT_EQ(c.examples.size(), 1u);
  EXPECT_DOUBLE_EQ(c.examples[0].value, 3.333e37);
}

TEST_F(DataTest, CleaningDropsAndCountsEachReason) {
  std::string path = File("clean.csv",
                          "text,label\n"
                          "good food,pos\n"         // 2 kept
                          "good   food ,pos\n"      // 3 duplicate after whitespace normalisation
                          ",pos\n"                  // 4 missing text
                          "no label,\n"             // 5 missing label
                          "  ,neg\n"                // 6 blank text
                          "torn,pos\n"              // 7 conflicting
                          "torn,neg\n"              // 8 conflicting
                          "bad \xff\xfe bytes,neg\n"  // 9 invalid UTF-8
                          "awful,neg\n");           // 10 kept
  auto r = ReadRecords(path, {});
  ASSERT_THAT(r, IsOk());
  CleanResult c = Clean(*r, {}, std::nullopt, path);
  EXPECT_EQ(c.examples.size(), 2u);
  EXPECT_EQ(c.report.rows_read, 9);
  EXPECT_EQ(c.report.rows_kept, 2);
  EXPECT_EQ(c.report.dropped["duplicate"], 1);
  EXPECT_EQ(c.report.dropped["missing_text"], 2);
  EXPECT_EQ(c.report.dropped["missing_label"], 1);
  EXPECT_EQ(c.report.dropped["conflicting_label"], 2);
  EXPECT_EQ(c.report.dropped["invalid_utf8"], 1);
  EXPECT_EQ(c.report.sample_lines["duplicate"], (std::vector<int64_t>{3}));
  EXPECT_EQ(c.report.label_counts["pos"], 1);
  EXPECT_EQ(c.labels.labels(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_NE(c.report.ToJson().find("\"conflicting_label\": 2"), std::string::npos);
}

TEST_F(DataTest, CleaningPolicyCanKeepDuplicates) {
  std::vector<Record> rs = {{2, "a", std::nullopt, "x", {}, {}}, {3, "a", std::nullopt, "x", {}, {}},
                            {4, "b", std::nullopt, "y", {}, {}}};
  CleaningPolicy keep;
  keep.drop_duplicates = false;
  EXPECT_EQ(Clean(rs, keep, std::nullopt, "m").examples.size(), 3u);
  EXPECT_EQ(Clean(rs, {}, std::nullopt, "m").examples.size(), 2u);
}

TEST_F(DataTest, MultiLabelSetsFromJsonlArraysAndSeparatedText) {
  std::string path = File("multi.jsonl",
                          "{\"text\": \"a\", \"tags\": [\"law\", \"tax\"]}\n"  // 1 kept: {law, tax}
                          "{\"text\": \"b\", \"tags\": \"tax; law;law\"}\n"      // 2 kept: the same set, spelled otherwise
                          "{\"text\": \"a\", \"tags\": [\"tax\", \"law\"]}\n"  // 3 duplicate of 1 (order does not matter)
                          "{\"text\": \"c\", \"tags\": []}\n"                      // 4 kept: the empty set
                          "{\"text\": \"d\"}\n"                                      // 5 missing label
                          "{\"text\": \"e\", \"tags\": [\"med\"]}\n"             // 6 conflicting with 7
                          "{\"text\": \"e\", \"tags\": [\"med\", \"law\"]}\n");  // 7
  ReaderOptions ro;
  ro.label_column = "tags";
  ro.label_list = true;
  auto r = ReadRecords(path, ro);
  ASSERT_THAT(r, IsOk());
  CleaningPolicy policy;
  policy.kind = LabelKind::kMultiLabel;
  CleanResult c = Clean(*r, policy, std::nullopt, path);
  ASSERT_EQ(c.examples.size(), 3u);
  EXPECT_EQ(c.labels.labels(), (std::vector<std::string>{"law", "tax"}));  // med only on dropped rows
  EXPECT_EQ(c.examples[0].labels, (std::vector<int>{0, 1}));
  EXPECT_EQ(c.examples[1].labels, (std::vector<int>{0, 1}));
  EXPECT_TRUE(c.examples[2].labels.empty());
  EXPECT_EQ(c.report.dropped["duplicate"], 1);
  EXPECT_EQ(c.report.dropped["missing_label"], 1);
  EXPECT_EQ(c.report.dropped["conflicting_label"], 2);
  EXPECT_EQ(c.report.label_counts["law"], 2);
  // With a given label map, a row carrying any other label is dropped.
  CleanResult given = Clean(*r, policy, LabelMap({"tax"}), path);
  EXPECT_EQ(given.examples.size(), 1u);  // only the empty set
  EXPECT_EQ(given.report.dropped["unknown_label"], 2);
  // A label holding the separator cannot be told apart from two labels.
  EXPECT_THAT(ReadRecords(File("semi.jsonl", "{\"text\": \"a\", \"tags\": [\"a;b\"]}\n"), ro),
              StatusIs(absl::StatusCode::kInvalidArgument, "semi.jsonl:1: field 'tags': label 'a;b' holds ';'"));
}

TEST_F(DataTest, RegressionTargetsMustBeFiniteNumbers) {
  std::string path = File("reg.csv",
                          "text,score\n"
                          "a,1.5\n"     // kept
                          "b, 2 \n"     // kept (spaces trimmed)
                          "c,abc\n"     // invalid
                          "d,nan\n"     // invalid
                          "e,1e999\n"   // invalid (overflows)
                          "f,-0.5\n"    // kept
                          "a,1.50\n"    // duplicate of line 2 (the same number)
                          "g,3\n"       // conflicting
                          "g,4\n");
  ReaderOptions ro;
  ro.label_column = "score";
  auto r = ReadRecords(path, ro);
  ASSERT_THAT(r, IsOk());
  CleaningPolicy policy;
  policy.kind = LabelKind::kNumber;
  CleanResult c = Clean(*r, policy, std::nullopt, path);
  ASSERT_EQ(c.examples.size(), 3u);
  EXPECT_EQ(c.examples[1].value, 2.0);
  EXPECT_EQ(c.examples[2].value, -0.5);
  EXPECT_EQ(c.report.dropped["invalid_number"], 3);
  EXPECT_EQ(c.report.sample_lines["invalid_number"], (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(c.report.dropped["duplicate"], 1);
  EXPECT_EQ(c.report.dropped["conflicting_label"], 2);
  EXPECT_EQ(c.labels.size(), 0);
  EXPECT_TRUE(c.report.has_targets);
  EXPECT_DOUBLE_EQ(c.report.target_mean, 1.0);
  EXPECT_NE(c.report.ToJson().find("\"targets\""), std::string::npos);
}

TEST(LabelMapTest, IntegersSortNumericallyStringsLexically) {
  EXPECT_EQ(LabelMap::FromLabels({"10", "2", "1"}).labels(), (std::vector<std::string>{"1", "2", "10"}));
  EXPECT_EQ(LabelMap::FromLabels({"b", "a", "b"}).labels(), (std::vector<std::string>{"a", "b"}));
  LabelMap m({"neg", "pos"});
  EXPECT_EQ(*m.Id("pos"), 1);
  EXPECT_FALSE(m.Id("other").has_value());
}

TEST(Utf8Test, RejectsOverlongSurrogatesAndTruncation) {
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xE4\xB8"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
}

std::vector<Example> Labelled(int n_pos, int n_neg) {
  std::vector<Example> out;
  for (int i = 0; i < n_pos + n_neg; ++i) out.push_back({"t" + std::to_string(i), std::nullopt, i < n_pos ? 1 : 0, i, {}, 0, {}, {}});
  return out;
}

TEST(SplitTest, StratifiedAndSeeded) {
  std::vector<Example> train, val, train2, val2;
  StratifiedSplit(Labelled(80, 20), 0.25, 7, &train, &val);
  StratifiedSplit(Labelled(80, 20), 0.25, 7, &train2, &val2);
  ASSERT_EQ(val.size(), 25u);
  int val_pos = 0;
  for (const auto& e : val) val_pos += e.label;
  EXPECT_EQ(val_pos, 20);
  EXPECT_EQ(train.size(), 75u);
  for (size_t i = 0; i < val.size(); ++i) EXPECT_EQ(val[i].text, val2[i].text);
  std::vector<Example> t3, v3;
  StratifiedSplit(Labelled(80, 20), 0.25, 8, &t3, &v3);
  bool differs = false;
  for (size_t i = 0; i < val.size(); ++i) differs |= val[i].text != v3[i].text;
  EXPECT_TRUE(differs);
}

TEST(SamplerTest, RanksGetDisjointSlicesOfTheSameGlobalBatches) {
  const int64_t n = 103, batch = 4;
  EpochSampler one(n, batch * 3, 0, 1, 42);
  std::vector<EpochSampler> ranks;
  for (int r = 0; r < 3; ++r) ranks.emplace_back(n, batch, r, 3, 42);
  std::set<int64_t> seen;
  while (true) {
    auto global = one.Next();
    std::vector<int64_t> joined;
    for (auto& s : ranks) {
      auto part = s.Next();
      joined.insert(joined.end(), part.begin(), part.end());
    }
    EXPECT_EQ(joined, global);
    if (global.empty()) break;
    for (int64_t i : global) EXPECT_TRUE(seen.insert(i).second) << "index " << i << " twice";
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(n));
}

TEST(SamplerTest, EpochsDifferAndStateRestores) {
  EpochSampler s(50, 5, 0, 1, 9);
  auto first = s.Next();
  s.Next();
  SamplerState saved = s.state();
  auto third = s.Next();
  EpochSampler resumed(50, 5, 0, 1, 0);
  resumed.Restore(saved);
  EXPECT_EQ(resumed.Next(), third);
  s.StartEpoch(1);
  EXPECT_NE(s.Next(), first);
}

TEST(SamplerTest, PermutationIsPortable) {
  // Fixed values: the permutation must not depend on the standard library.
  EXPECT_EQ(SeededPermutation(8, 1), (std::vector<int64_t>(SeededPermutation(8, 1))));
  auto p = SeededPermutation(1000, 123);
  std::set<int64_t> u(p.begin(), p.end());
  EXPECT_EQ(u.size(), 1000u);
}

}  // namespace
}  // namespace attune::worker::data
