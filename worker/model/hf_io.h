#pragma once

// The weights of a Hugging Face model directory, in whichever format it holds
// them, first found in this order:
//   model.safetensors
//   model.safetensors.index.json    (shards named by its weight_map)
//   pytorch_model.bin               (torch.save: zip or legacy; common/torch_pickle.h)
//   pytorch_model.bin.index.json
// A shard must be a plain file name in the directory (no '/', no ".."); a
// tensor in two shards, or a weight_map naming a tensor its shard lacks, is
// refused. Nothing in a checkpoint is ever executed.

#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace attune::worker::model {

struct HfWeights {
  common::SafeTensorsFile file;
  std::string format;  // "safetensors", "safetensors (N shards)", "pytorch_model.bin (zip)", ...
  std::string source;  // the file (or index) read
};

absl::StatusOr<HfWeights> ReadHfWeights(const std::string& dir);

// attune convert: `dir`'s weights, in any format above, written to
// `out_dir`/model.safetensors with their dtypes and values unchanged, beside
// copies of config.json (checked to be a BERT this build runs) and the
// tokenizer files present (vocab.txt, tokenizer_config.json,
// special_tokens_map.json, tokenizer.json). `out_dir` must differ from `dir`.
absl::Status ConvertToSafetensors(const std::string& dir, const std::string& out_dir);

// One torch.save file, zip or legacy.
absl::StatusOr<common::SafeTensorsFile> ReadTorchFile(const std::string& path, std::string* layout = nullptr);

}  // namespace attune::worker::model
