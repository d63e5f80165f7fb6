#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::common {

// One tensor of a safetensors file: raw little-endian bytes plus metadata.
// Torch-free on purpose, so that the format lives in common/ and the model
// layer converts to tensors.
struct SafeTensor {
  std::string dtype;            // "F32", "F16", "BF16", "F64", "I64", "I32", ...
  std::vector<int64_t> shape;
  // Exactly NumElements() * DtypeSize(dtype) bytes: owned in `data`, or, as
  // ReadSafeTensors gives them, in a read-only mapping of the file that
  // `mapping` keeps alive (`data` then empty), so that a checkpoint is never
  // held in memory twice. bytes() is the one way to read them.
  std::string data;
  std::shared_ptr<const void> mapping;
  std::string_view mapped;
  std::string_view bytes() const { return mapping ? mapped : std::string_view(data); }
  int64_t NumElements() const;
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// Bytes per element, or -1 for an unknown dtype.
int DtypeSize(const std::string& dtype);

// Parses and validates a safetensors blob: header length inside the file,
// JSON header well formed, known dtypes, non-negative shapes, offsets inside
// the data section, sizes equal to shape x dtype, no overlap between tensors
// and no gaps. Any violation is kInvalidArgument naming `source` and the tensor.
absl::StatusOr<SafeTensorsFile> ParseSafeTensors(const std::string& bytes,
                                                 const std::string& source);
// The same from a file, mapped read-only rather than read: its tensors are
// views into the mapping (SafeTensor::bytes), which lives as long as any of
// them. The header is validated as above before any tensor is used. A file
// truncated by another process while mapped would fault: checkpoints are
// written by rename, never rewritten in place.
absl::StatusOr<SafeTensorsFile> ReadSafeTensors(const std::string& path);

// Serialises in safetensors layout (tensors sorted by name, 8-byte aligned header).
std::string SerializeSafeTensors(const SafeTensorsFile& file);
absl::Status WriteSafeTensors(const std::string& path, const SafeTensorsFile& file);

}  // namespace attune::common
