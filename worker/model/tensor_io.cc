#include "worker/model/tensor_io.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attune::worker::model {

bool IsLoadableDtype(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64" || dtype == "I64" || dtype == "I32";
}

absl::StatusOr<torch::Tensor> ToTorch(const common::SafeTensor& t, const std::string& name) {
  torch::ScalarType type;
  if (t.dtype == "F32") type = torch::kFloat32;
  else if (t.dtype == "F16") type = torch::kFloat16;
  else if (t.dtype == "BF16") type = torch::kBFloat16;
  else if (t.dtype == "F64") type = torch::kFloat64;
  else if (t.dtype == "I64") type = torch::kInt64;
  else if (t.dtype == "I32") type = torch::kInt32;
  else return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": unsupported dtype ", t.dtype));
  torch::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(type));
  const std::string_view bytes = t.bytes();
  if (!bytes.empty()) std::memcpy(out.data_ptr(), bytes.data(), bytes.size());
  if (type == torch::kFloat16 || type == torch::kBFloat16 || type == torch::kFloat64) out = out.to(torch::kFloat32);
  return out;
}

std::optional<torch::Tensor> BytesAsTensor(const common::SafeTensor& t) {
  torch::ScalarType type;
  if (t.dtype == "F32") type = torch::kFloat32;
  else if (t.dtype == "F16") type = torch::kFloat16;
  else if (t.dtype == "BF16") type = torch::kBFloat16;
  else if (t.dtype == "F64") type = torch::kFloat64;
  else return std::nullopt;
  const std::string_view bytes = t.bytes();
  const auto size = static_cast<uintptr_t>(common::DtypeSize(t.dtype));
  if (bytes.empty() || reinterpret_cast<uintptr_t>(bytes.data()) % size != 0) return std::nullopt;
  return torch::from_blob(const_cast<char*>(bytes.data()), t.shape, torch::TensorOptions().dtype(type));
}

common::SafeTensor FromTorch(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  common::SafeTensor s;
  if (c.scalar_type() == torch::kInt64) {
    s.dtype = "I64";
  } else if (c.scalar_type() == torch::kInt32) {
    s.dtype = "I32";
  } else {
    c = c.to(torch::kFloat32);
    s.dtype = "F32";
  }
  s.shape = c.sizes().vec();
  s.data.assign(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
  return s;
}

std::string ShapeString(c10::IntArrayRef sizes) { return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]"); }

}  // namespace attune::worker::model
