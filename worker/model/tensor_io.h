#pragma once

// Conversion between common::SafeTensor bytes and torch tensors.

#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace attune::worker::model {

// F32, F16, BF16 and F64 become float32; I64/I32 keep an integer type.
absl::StatusOr<torch::Tensor> ToTorch(const common::SafeTensor& t, const std::string& name);
// Contiguous CPU copy; float tensors are stored as F32, int64 as I64.
common::SafeTensor FromTorch(const torch::Tensor& t);
std::string ShapeString(c10::IntArrayRef sizes);

}  // namespace attune::worker::model
