#include "common/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"

namespace attune::common {
namespace fs = std::filesystem;

namespace {

std::vector<CheckpointInfo> ListCommitted(const std::string& root) {
  std::vector<CheckpointInfo> out;
  auto entries = ListDirectory(root);
  if (!entries.ok()) return out;
  for (const auto& e : *entries) {
    int64_t step;
    if (e.is_directory && absl::StartsWith(e.name, "step-") && absl::SimpleAtoi(e.name.substr(5), &step)) {
      out.push_back({root + "/" + e.name, step});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return out;
}

}  // namespace

absl::StatusOr<std::string> BeginCheckpoint(const std::string& root, int64_t step) {
  std::string tmp = absl::StrFormat("%s/.tmp-step-%d-%d", root, step, static_cast<int>(::getpid()));
  if (auto s = RemoveTree(tmp); !s.ok()) return s;
  if (auto s = MakeDirs(tmp); !s.ok()) return s;
  return tmp;
}

absl::StatusOr<CheckpointInfo> CommitCheckpoint(const std::string& root, const std::string& tmp_dir, int64_t step,
                                                const std::vector<std::string>& files, int keep_last,
                                                const Owner& owner) {
  nlohmann::json manifest;
  manifest["format"] = "attune-checkpoint-v1";
  manifest["step"] = step;
  if (!owner.empty()) {
    manifest["job_id"] = owner.job_id;
    manifest["generation"] = owner.generation;
  }
  manifest["files"] = nlohmann::json::object();
  for (const auto& f : files) {
    std::string path = tmp_dir + "/" + f;
    auto sha = Sha256OfFile(path);
    if (!sha.ok()) return sha.status();
    auto size = FileSize(path);
    if (!size.ok()) return size.status();
    manifest["files"][f] = {{"sha256", *sha}, {"bytes", *size}};
  }
  if (auto s = WriteFileSynced(tmp_dir + "/manifest.json", manifest.dump(2)); !s.ok()) return s;
  if (auto s = FsyncDirectory(tmp_dir); !s.ok()) return s;
  std::string final_dir = absl::StrFormat("%s/step-%09d", root, step);
  // Re-saving a step (after a resume) replaces the old directory.
  if (auto s = RemoveTree(final_dir); !s.ok()) return s;
  if (auto s = RenamePath(tmp_dir, final_dir); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot commit checkpoint ", final_dir, ": ", s.message()));
  }
  if (auto s = FsyncDirectory(root); !s.ok()) return s;
  auto all = ListCommitted(root);
  for (size_t i = static_cast<size_t>(std::max(keep_last, 1)); i < all.size(); ++i) {
    (void)RemoveTree(all[i].dir);  // pruning: a failure leaves an extra old checkpoint, nothing worse
  }
  return CheckpointInfo{final_dir, step};
}

namespace {

// The lease's holder; an empty owner when there is no (readable) lease.
Owner ReadLease(const std::string& output_dir) {
  auto text = ReadFile(output_dir + "/.attune-lease.json", 4096);
  if (!text.ok()) return {};
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("job_id") || !j["job_id"].is_string() || !j.contains("generation") ||
      !j["generation"].is_number_integer()) {
    return {};
  }
  return {j["job_id"].get<std::string>(), j["generation"].get<int64_t>()};
}

absl::Status Fenced(const std::string& output_dir, const Owner& me, const Owner& holder) {
  absl::Status s = absl::FailedPreconditionError(absl::StrCat("fenced: generation ", holder.generation, " of job ",
                                                              me.job_id, " holds ", output_dir,
                                                              "; this attempt (generation ", me.generation,
                                                              ") writes nothing more"));
  s.SetPayload(kFencedPayload, absl::Cord("1"));
  return s;
}

}  // namespace

Owner CheckpointOwner(const std::string& dir) {
  auto text = ReadFile(dir + "/manifest.json", 1 << 20);
  if (!text.ok()) return {};
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("job_id") || !j["job_id"].is_string()) return {};
  return {j["job_id"].get<std::string>(), j.value("generation", int64_t{0})};
}

absl::Status TakeLease(const std::string& output_dir, const Owner& me) {
  if (me.empty()) return absl::OkStatus();
  const Owner holder = ReadLease(output_dir);
  if (holder.job_id == me.job_id && holder.generation > me.generation) return Fenced(output_dir, me, holder);
  nlohmann::json j = {{"job_id", me.job_id}, {"generation", me.generation}};
  return WriteFileAtomic(output_dir + "/.attune-lease.json", j.dump());
}

absl::Status CheckLease(const std::string& output_dir, const Owner& me) {
  if (me.empty()) return absl::OkStatus();
  const Owner holder = ReadLease(output_dir);
  if (holder.job_id == me.job_id && holder.generation > me.generation) return Fenced(output_dir, me, holder);
  return absl::OkStatus();
}

absl::Status VerifyCheckpoint(const std::string& dir, const std::vector<std::string>& required) {
  auto text = ReadFile(dir + "/manifest.json", 1 << 20);
  if (!text.ok()) return absl::DataLossError(absl::StrCat(dir, ": no manifest.json (uncommitted checkpoint)"));
  auto m = nlohmann::json::parse(*text, nullptr, false);
  if (m.is_discarded() || !m.contains("files") || !m["files"].is_object()) {
    return absl::DataLossError(absl::StrCat(dir, "/manifest.json is malformed"));
  }
  for (const auto& f : required) {
    if (!m["files"].contains(f)) {
      return absl::DataLossError(absl::StrCat(dir, "/manifest.json does not list ", f, ", which a resume loads"));
    }
  }
  for (auto it = m["files"].begin(); it != m["files"].end(); ++it) {
    std::string path = dir + "/" + it.key();
    auto size = FileSize(path);
    if (!size.ok()) return absl::DataLossError(absl::StrCat(path, ": listed in the manifest but missing"));
    if (static_cast<uint64_t>(*size) != it.value().value("bytes", uint64_t{0})) {
      return absl::DataLossError(absl::StrCat(path, ": ", *size, " bytes, manifest says ",
                                              it.value().value("bytes", uint64_t{0}), " (truncated?)"));
    }
    auto sha = Sha256OfFile(path);
    if (!sha.ok()) return sha.status();
    if (*sha != it.value().value("sha256", "")) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 does not match the manifest (corrupt)"));
    }
  }
  return absl::OkStatus();
}

std::vector<CheckpointInfo> VerifiedCheckpoints(const std::string& root, std::vector<std::string>* skipped,
                                                const std::vector<std::string>& required) {
  std::vector<CheckpointInfo> out;
  for (const auto& c : ListCommitted(root)) {
    absl::Status s = VerifyCheckpoint(c.dir, required);
    if (s.ok()) {
      out.push_back(c);
    } else if (skipped) {
      skipped->push_back(std::string(s.message()));
    }
  }
  return out;
}

absl::StatusOr<CheckpointInfo> FindLatestCheckpoint(const std::string& root, std::vector<std::string>* skipped,
                                                    const std::vector<std::string>& required) {
  for (const auto& c : ListCommitted(root)) {
    absl::Status s = VerifyCheckpoint(c.dir, required);
    if (s.ok()) return c;
    if (skipped) skipped->push_back(std::string(s.message()));
  }
  return absl::NotFoundError(absl::StrCat("no committed checkpoint under ", root));
}

}  // namespace attune::common
