#include "worker/model/hf_io.h"

#include <caffe2/serialize/inline_container.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/torch_pickle.h"
#include "worker/model/config.h"

namespace attune::worker::model {
namespace {

constexpr int64_t kMaxCheckpointBytes = int64_t{64} << 30;

bool Exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

absl::StatusOr<common::SafeTensorsFile> ReadTorchZip(const std::string& path) {
  // libtorch's reader throws on a malformed archive: nothing escapes here.
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (zip.hasRecord("byteorder")) {
      auto [ptr, n] = zip.getRecord("byteorder");
      std::string order(static_cast<const char*>(ptr.get()), n);
      if (order != "little") return absl::InvalidArgumentError(absl::StrCat(path, ": byte order ", order, " is not supported"));
    }
    if (!zip.hasRecord("data.pkl")) return absl::InvalidArgumentError(absl::StrCat(path, ": no data.pkl in the archive"));
    auto [pkl, pkl_size] = zip.getRecord("data.pkl");
    auto dict = common::ParseStateDictPickle(std::string_view(static_cast<const char*>(pkl.get()), pkl_size), path);
    if (!dict.ok()) return dict.status();
    // The storages are gathered from the reader's buffers: no copy of the whole model.
    std::map<std::string, std::pair<at::DataPtr, size_t>> storages;
    for (const auto& [key, s] : dict->storages) {
      const std::string record = "data/" + key;
      if (!zip.hasRecord(record)) return absl::InvalidArgumentError(absl::StrCat(path, ": storage ", key, " is missing"));
      auto record_data = zip.getRecord(record);
      const size_t n = std::get<1>(record_data);
      if (static_cast<uint64_t>(n) < static_cast<uint64_t>(s.numel) * static_cast<uint64_t>(common::DtypeSize(s.dtype))) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": storage ", key, " is shorter than declared"));
      }
      storages.emplace(key, std::make_pair(std::move(std::get<0>(record_data)), n));
    }
    common::SafeTensorsFile out;
    for (const auto& [name, t] : dict->tensors) {
      const auto& [ptr, n] = storages.at(t.storage_key);
      auto st = common::Materialize(t, std::string_view(static_cast<const char*>(ptr.get()), n), path + ": " + name);
      if (!st.ok()) return st.status();
      out.tensors[name] = std::move(*st);
    }
    return out;
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable PyTorch zip archive: ", what));
  }
}

absl::StatusOr<HfWeights> ReadShards(const std::string& dir, const std::string& index_name) {
  const std::string index_path = dir + "/" + index_name;
  auto text = common::ReadFile(index_path, 64 << 20);
  if (!text.ok()) return text.status();
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": no weight_map object"));
  }
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string()) return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map.", name, " is not a file name"));
    const std::string s = shard.get<std::string>();
    if (s.empty() || s.find('/') != std::string::npos || s == "." || s == ".." || s.size() > 255) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map.", name, ": shard ", s,
                                                     " is not a plain file name in the model directory"));
    }
    by_shard[s].insert(name);
  }
  if (by_shard.empty()) return absl::InvalidArgumentError(absl::StrCat(index_path, ": empty weight_map"));
  HfWeights out;
  out.source = index_path;
  const bool bin = index_name.rfind("pytorch_model", 0) == 0;
  for (const auto& [shard, names] : by_shard) {
    const std::string path = dir + "/" + shard;
    absl::StatusOr<common::SafeTensorsFile> part = bin ? ReadTorchFile(path) : common::ReadSafeTensors(path);
    if (!part.ok()) return part.status();
    for (auto& [name, t] : part->tensors) {
      if (!names.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": holds ", name, ", which the index puts elsewhere"));
      }
      if (!out.file.tensors.emplace(name, std::move(t)).second) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", name, " is in two shards"));
      }
    }
    for (const auto& name : names) {
      if (!out.file.tensors.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", name, " is not in its shard ", shard));
      }
    }
  }
  out.format = absl::StrCat(bin ? "pytorch_model.bin" : "safetensors", " (", by_shard.size(), " shards)");
  return out;
}

}  // namespace

absl::StatusOr<common::SafeTensorsFile> ReadTorchFile(const std::string& path, std::string* layout) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  if (static_cast<int64_t>(size) > kMaxCheckpointBytes) return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 64 GiB"));
  std::string magic(4, '\0');
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  magic.resize(std::fread(magic.data(), 1, 4, f));
  std::fclose(f);
  if (magic == std::string("PK\x03\x04", 4)) {
    if (layout) *layout = "zip";
    return ReadTorchZip(path);
  }
  if (layout) *layout = "legacy";
  auto bytes = common::ReadFile(path, kMaxCheckpointBytes);
  if (!bytes.ok()) return bytes.status();
  return common::ReadLegacyTorchFile(*bytes, path);
}

absl::Status ConvertToSafetensors(const std::string& dir, const std::string& out_dir) {
  std::error_code ec;
  if (std::filesystem::weakly_canonical(dir, ec) == std::filesystem::weakly_canonical(out_dir, ec)) {
    return absl::InvalidArgumentError("--output must be another directory than --model");
  }
  auto cfg = common::ReadFile(dir + "/config.json", 1 << 20);
  if (!cfg.ok()) return cfg.status();
  auto config = BertConfig::FromJson(*cfg, dir + "/config.json");
  if (!config.ok()) return config.status();
  auto weights = ReadHfWeights(dir);
  if (!weights.ok()) return weights.status();
  if (auto s = common::MakeDirs(out_dir); !s.ok()) return s;
  if (auto s = common::WriteSafeTensors(out_dir + "/model.safetensors", weights->file); !s.ok()) return s;
  if (auto s = common::WriteFileAtomic(out_dir + "/config.json", *cfg); !s.ok()) return s;
  for (const char* name : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"}) {
    if (!Exists(dir + "/" + name)) continue;
    auto text = common::ReadFile(dir + "/" + name, 256 << 20);
    if (!text.ok()) return text.status();
    if (auto s = common::WriteFileAtomic(out_dir + "/" + name, *text); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<HfWeights> ReadHfWeights(const std::string& dir) {
  HfWeights out;
  if (Exists(dir + "/model.safetensors")) {
    out.source = dir + "/model.safetensors";
    auto f = common::ReadSafeTensors(out.source);
    if (!f.ok()) return f.status();
    out.file = std::move(*f);
    out.format = "safetensors";
    return out;
  }
  if (Exists(dir + "/model.safetensors.index.json")) return ReadShards(dir, "model.safetensors.index.json");
  if (Exists(dir + "/pytorch_model.bin")) {
    out.source = dir + "/pytorch_model.bin";
    std::string layout;
    auto f = ReadTorchFile(out.source, &layout);
    if (!f.ok()) return f.status();
    out.file = std::move(*f);
    out.format = "pytorch_model.bin (" + layout + ")";
    return out;
  }
  if (Exists(dir + "/pytorch_model.bin.index.json")) return ReadShards(dir, "pytorch_model.bin.index.json");
  return absl::NotFoundError(absl::StrCat(dir, ": no weights (model.safetensors, model.safetensors.index.json, "
                                               "pytorch_model.bin or pytorch_model.bin.index.json)"));
}

}  // namespace attune::worker::model
