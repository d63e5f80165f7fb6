#include "common/trainer_exit.h"

#include "absl/strings/str_cat.h"
#include "common/checkpoint.h"

namespace attune::common {

int ExitCodeForStatus(const absl::Status& status) {
  if (status.GetPayload(kFencedPayload).has_value()) return kExitFenced;
  switch (status.code()) {
    case absl::StatusCode::kOk: return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kDataLoss: return kExitInvalidInput;
    case absl::StatusCode::kResourceExhausted: return kExitNoSpace;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnimplemented: return kExitInternal;
    case absl::StatusCode::kCancelled: return kExitStopped;
    default: return kExitTransient;  // kAborted, kUnavailable, kDeadlineExceeded, kUnknown, ...
  }
}

bool IsPermanentExit(int code) {
  return code == kExitUsage || code == kExitInvalidInput || code == kExitInternal || code == kExitNoSpace;
}

std::string ExitCodeMeaning(int code) {
  switch (code) {
    case kExitOk: return "finished";
    case kExitTransient: return "transient failure";
    case kExitUsage: return "bad command line or spec";
    case kExitInvalidInput: return "invalid input";
    case kExitInternal: return "internal error";
    case kExitNoSpace: return "no space left on the device";
    case kExitFenced: return "fenced by a newer attempt";
    case kExitStopped: return "stopped by SIGTERM";
    default: break;
  }
  if (code > 128 && code < 160) return absl::StrCat("killed by signal ", code - 128);
  return absl::StrCat("exit code ", code);
}

std::string SanitizeTrainerMessage(const std::string& message) {
  std::string out = message.substr(0, 1024);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

}  // namespace attune::common
