#include "worker/train/checkpointer.h"

#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "worker/comm/torch_logging.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/tensor_io.h"

namespace attune::worker::train {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string>& LoadedFiles() {
  static const std::vector<std::string> files = {"model.safetensors", "optimizer.pt", "rng.bin",
                                                 "trainer_state.json"};
  return files;
}

absl::Status LoadParams(model::Model& m, const std::string& path) {
  std::vector<std::string> fresh;
  return model::LoadStateDict(m, path, &fresh, /*require_all=*/true);
}

std::string RngState() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor st = gen.get_state();
  return std::string(static_cast<const char*>(st.data_ptr()), static_cast<size_t>(st.nbytes()));
}

void SetRngState(const std::string& bytes) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor st = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(st.data_ptr(), bytes.data(), bytes.size());
  gen.set_state(st);
}

bool SameDirectory(const std::string& a, const std::string& b) {
  std::error_code e1, e2;
  return fs::weakly_canonical(a, e1) == fs::weakly_canonical(b, e2) && !e1 && !e2;
}

}  // namespace

// NOTE [best weights in memory]: with early stopping, every rank keeps its own
// copy of the best evaluation's weights. Ranks hold identical weights after
// every optimizer step, so each rank's copy is the same model, and the final
// evaluation and export never read a file that another rank may still be
// writing (or that a rank on another node cannot see). Checkpoints carry the
// copy as best.safetensors, so a resumed run restores it on every rank from
// the checksummed checkpoint.
ParamSnapshot SnapshotParams(model::Model& m) {
  torch::NoGradGuard no_grad;
  ParamSnapshot out;
  for (auto& [name, t] : m.NamedParameters()) out.emplace_back(name, t.detach().clone());
  return out;
}

absl::Status RestoreParams(model::Model& m, const ParamSnapshot& snap) {
  torch::NoGradGuard no_grad;
  auto params = m.NamedParameters();
  if (params.size() != snap.size()) {
    return absl::InternalError(absl::StrCat("best-weights snapshot holds ", snap.size(), " tensors, the model ",
                                            params.size()));
  }
  for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(snap[i].second);
  return absl::OkStatus();
}

absl::Status SaveTensors(const ParamSnapshot& tensors, const std::string& path) {
  common::SafeTensorsFile f;
  for (const auto& [name, t] : tensors) f.tensors[name] = model::FromTorch(t);
  return common::WriteSafeTensors(path, f);
}

std::string VocabularyFingerprint(const std::vector<std::string>& vocab) {
  uint64_t fnv = 1469598103934665603ULL;
  for (const auto& t : vocab) {
    for (unsigned char ch : t + "\n") fnv = (fnv ^ ch) * 1099511628211ULL;
  }
  return absl::StrFormat("%016x", fnv);
}

Checkpointer::Checkpointer(CheckpointerOptions options)
    : o_(std::move(options)),
      root_(o_.output_dir + "/checkpoints"),
      best_path_(o_.output_dir + "/best/model.safetensors") {}

absl::Status Checkpointer::Prepare() const { return common::MakeDirs(root_); }

absl::StatusOr<std::string> Checkpointer::Write(const LoopState& s, model::Model& model,
                                                torch::optim::Optimizer& opt, const ParamSnapshot& best) const {
  ATTUNE_ASSIGN_OR_RETURN(std::string tmp, common::BeginCheckpoint(root_, s.step));
  std::vector<std::string> files = LoadedFiles();
  auto write = [&]() -> absl::Status {
    ATTUNE_RETURN_IF_ERROR(SaveTensors(model.NamedParameters(), tmp + "/model.safetensors"));
    // Serialised in memory, then written by us: libtorch's file writer
    // throws from a destructor (terminating the process) when the disk fills.
    std::ostringstream optimizer;
    try {
      torch::serialize::OutputArchive ar;
      opt.save(ar);
      ar.save_to(optimizer);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("cannot serialise the optimizer state: ", e.what_without_backtrace()));
    }
    ATTUNE_RETURN_IF_ERROR(common::WriteFileSynced(tmp + "/optimizer.pt", optimizer.str()));
    ATTUNE_RETURN_IF_ERROR(common::WriteFileSynced(tmp + "/rng.bin", RngState()));
    ATTUNE_RETURN_IF_ERROR(common::WriteFileSynced(tmp + "/trainer_state.json", LoopStateToJson(s).dump()));
    if (s.best_step >= 0 && s.best_step != s.step) {
      // The best weights are not this step's: the checkpoint carries them (see
      // NOTE [best weights in memory]).
      if (best.empty()) return absl::InternalError("the best weights are not in memory");
      ATTUNE_RETURN_IF_ERROR(SaveTensors(best, tmp + "/best.safetensors"));
      files.push_back("best.safetensors");
    }
    return absl::OkStatus();
  };
  // A newer attempt of this job may have taken the directory (NOTE [generation lease]).
  absl::Status written = common::CheckLease(o_.output_dir, o_.owner);
  if (written.ok()) written = write();
  absl::StatusOr<common::CheckpointInfo> info =
      written.ok() ? common::CommitCheckpoint(root_, tmp, s.step, files, o_.keep_last, o_.owner)
                   : absl::StatusOr<common::CheckpointInfo>(written);
  if (!info.ok()) {
    // A checkpoint that could not be written (a full disk, say) leaves nothing behind.
    (void)common::RemoveTree(tmp);
    return info.status();
  }
  return info->dir;
}

// NOTE [resume]: the newest committed checkpoint whose manifest verifies and
// lists every file a resume loads is tried first; one whose files still fail
// to load (a truncated optimizer.pt hashed into its manifest before commit,
// say) falls back to the previous one. A checkpoint trained with another
// label map or vocabulary is refused with both named: resuming it would
// silently scramble the classes.
absl::StatusOr<bool> Checkpointer::Resume(const WeightsMeaning& meaning, model::Model& model,
                                          torch::optim::Optimizer& opt, LoopState* s, ParamSnapshot* best) const {
  std::vector<std::string> skipped;
  std::vector<common::CheckpointInfo> candidates = common::VerifiedCheckpoints(root_, &skipped, LoadedFiles());
  for (const auto& why : skipped) LOG(WARNING) << "skipping checkpoint: " << why;
  if (!o_.owner.empty()) {
    // NOTE [owned outputs]: a job resumes its own checkpoints; another job's
    // are used only when the spec says so.
    const bool other =
        !candidates.empty() && common::CheckpointOwner(candidates.front().dir).job_id != o_.owner.job_id;
    if (other && o_.overwrite) {
      LOG(WARNING) << "job=" << o_.job_name << " checkpoint.overwrite: discarding the checkpoints of job "
                   << common::CheckpointOwner(candidates.front().dir).job_id << " in " << root_;
      if (auto entries = common::ListDirectory(root_); entries.ok()) {
        for (const auto& e : *entries) ATTUNE_RETURN_IF_ERROR(common::RemoveTree(root_ + "/" + e.name));
      }
      ATTUNE_RETURN_IF_ERROR(common::RemoveTree(o_.output_dir + "/best"));
      candidates.clear();
    } else if (other && !(!o_.resume_from.empty() && SameDirectory(o_.resume_from, o_.output_dir))) {
      const std::string holder = common::CheckpointOwner(candidates.front().dir).job_id;
      return absl::FailedPreconditionError(absl::StrCat(
          "output_dir: ", o_.output_dir, " holds the checkpoints of ", holder.empty() ? "another run" : "job " + holder,
          " (newest: step ", candidates.front().step, "); set checkpoint.resume_from: ", o_.output_dir,
          " to continue from them, or checkpoint.overwrite: true to discard them"));
    } else if (candidates.empty() && !o_.resume_from.empty()) {
      // A new job starting from another job's checkpoints (its own come later).
      candidates = common::VerifiedCheckpoints(o_.resume_from + "/checkpoints", &skipped, LoadedFiles());
      if (candidates.empty()) {
        return absl::NotFoundError(
            absl::StrCat("checkpoint.resume_from: no committed checkpoint in ", o_.resume_from, "/checkpoints"));
      }
    }
  }
  std::vector<std::string> failed;
  for (const auto& c : candidates) {
    absl::Status st = ResumeFrom(c.dir, meaning, model, opt, s, best);
    if (st.ok()) return true;
    if (!absl::IsDataLoss(st)) return st;  // the run's fault, not the files'
    LOG(WARNING) << "job=" << o_.job_name << " cannot resume from "
                 << common::ShowStagedPaths(o_.shown_paths, c.dir + ": " + std::string(st.message()))
                 << "; trying an older checkpoint";
    failed.push_back(std::string(st.message()));
  }
  if (!failed.empty()) {
    return absl::DataLossError(absl::StrCat("no committed checkpoint could be loaded: ", absl::StrJoin(failed, "; ")));
  }
  return false;  // nothing to resume
}

absl::Status Checkpointer::ResumeFrom(const std::string& dir, const WeightsMeaning& meaning,
                                      model::Model& model, torch::optim::Optimizer& opt, LoopState* s,
                                      ParamSnapshot* best) const {
  // The manifest has verified every byte before anything reaches torch::load.
  ATTUNE_ASSIGN_OR_RETURN(std::string state, common::ReadFile(dir + "/trainer_state.json"));
  ATTUNE_ASSIGN_OR_RETURN(LoopState loaded, LoopStateFromJson(state, dir + "/trainer_state.json"));
  if (!loaded.labels.empty() && loaded.labels != meaning.labels) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " was trained with labels [", absl::StrJoin(loaded.labels, ", "), "]; this run's are [",
        absl::StrJoin(meaning.labels, ", "), "]: set data.labels to the checkpoint's order, or start a new output_dir"));
  }
  if (!loaded.vocab_fingerprint.empty() && loaded.vocab_fingerprint != meaning.vocab_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " was trained with another vocabulary (fingerprint ",
                                                      loaded.vocab_fingerprint, "; this run's ",
                                                      meaning.vocab_fingerprint,
                                                      "): its token ids would mean other tokens"));
  }
  ATTUNE_RETURN_IF_ERROR(LoadParams(model, dir + "/model.safetensors"));
  try {
    torch::serialize::InputArchive ar;
    // Into host memory: the engine places it (PlaceStateWithParameters, or
    // a sharded run's own part: NOTE [consolidated optimizer checkpoints]).
    ar.load_from(dir + "/optimizer.pt", torch::kCPU);
    opt.load(ar);
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat(dir, "/optimizer.pt: ", e.what_without_backtrace()));
  }
  ATTUNE_ASSIGN_OR_RETURN(std::string rng, common::ReadFile(dir + "/rng.bin"));
  *s = std::move(loaded);
  if (s->best_step == s->step) {
    *best = SnapshotParams(model);
  } else if (s->best_step >= 0) {
    const std::string best_file = dir + "/best.safetensors";
    std::string from = best_file;
    if (!common::PathExists(best_file)) {
      // A checkpoint of an earlier release: its best weights are only in best/.
      if (!common::PathExists(best_path_)) {
        return absl::DataLossError(absl::StrCat(dir, " records its best evaluation at step ", s->best_step,
                                                " but holds no best.safetensors, and ", best_path_, " is missing"));
      }
      LOG(WARNING) << common::ShowStagedPaths(o_.shown_paths, dir + " holds no best.safetensors; taking the best "
                                                              "weights from " + best_path_);
      from = best_path_;
    }
    ATTUNE_RETURN_IF_ERROR(LoadParams(model, from));
    *best = SnapshotParams(model);
    ATTUNE_RETURN_IF_ERROR(LoadParams(model, dir + "/model.safetensors"));
  }
  SetRngState(rng);
  LOG(INFO) << "job=" << o_.job_name << " rank=" << o_.rank << " resumed from "
            << common::ShowStagedPaths(o_.shown_paths, dir) << " at step " << s->step;
  return absl::OkStatus();
}

}  // namespace attune::worker::train
