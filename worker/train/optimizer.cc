#include "worker/train/optimizer.h"

#include "worker/model/module_kinds.h"

namespace attune::worker::train {

OptimizerSetup MakeAdamW(model::Model& model, const common::JobConfig& c) {
  std::vector<torch::Tensor> decay, no_decay;
  const auto no_decay_set = model::NoWeightDecayParameters(model);  // NOTE [no weight decay by kind]
  for (auto& [name, t] : model.NamedParameters()) {
    if (!t.requires_grad()) continue;
    (no_decay_set.count(t.unsafeGetTensorImpl()) ? no_decay : decay).push_back(t);
  }
  OptimizerSetup out;
  out.optimizer = MakeAdamWGroups(decay, no_decay, c);
  out.decayed = decay.size();
  out.trainable = std::move(decay);
  out.trainable.insert(out.trainable.end(), no_decay.begin(), no_decay.end());
  return out;
}

std::unique_ptr<torch::optim::AdamW> MakeAdamWGroups(std::vector<torch::Tensor> decay, std::vector<torch::Tensor> no_decay,
                                                     const common::JobConfig& c) {
  auto adam = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(c.learning_rate)
                                                            .betas({c.adam_beta1, c.adam_beta2})
                                                            .eps(c.adam_epsilon)
                                                            .weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::move(decay), adam(c.weight_decay));
  groups.emplace_back(std::move(no_decay), adam(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(c.learning_rate));
}

void PlaceStateWithParameters(torch::optim::AdamW& opt) {
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
      auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
      if (it == opt.state().end()) continue;
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      if (st.exp_avg().defined() && st.exp_avg().device() != p.device()) {
        st.exp_avg(st.exp_avg().to(p.device()));
        st.exp_avg_sq(st.exp_avg_sq().to(p.device()));
        if (st.max_exp_avg_sq().defined()) st.max_exp_avg_sq(st.max_exp_avg_sq().to(p.device()));
      }
    }
  }
}

void SetLearningRate(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

}  // namespace attune::worker::train
