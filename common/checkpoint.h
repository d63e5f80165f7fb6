#pragma once

// Checkpoint directories with a commit marker. Torch-free: it deals in files.
//
// Commit protocol (a checkpoint exists only once step 4 has happened):
//   1. The writer puts every file of step S into <root>/.tmp-step-S-<pid>/ and fsyncs each.
//   2. CommitCheckpoint writes manifest.json there: step, and per file its size and SHA-256.
//   3. It fsyncs the manifest and the directory.
//   4. It renames the directory to <root>/step-<S padded to 9 digits> and fsyncs <root>.
// Readers (FindLatestCheckpoint) consider only step-* directories whose
// manifest verifies: every listed file present, of the listed size and hash.
// Anything else (temporary directories, truncated or altered files) is skipped
// with a warning, so a torn or corrupt checkpoint is never loaded.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::common {

struct CheckpointInfo {
  std::string dir;
  int64_t step = 0;
};

// Who writes into an output directory: a job's attempt (generation). The
// empty owner (a standalone `attune-worker train`) takes no lease.
struct Owner {
  std::string job_id;
  int64_t generation = 0;
  bool empty() const { return job_id.empty(); }
};

// NOTE [generation lease]: a coordinator restarts a job under a new
// generation when it loses a rank's worker, but a worker that is only hung or
// cut off may still run the old attempt's trainer. Each attempt's rank 0
// takes the output directory's lease (<dir>/.attune-lease.json) when it
// starts and checks it before every checkpoint commit and export; the
// trainer's watchdog thread checks it every second while training. An attempt
// whose lease was taken by a newer generation of its job stops without
// writing anything more.
//   TakeLease: refuses (kFailedPrecondition, "fenced") if a newer generation
//   of the same job holds the lease; otherwise records `me`.
//   CheckLease: kFailedPrecondition ("fenced") if a newer generation holds it.
// Statuses of a fenced attempt carry this payload (common/trainer_exit maps it to exit 75).
inline constexpr char kFencedPayload[] = "type.attune.dev/fenced";
absl::Status TakeLease(const std::string& output_dir, const Owner& me);
absl::Status CheckLease(const std::string& output_dir, const Owner& me);

// A fresh temporary directory under `root` for step `step`.
absl::StatusOr<std::string> BeginCheckpoint(const std::string& root, int64_t step);
// Steps 2-4 above; `files` are names relative to `tmp_dir`. On success the
// oldest committed checkpoints beyond `keep_last` are removed.
// The manifest records `owner` (job id and generation) when it is not empty.
absl::StatusOr<CheckpointInfo> CommitCheckpoint(const std::string& root, const std::string& tmp_dir, int64_t step,
                                                const std::vector<std::string>& files, int keep_last,
                                                const Owner& owner = {});
// The owner a committed checkpoint's manifest records (empty: none, as
// written by hand or by an earlier release).
Owner CheckpointOwner(const std::string& dir);
// Verifies manifest.json of a committed directory: every listed file present
// with its size and hash, and every file of `required` listed (a manifest
// that omits a file its reader loads would let that file go unchecked).
absl::Status VerifyCheckpoint(const std::string& dir, const std::vector<std::string>& required = {});
// The newest checkpoint that verifies; kNotFound when there is none.
// `skipped` receives "dir: reason" for each rejected candidate.
absl::StatusOr<CheckpointInfo> FindLatestCheckpoint(const std::string& root, std::vector<std::string>* skipped,
                                                    const std::vector<std::string>& required = {});
// Every committed checkpoint that verifies, newest first.
std::vector<CheckpointInfo> VerifiedCheckpoints(const std::string& root, std::vector<std::string>* skipped,
                                                const std::vector<std::string>& required = {});

}  // namespace attune::common
