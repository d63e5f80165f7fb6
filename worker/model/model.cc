// What is the same for every architecture: parameter counts and the
// word-vector initialisation of the input embeddings.

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "worker/model/bert.h"
#include "worker/model/model.h"

namespace attune::worker::model {

absl::Status InitWordEmbeddings(Model& model, const WordVectors& vectors, const VocabularyMatch& match,
                                uint64_t seed) {
  const int64_t n = static_cast<int64_t>(match.token_ids.size());
  torch::Tensor table_weights = model.input_embeddings();
  const int64_t d = vectors.dimensions, h = table_weights.size(1), v = table_weights.size(0);
  if (n == 0) return absl::OkStatus();
  for (int64_t id : match.token_ids) {
    if (id < 0 || id >= v) return absl::InternalError(absl::StrCat("token id ", id, " outside the embeddings"));
  }
  torch::NoGradGuard g;
  auto table = torch::from_blob(const_cast<float*>(vectors.values.data()),
                                {static_cast<int64_t>(vectors.words.size()), d}, torch::kFloat32);
  auto rows = torch::tensor(match.vector_rows, torch::kLong);
  // Double precision for the centring, projection and scale: the result is
  // then the same on every rank and build, whatever the BLAS.
  torch::Tensor x = table.index_select(0, rows).to(torch::kFloat64);
  x = x - x.mean(0, /*keepdim=*/true);
  // A fixed projection from `seed` alone (its own generator: the model's
  // random stream is not touched). QR of a Gaussian matrix gives orthonormal
  // columns; transposed when the target is wider than the vectors.
  auto gen = at::detail::createCPUGenerator(seed ^ 0x676c6f7665ULL);
  torch::Tensor gauss = at::randn({std::max(d, h), std::min(d, h)}, gen, torch::kFloat64);
  torch::Tensor q = std::get<0>(torch::linalg_qr(gauss, "reduced"));  // [max, min], orthonormal columns
  torch::Tensor projection = h >= d ? q.t() : q;                       // [d, h]
  torch::Tensor e = x.matmul(projection);
  const double sd = e.std().item<double>();
  if (!(sd > 0)) return absl::OkStatus();  // a single covered token: nothing to scale against
  e = e * (model.initializer_range() / sd);
  table_weights.index_copy_(0, torch::tensor(match.token_ids, torch::kLong), e.to(torch::kFloat32));
  return absl::OkStatus();
}

ParameterCounts CountParameters(Model& model) {
  ParameterCounts c;
  for (auto& [name, t] : model.NamedParameters()) {
    c.total += t.numel();
    if (t.requires_grad()) c.trainable += t.numel();
  }
  return c;
}

}  // namespace attune::worker::model
