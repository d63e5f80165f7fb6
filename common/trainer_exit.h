#pragma once

// The trainer's exit codes: the contract between `attune-worker train` (which
// exits with them) and the coordinator (which decides from them whether an
// attempt is worth retrying). Torch-free and proto-free.
//
//   code  meaning                                         retried
//   0     finished                                        -
//   1     transient: a collective or peer failed, I/O      yes, from the last checkpoint
//   2     bad command line or unreadable spec              no
//   65    invalid input: spec, data, model or checkpoint,  no
//         a path that cannot be created or written, or a
//         non-finite loss (the same input fails again)
//   70    internal error (a bug)                          no
//   73    no space left on the device                     no
//   75    fenced: a newer attempt of the job holds its     - (that attempt already runs)
//         output directory (NOTE [generation lease])
//   143   stopped by SIGTERM after checkpointing          yes (the coordinator stopped it, or a node drains)
// Any other code (a signal: 128 + N) is treated as transient.

#include <string>

#include "absl/status/status.h"

namespace attune::common {

inline constexpr int kExitOk = 0;
inline constexpr int kExitTransient = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInvalidInput = 65;
inline constexpr int kExitInternal = 70;
inline constexpr int kExitNoSpace = 73;
inline constexpr int kExitFenced = 75;
inline constexpr int kExitStopped = 143;

// The exit code for a failed training's status.
int ExitCodeForStatus(const absl::Status& status);

// Whether an attempt that ended with `code` would fail again if retried.
bool IsPermanentExit(int code);

// A few words for `code`, for job messages ("invalid input", "killed by signal 9").
std::string ExitCodeMeaning(int code);

// A trainer's error message as the coordinator keeps it: at most 1,024 bytes,
// control characters replaced by spaces (it comes from another process).
std::string SanitizeTrainerMessage(const std::string& message);

}  // namespace attune::common
