// The token-classification head (HF BertForTokenClassification): dropout, classifier, at the given positions.

#include "worker/model/bert.h"

namespace attune::worker::model {

torch::Tensor BertClassifierImpl::TokenLogits(const torch::Tensor& hidden, const torch::Tensor& positions) {
  TORCH_CHECK(classifier && !pooler, "a ", config.architecture, " model has no token-classification head");
  return classifier(cls_drop(hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions)));
}

}  // namespace attune::worker::model
