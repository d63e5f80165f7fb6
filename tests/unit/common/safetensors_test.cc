#include "common/safetensors.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "common/testing/status_matchers.h"

namespace attune::common {
namespace {

using ::attune::testing::IsOk;
using ::attune::testing::StatusIs;

SafeTensorsFile Sample() {
  SafeTensorsFile f;
  SafeTensor a;
  a.dtype = "F32";
  a.shape = {2, 3};
  a.data = std::string(24, '\0');
  for (int i = 0; i < 6; ++i) {
    float v = static_cast<float>(i) * 1.5f;
    std::memcpy(&a.data[static_cast<size_t>(i) * 4], &v, 4);
  }
  f.tensors["a.weight"] = a;
  SafeTensor b;
  b.dtype = "BF16";
  b.shape = {4};
  b.data = std::string(8, '\x3f');
  f.tensors["b"] = b;
  f.metadata["format"] = "pt";
  return f;
}

// Rewrites the JSON header of a serialized file.
std::string WithHeader(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(SafeTensorsTest, RoundTripKeepsEveryByte) {
  SafeTensorsFile f = Sample();
  std::string bytes = SerializeSafeTensors(f);
  EXPECT_EQ(bytes.size() % 8, 0u);
  auto back = ParseSafeTensors(bytes, "mem");
  ASSERT_THAT(back, IsOk());
  ASSERT_EQ(back->tensors.size(), 2u);
  EXPECT_EQ(back->tensors["a.weight"].data, f.tensors["a.weight"].data);
  EXPECT_EQ(back->tensors["a.weight"].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back->tensors["b"].dtype, "BF16");
  EXPECT_EQ(back->metadata["format"], "pt");
}

// ReadSafeTensors maps the file: the tensors view its bytes (no copy in
// `data`), outlive the file object they came from, and a damaged file is
// refused as ParseSafeTensors refuses it.
TEST(SafeTensorsTest, AFileIsMappedAndItsTensorsViewIt) {
  const std::string path = ::testing::TempDir() + "/mapped_" + std::to_string(::getpid()) + ".safetensors";
  ASSERT_THAT(WriteSafeTensors(path, Sample()), IsOk());
  SafeTensor a;
  {
    auto file = ReadSafeTensors(path);
    ASSERT_THAT(file, IsOk());
    a = file->tensors["a.weight"];
    EXPECT_TRUE(a.data.empty());
    EXPECT_NE(a.mapping, nullptr);
    EXPECT_EQ(file->tensors["b"].bytes(), std::string(8, '\x3f'));
  }
  EXPECT_EQ(a.bytes(), Sample().tensors["a.weight"].data);  // the mapping lives on with the tensor
  // A copy serialises the same bytes as the original.
  SafeTensorsFile again;
  again.tensors["a.weight"] = a;
  SafeTensorsFile only_a = Sample();
  only_a.tensors.erase("b");
  only_a.metadata.clear();
  EXPECT_EQ(SerializeSafeTensors(again), SerializeSafeTensors(only_a));
  const std::string bytes = SerializeSafeTensors(Sample());
  {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 4);
  }
  EXPECT_THAT(ReadSafeTensors(path), StatusIs(absl::StatusCode::kInvalidArgument, "outside"));
  {
    std::ofstream(path, std::ios::binary | std::ios::trunc);
  }
  EXPECT_THAT(ReadSafeTensors(path), StatusIs(absl::StatusCode::kInvalidArgument, "shorter than"));
  std::remove(path.c_str());
  EXPECT_THAT(ReadSafeTensors(path), StatusIs(absl::StatusCode::kNotFound, "cannot open"));
}

TEST(SafeTensorsTest, TruncatedFileIsRefused) {
  std::string bytes = SerializeSafeTensors(Sample());
  EXPECT_THAT(ParseSafeTensors(bytes.substr(0, bytes.size() - 4), "t.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, "outside"));
  EXPECT_THAT(ParseSafeTensors(bytes.substr(0, 5), "t.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, "shorter than"));
}

TEST(SafeTensorsTest, HeaderLengthBeyondFileIsRefused) {
  std::string bytes = SerializeSafeTensors(Sample());
  bytes[0] = '\xff';
  bytes[1] = '\xff';
  EXPECT_THAT(ParseSafeTensors(bytes, "x"), StatusIs(absl::StatusCode::kInvalidArgument, "header length"));
}

TEST(SafeTensorsTest, SizeMustMatchShapeAndDtype) {
  std::string h = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  EXPECT_THAT(ParseSafeTensors(WithHeader(h, std::string(8, '\0')), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "tensor 'w' holds 8 bytes but shape and F32 need 12"));
}

TEST(SafeTensorsTest, OverlapAndGapsAreRefused) {
  std::string overlap =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_THAT(ParseSafeTensors(WithHeader(overlap, std::string(12, '\0')), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "overlap"));
  std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(ParseSafeTensors(WithHeader(gap, std::string(8, '\0')), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "gap"));
}

TEST(SafeTensorsTest, BadJsonAndUnknownDtypeAreRefused) {
  EXPECT_THAT(ParseSafeTensors(WithHeader("{not json", ""), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a JSON object"));
  std::string h = R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})";
  EXPECT_THAT(ParseSafeTensors(WithHeader(h, std::string(1, '\0')), "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown dtype Q4"));
}

}  // namespace
}  // namespace attune::common
