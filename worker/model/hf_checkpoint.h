#pragma once

// Hugging Face model directories both ways, for any architecture (NOTE
// [model interface]): a state dict read into a model by the names its HfFacts
// give, config and weights and PEFT adapters written, an export loaded for
// inference. Thread-compatible.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "worker/model/model.h"

namespace attune::worker::model {

// Loads a Hugging Face checkpoint's tensors into `model`. Accepts bare base
// names (BertModel's: no "bert." prefix) and the legacy names its facts list,
// ignores tensors the model has no place for, reports missing keys and shape
// mismatches by name. A missing head, or a head for another number of labels
// (a resizable prefix), keeps its fresh initialisation and is listed in
// `*fresh`. With `require_all` every tensor must be there with its shape (a
// checkpoint of this very model).
absl::Status LoadStateDict(Model& model, const std::string& safetensors_path, std::vector<std::string>* fresh,
                           bool require_all = false);
// The same from tensors already read (hf_io.h), `source` naming them in errors.
absl::Status LoadStateDict(Model& model, const common::SafeTensorsFile& weights, const std::string& source,
                           std::vector<std::string>* fresh, bool require_all = false);

// Writes config.json and model.safetensors (F32). With `merge_lora` the LoRA
// deltas are folded into a copy of the weights; otherwise they go to
// adapter_model.safetensors with adapter_config.json beside the base model.
// `shown_dir`: the directory as users name it, recorded in adapter_config.json
// (default: `dir`; the trainer writes through a pinned path).
absl::Status SaveHfModel(Model& model, const std::string& dir, bool merge_lora, const std::string& shown_dir = "");

// Loads an exported model directory (config.json + model.safetensors, and
// adapter_model.safetensors if present) for inference, in eval mode.
absl::StatusOr<ModelPtr> LoadHfModel(const std::string& dir);

}  // namespace attune::worker::model
