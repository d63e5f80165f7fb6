#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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
