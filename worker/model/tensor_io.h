#pragma once

// Conversion between common::SafeTensor bytes and torch tensors.

#include <optional>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace attune::worker::model {

// F32, F16, BF16 and F64 become float32; I64/I32 keep an integer type.
// IsLoadableDtype says which dtypes ToTorch takes, without converting.
bool IsLoadableDtype(const std::string& dtype);
absl::StatusOr<torch::Tensor> ToTorch(const common::SafeTensor& t, const std::string& name);
// A tensor over `t`'s own bytes, without a copy, for reading only (they may
// lie in a read-only mapping); nullopt when they are not aligned for their
// floating type or the type is not F32/F16/BF16/F64. Valid while `t` is.
std::optional<torch::Tensor> BytesAsTensor(const common::SafeTensor& t);
// Contiguous CPU copy; float tensors are stored as F32, int64 as I64.
common::SafeTensor FromTorch(const torch::Tensor& t);
std::string ShapeString(c10::IntArrayRef sizes);

}  // namespace attune::worker::model
