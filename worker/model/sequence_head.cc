// The sequence head (HF BertForSequenceClassification): pooler on [CLS], dropout, classifier.

#include "worker/model/bert.h"

namespace attune::worker::model {

torch::Tensor BertClassifierImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids,
                                          const torch::Tensor& attention_mask) {
  TORCH_CHECK(pooler, "a ", config.architecture, " model has no sequence head");
  torch::Tensor x = Encode(input_ids, token_type_ids, attention_mask);
  torch::Tensor pooled = torch::tanh(pooler(x.select(1, 0)));
  return classifier(cls_drop(pooled));
}

}  // namespace attune::worker::model
