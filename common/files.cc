#include "common/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/confine.h"

namespace attune::common {
namespace {

absl::Status ErrnoStatus(const std::string& what, const std::string& path) {
  int err = errno;
  std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::UnavailableError(msg);
}

std::string HexOf(const unsigned char* d, unsigned n) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(kHex[d[i] >> 4]);
    out.push_back(kHex[d[i] & 15]);
  }
  return out;
}

// NOTE [pinned directories] (files.h): the registry, and the walk.
struct Pins {
  std::mutex mu;
  std::map<std::string, int> fds;  // pinned path -> directory descriptor (owned by StagedInputs)
};
Pins& ThePins() {
  static Pins* pins = new Pins;
  return *pins;
}

// A path as (directory descriptor, last component). For a path beneath a
// pinned directory, `dir` is its parent reached from the pin without following
// any link, and `nofollow` is set; otherwise `dir` is unset (AT_FDCWD) and
// `leaf` the path itself, with the usual semantics.
struct At {
  ScopedFd dir;
  std::string leaf;
  bool nofollow = false;
  int fd() const { return dir.get() >= 0 ? dir.get() : AT_FDCWD; }
};

absl::Status LinkRefused(const std::string& path, const std::string& component) {
  return absl::PermissionDeniedError(absl::StrCat(path, ": ", component,
                                                  " is a symbolic link or not a directory; outputs are never "
                                                  "written through links"));
}

// `whole`: the last component is a directory to open too (leaf becomes ".").
// `create`: missing directories on the way are made (mkdirat).
absl::StatusOr<At> Locate(const std::string& path, bool whole, bool create) {
  At at;
  int pin = -1;
  std::string rest;
  {
    Pins& p = ThePins();
    std::lock_guard<std::mutex> l(p.mu);
    for (const auto& [prefix, fd] : p.fds) {
      if (path == prefix || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                             path[prefix.size()] == '/')) {
        pin = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (pin < 0) return ErrnoStatus("cannot use the pinned directory of", path);
        rest = path.substr(prefix.size());
        break;
      }
    }
  }
  if (pin < 0) {
    at.leaf = path;
    return at;
  }
  at.dir = ScopedFd(pin);
  at.nofollow = true;
  std::vector<std::string> parts;
  for (absl::string_view c : absl::StrSplit(rest, '/', absl::SkipEmpty())) {
    if (c == ".") continue;
    if (c == "..") return absl::PermissionDeniedError(absl::StrCat(path, ": '..' beneath a pinned directory"));
    parts.emplace_back(c);
  }
  if (!whole && parts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a pinned directory, not a file"));
  }
  const size_t walk = whole ? parts.size() : parts.size() - 1;
  for (size_t i = 0; i < walk; ++i) {
    const char* name = parts[i].c_str();
    int next = ::openat(at.dir.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (::mkdirat(at.dir.get(), name, 0755) != 0 && errno != EEXIST) return ErrnoStatus("cannot create directory", path);
      next = ::openat(at.dir.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      if (errno == ELOOP || errno == ENOTDIR) return LinkRefused(path, parts[i]);
      return ErrnoStatus("cannot open directory", path);
    }
    at.dir = ScopedFd(next);
  }
  at.leaf = whole ? "." : parts.back();
  return at;
}

// Opens a file of `at` with `flags` (O_NOFOLLOW added beneath a pin).
absl::StatusOr<ScopedFd> OpenLeaf(const At& at, const std::string& path, int flags, const char* what) {
  const int fd = ::openat(at.fd(), at.leaf.c_str(), flags | O_CLOEXEC | (at.nofollow ? O_NOFOLLOW : 0), 0644);
  if (fd < 0) {
    if (at.nofollow && errno == ELOOP) return LinkRefused(path, at.leaf);
    return ErrnoStatus(what, path);
  }
  return ScopedFd(fd);
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot write", path);
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return ErrnoStatus("cannot fsync", path);
  return absl::OkStatus();
}

// Removes `name` in `dir` and, for a directory, everything in it; a link is
// removed, never followed.
absl::Status RemoveAt(int dir, const std::string& name, const std::string& path, int depth) {
  struct stat st;
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? absl::OkStatus() : ErrnoStatus("cannot stat", path);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) return ErrnoStatus("cannot remove", path);
    return absl::OkStatus();
  }
  if (depth > 64) return absl::FailedPreconditionError(absl::StrCat(path, ": nested more than 64 deep"));
  const int fd = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", path);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return ErrnoStatus("cannot list", path);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  absl::Status s;
  for (const auto& n : names) {
    s = RemoveAt(::dirfd(d), n, path + "/" + n, depth + 1);
    if (!s.ok()) break;
  }
  ::closedir(d);
  if (!s.ok()) return s;
  if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return ErrnoStatus("cannot remove", path);
  return absl::OkStatus();
}

}  // namespace

void PinPath(const std::string& path, int dir_fd) {
  Pins& p = ThePins();
  std::lock_guard<std::mutex> l(p.mu);
  p.fds[path] = dir_fd;
}

void UnpinPath(const std::string& path) {
  Pins& p = ThePins();
  std::lock_guard<std::mutex> l(p.mu);
  p.fds.erase(path);
}

absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status();
  auto opened = OpenLeaf(*at, path, O_RDONLY, "cannot open");
  if (!opened.ok()) return opened.status();
  int fd = opened->release();
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoStatus("cannot stat", path);
  }
  if (st.st_size > max_bytes) {
    ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat(
        path, ": file is ", st.st_size, " bytes, limit is ", max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return ErrnoStatus("cannot read", path);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

absl::Status WriteFileSynced(const std::string& path, std::string_view data) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status();
  auto fd = OpenLeaf(*at, path, O_WRONLY | O_CREAT | O_TRUNC, "cannot create");
  if (!fd.ok()) return fd.status();
  if (absl::Status s = WriteAll(fd->get(), data, path); !s.ok()) {
    ::unlinkat(at->fd(), at->leaf.c_str(), 0);
    return s;
  }
  if (::close(fd->release()) != 0) return ErrnoStatus("cannot close", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadFile(path, 1 << 16);
  if (!text.ok()) return text.status();
  size_t start = 0;
  while (start < text->size()) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(start, end - start);
    start = end + 1;
    size_t b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    line = line.substr(b, e - b + 1);
    // "NAME TOKEN", as in the coordinator's token files: the token is the last word.
    if (const size_t space = line.find_last_of(" \t"); space != std::string::npos) line = line.substr(space + 1);
    for (char c : line) {
      if (c < 0x21 || c > 0x7e) return absl::InvalidArgumentError(absl::StrCat(path, ": the token holds a character that cannot be sent"));
    }
    return line;
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": no token in the file"));
}

absl::Status FsyncDirectory(const std::string& dir) {
  auto at = Locate(dir.empty() ? "." : dir, true, false);
  if (!at.ok()) return at.status();
  int fd = ::openat(at->fd(), at->leaf.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir);
  ::fsync(fd);
  ::close(fd);
  return absl::OkStatus();
}

std::string ResolvePath(const std::string& p) {
  namespace fs = std::filesystem;
  fs::path path = fs::absolute(p).lexically_normal();
  fs::path existing = path, rest;
  while (!existing.empty() && !fs::exists(existing)) {
    rest = existing.filename() / rest;
    existing = existing.parent_path();
  }
  std::error_code ec;
  fs::path canon = fs::canonical(existing, ec);
  if (ec) canon = existing;
  std::string out = (rest.empty() ? canon : canon / rest).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool ResolvesInside(const std::string& p, const std::string& root) {
  const std::string r = ResolvePath(root), resolved = ResolvePath(p);
  return resolved == r || resolved.rfind(r == "/" ? r : r + "/", 0) == 0;
}

absl::Status MakeDirs(const std::string& dir) {
  // Beneath a pin, Locate has made every component (no link followed).
  if (auto at = Locate(dir, true, true); !at.ok() || at->nofollow) return at.status();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec) return absl::OkStatus();
  const std::string msg = absl::StrCat("cannot create directory ", dir, ": ", ec.message());
  switch (ec.value()) {
    // The same path fails the same way on a retry.
    case ENOTDIR:
    case EEXIST:
    case EROFS:
    case EACCES:
    case EPERM:
    case ENAMETOOLONG: return absl::FailedPreconditionError(msg);
    case ENOSPC:
    case EDQUOT: return absl::ResourceExhaustedError(msg);
    default: return absl::UnavailableError(msg);
  }
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view data) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status();
  const std::string leaf = at->leaf;
  const std::string tmp_leaf = absl::StrCat(leaf, ".tmp.", ::getpid());
  at->leaf = tmp_leaf;
  auto fd = OpenLeaf(*at, path, O_WRONLY | O_CREAT | O_TRUNC, "cannot create");
  if (!fd.ok()) return fd.status();
  absl::Status s = WriteAll(fd->get(), data, path);
  if (s.ok() && ::close(fd->release()) != 0) s = ErrnoStatus("cannot close", path);
  if (s.ok() && ::renameat(at->fd(), tmp_leaf.c_str(), at->fd(), leaf.c_str()) != 0) {
    s = ErrnoStatus("cannot rename onto", path);
  }
  if (!s.ok()) {
    ::unlinkat(at->fd(), tmp_leaf.c_str(), 0);
    return s;
  }
  if (at->nofollow) {
    ::fsync(at->fd());
    return absl::OkStatus();
  }
  return FsyncDirectory(std::filesystem::path(path).parent_path().string());
}

absl::Status RemoveTree(const std::string& path) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : at.status();
  if (!at->nofollow) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot remove ", path, ": ", ec.message()));
    return absl::OkStatus();
  }
  return RemoveAt(at->fd(), at->leaf, path, 0);
}

absl::Status RenamePath(const std::string& from, const std::string& to) {
  auto a = Locate(from, false, false);
  if (!a.ok()) return a.status();
  auto b = Locate(to, false, false);
  if (!b.ok()) return b.status();
  if (::renameat(a->fd(), a->leaf.c_str(), b->fd(), b->leaf.c_str()) != 0) return ErrnoStatus("cannot rename " + from + " to", to);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DirEntry>> ListDirectory(const std::string& dir) {
  auto at = Locate(dir, true, false);
  if (!at.ok()) return at.status();
  const int fd = ::openat(at->fd(), at->leaf.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return ErrnoStatus("cannot list", dir);
  }
  std::vector<DirEntry> out;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    // Beneath a pin a link is reported as a link, never as what it points to.
    const int flags = at->nofollow ? AT_SYMLINK_NOFOLLOW : 0;
    const bool is_dir = ::fstatat(::dirfd(d), e->d_name, &st, flags) == 0 && S_ISDIR(st.st_mode);
    out.push_back({e->d_name, is_dir});
  }
  ::closedir(d);
  return out;
}

absl::StatusOr<int64_t> FileSize(const std::string& path) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status();
  auto fd = OpenLeaf(*at, path, O_RDONLY, "cannot open");
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (::fstat(fd->get(), &st) != 0) return ErrnoStatus("cannot stat", path);
  return static_cast<int64_t>(st.st_size);
}

bool PathExists(const std::string& path) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return false;
  struct stat st;
  return ::fstatat(at->fd(), at->leaf.c_str(), &st, at->nofollow ? AT_SYMLINK_NOFOLLOW : 0) == 0;
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  return HexOf(md, len);
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}
Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256Stream::Update(std::string_view bytes) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), bytes.data(), bytes.size());
}
std::string Sha256Stream::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  return HexOf(md, len);
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  auto at = Locate(path, false, false);
  if (!at.ok()) return at.status();
  auto fd = OpenLeaf(*at, path, O_RDONLY, "cannot open");
  if (!fd.ok()) return fd.status();
  Sha256Stream sha;
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot read", path);
    if (n == 0) break;
    sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  return sha.HexDigest();
}

}  // namespace attune::common
