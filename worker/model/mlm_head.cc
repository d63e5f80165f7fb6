// The masked-LM head (HF BertOnlyMLMHead), computed at the masked positions only.

#include "worker/model/bert.h"

namespace attune::worker::model {

torch::Tensor BertClassifierImpl::MaskedLmLogits(const torch::Tensor& hidden, const torch::Tensor& positions) {
  TORCH_CHECK(mlm_dense, "a ", config.architecture, " model has no masked-LM head");
  torch::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions);
  h = mlm_ln(torch::gelu(mlm_dense(h)).to(torch::kFloat));  // fp32 LayerNorm under autocast
  return torch::addmm(mlm_bias, h, word->weight.t());
}

torch::Tensor BertClassifierImpl::CausalLmLogits(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, "a ", config.architecture, " model has no causal-LM head");
}

torch::Tensor BertClassifierImpl::NextTokenLogits(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, "a ", config.architecture, " model has no causal-LM head");
}

}  // namespace attune::worker::model
