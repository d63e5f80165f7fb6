#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attune::common {

// Reads a whole file. Refuses files larger than `max_bytes` with
// kResourceExhausted so that a hostile input cannot exhaust memory.
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     int64_t max_bytes = int64_t{4} << 30);

// Writes `data` to `path` atomically: a temporary file in the same directory,
// fsync, rename over `path`, fsync of the directory. A reader sees either the
// old file or the new one, never a torn one.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);

// Plain write with fsync (used for files inside a not-yet-committed directory).
absl::Status WriteFileSynced(const std::string& path, std::string_view data);

// The first line of `path` that is neither empty nor a '#' comment, trimmed:
// a bearer token (of a "NAME TOKEN" line, the TOKEN). kInvalidArgument when there is none or it holds characters
// that cannot travel in a header.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

absl::Status FsyncDirectory(const std::string& dir);

// `p` made absolute with its longest existing prefix resolved (symlinks
// followed) and the rest appended: where it leads now, existing or not.
std::string ResolvePath(const std::string& p);
// Whether `p` resolves (as ResolvePath) to `root` or beneath it, now: the data
// root confinement, checked again wherever a path is used.
bool ResolvesInside(const std::string& p, const std::string& root);
absl::Status MakeDirs(const std::string& dir);

// NOTE [pinned directories]: StagedInputs::PinDirectory registers a path that
// stands for an open directory descriptor (the job's output_dir). For a path
// beneath it, every function of this file walks from that descriptor one
// component at a time with O_NOFOLLOW and acts with the *at calls: a
// directory inside the outputs swapped for a symbolic link mid-run is refused
// (kPermissionDenied naming it), never followed, so nothing outside is read,
// written, renamed or removed. Other paths keep the usual semantics.
void PinPath(const std::string& path, int dir_fd);
void UnpinPath(const std::string& path);

// Removes a file or a directory tree (no link inside is followed); OK when
// absent.
absl::Status RemoveTree(const std::string& path);
absl::Status RenamePath(const std::string& from, const std::string& to);
struct DirEntry {
  std::string name;
  bool is_directory = false;  // beneath a pin, a link is never a directory
};
absl::StatusOr<std::vector<DirEntry>> ListDirectory(const std::string& dir);
absl::StatusOr<int64_t> FileSize(const std::string& path);
bool PathExists(const std::string& path);

// Lower-case hex SHA-256 of bytes or of a file's contents (streamed).
std::string Sha256Hex(std::string_view bytes);
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

// SHA-256 over bytes fed in pieces (a file streamed in chunks). Not copyable.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void Update(std::string_view bytes);
  std::string HexDigest();  // once, at the end

 private:
  void* ctx_;
};

}  // namespace attune::common
