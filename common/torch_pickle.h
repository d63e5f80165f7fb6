#pragma once

// Reads PyTorch state_dict files (pytorch_model.bin) without running any of
// their code. torch.save writes a pickle; an unrestricted unpickler would
// call whatever globals it names (CVE-2025-32434), and libtorch 1.13's
// torch::pickle_load refuses state_dicts (pytorch#95362). This is an
// allow-list unpickler of our own: it knows the opcodes a state_dict uses
// (pickle protocols 2 to 5) and the globals it needs, and refuses anything
// else, naming it:
//   collections.OrderedDict                 (the state_dict and its hooks)
//   torch._utils._rebuild_tensor_v2         (each tensor)
//   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage
// Nothing is ever called: each allowed global is interpreted by this code.
//
// Both layouts torch.save writes are read:
// - zip (PyTorch >= 1.6): data.pkl, whose storages live in data/<key>
//   (the zip itself is read by worker/model/hf_io.cc with libtorch's reader);
// - legacy (before 1.6, or _use_new_zipfile_serialization=False): magic
//   number, protocol, system info and the state_dict pickles, the storage
//   keys, then each storage as <int64 numel><bytes>.
// Every offset, size and stride is checked against the bytes that hold it.
// Torch-free.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace attune::common {

// A tensor of a state_dict pickle: a strided view of a storage.
struct PickledTensor {
  std::string storage_key;
  std::string dtype;  // safetensors names: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  int64_t offset = 0;  // in elements
  std::vector<int64_t> shape, stride;
};

struct PickledStorage {
  std::string dtype;
  int64_t numel = 0;
};

struct PickledStateDict {
  std::vector<std::pair<std::string, PickledTensor>> tensors;  // in file order
  std::map<std::string, PickledStorage> storages;              // by key
};

// Parses one state_dict pickle (a zip's data.pkl). kInvalidArgument naming
// `source` on anything outside the allow-list or malformed.
absl::StatusOr<PickledStateDict> ParseStateDictPickle(std::string_view pickle, const std::string& source);

// The contiguous bytes of `t`, gathered from its storage's bytes.
absl::StatusOr<SafeTensor> Materialize(const PickledTensor& t, std::string_view storage, const std::string& source);

// Reads a whole legacy-format file.
absl::StatusOr<SafeTensorsFile> ReadLegacyTorchFile(std::string_view bytes, const std::string& source);

}  // namespace attune::common
