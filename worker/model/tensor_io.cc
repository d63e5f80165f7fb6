#include "worker/model/tensor_io.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attune::worker::model {

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
  if (!t.data.empty()) std::memcpy(out.data_ptr(), t.data.data(), t.data.size());
  if (type == torch::kFloat16 || type == torch::kBFloat16 || type == torch::kFloat64) out = out.to(torch::kFloat32);
  return out;
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
