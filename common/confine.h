#pragma once

// Opening files beneath a root directory at the moment they are opened, not
// at an earlier check: with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
// where the kernel has it (Linux >= 5.6), else a walk that opens each
// component with O_NOFOLLOW (no symbolic links at all). A symbolic link that
// leads outside the root, `..` out of it, a FIFO or a device is refused.
//
// StagedInputs builds on it: every input file of a job is opened beneath the
// root once, and the trainer reads it through a private directory of links
// to those open descriptors (/proc/self/fd/N), under the original names. A
// path swapped for a symbolic link after that changes nothing the trainer
// reads.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::common {

// An owned file descriptor.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(o.release()) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd();
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

enum class FileKind { kRegular, kDirectory, kAny };  // kAny: a regular file or a directory

// Opens `path` (absolute, or relative to the working directory) read-only,
// as a `kind`, if it lies beneath `root`. kPermissionDenied names the path
// when it leads outside the root (through `..` or a link) or is not a
// `kind` (a FIFO, a device); kNotFound when it does not exist. An empty
// `root` confines nothing (links are followed anywhere), but a FIFO or a
// device is still refused rather than waited on.
absl::StatusOr<ScopedFd> OpenBeneath(const std::string& root, const std::string& path, FileKind kind);

// Whether the kernel confines with openat2 (else the O_NOFOLLOW walk is used).
bool HaveOpenat2();

class StagedInputs {
 public:
  // Stages under `staging_dir` (created; removed by the destructor).
  explicit StagedInputs(std::string staging_dir) : dir_(std::move(staging_dir)) {}
  ~StagedInputs();
  StagedInputs(const StagedInputs&) = delete;
  StagedInputs& operator=(const StagedInputs&) = delete;

  // Opens `path` beneath `root` (a file, or a directory whose regular files
  // are each opened beneath the root too; subdirectories are not read) and
  // returns the path the trainer reads instead: the staging directory
  // followed by the absolute original path, so that names and extensions
  // stay. `field` names the spec field in errors.
  absl::StatusOr<std::string> Stage(const std::string& root, const std::string& path, const std::string& field);

  // Opens the directory `path` beneath `root` (creating it, and any missing
  // parent, one component at a time beneath the root with no link followed,
  // when `create`) and returns a path that leads to that very directory while
  // this object lives: a link to the open descriptor. Writing through it, a
  // later swap of `path` or of an ancestor for a link changes nothing. Refused:
  // the root itself, a dangling link, and (when `no_links_inside`) a symbolic
  // link anywhere in the existing tree beneath it, since outputs are never
  // written through links.
  absl::StatusOr<std::string> PinDirectory(const std::string& root, const std::string& path, const std::string& field,
                                           bool create, bool no_links_inside);

  // `text` with the staging prefixes removed: error messages name the paths
  // the user gave.
  std::string Unstage(const std::string& text) const;

 private:
  absl::Status Link(const std::string& original, ScopedFd fd);
  absl::Status Create();

  std::string dir_;
  std::map<std::string, std::string> pinned_;  // pinned path -> original
  std::vector<ScopedFd> fds_;
  bool created_ = false;
};

}  // namespace attune::common
