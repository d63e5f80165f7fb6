#include "common/confine.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/files.h"
#include "common/job_config.h"

namespace attune::common {
namespace fs = std::filesystem;
namespace {

std::string Normal(const std::string& p) {
  std::string n = fs::absolute(fs::path(p)).lexically_normal().string();
  while (n.size() > 1 && n.back() == '/') n.pop_back();
  return n;
}

// `path` relative to `root` when it lies lexically beneath it (".": the root).
bool RelativeTo(const std::string& root, const std::string& path, std::string* rel) {
  if (path == root) {
    *rel = ".";
    return true;
  }
  const std::string prefix = root == "/" ? "/" : root + "/";
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  *rel = path.substr(prefix.size());
  return true;
}

long Openat2(int dirfd, const char* path, int flags, uint64_t resolve) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags);
  how.resolve = resolve;
  return ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

// Without openat2: each component opened with O_NOFOLLOW from the root down;
// any symbolic link is refused (ELOOP).
int WalkNoFollow(int rootfd, const std::string& rel, int flags) {
  int cur = ::fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
  if (rel == ".") {
    const int fd = ::openat(cur, ".", flags);
    ::close(cur);
    return fd;
  }
  fs::path parts(rel);
  auto it = parts.begin();
  while (it != parts.end()) {
    const std::string name = it->string();
    ++it;
    const bool last = it == parts.end();
    const int next = ::openat(cur, name.c_str(),
                              last ? flags | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int saved = errno;
    ::close(cur);
    if (next < 0) {
      errno = saved;
      return -1;
    }
    cur = next;
  }
  return cur;
}

}  // namespace

ScopedFd& ScopedFd::operator=(ScopedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

bool HaveOpenat2() {
  static const bool have = [] {
    const long fd = Openat2(AT_FDCWD, "/", O_PATH | O_CLOEXEC, 0);
    if (fd >= 0) ::close(static_cast<int>(fd));
    return fd >= 0;
  }();
  return have;
}

namespace {

// The checks every opened input gets: a regular file, or a directory where
// `kind` allows one; blocking mode restored.
absl::StatusOr<ScopedFd> CheckKind(ScopedFd out, const std::string& path, FileKind kind) {
  const int fd = out.get();
  struct stat st {};
  if (::fstat(fd, &st) != 0) return absl::InternalError(absl::StrCat("cannot stat ", path));
  const bool ok = S_ISREG(st.st_mode) || (kind == FileKind::kDirectory && S_ISDIR(st.st_mode)) ||
                  (kind == FileKind::kAny && S_ISDIR(st.st_mode));
  if (!ok) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, S_ISDIR(st.st_mode) ? " is a directory, not a file" : " is not a regular file (a FIFO, socket or device)"));
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return out;
}

int InputFlags(FileKind kind) {
  // O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused after.
  return O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (kind == FileKind::kDirectory ? O_DIRECTORY : 0);
}

}  // namespace

absl::StatusOr<ScopedFd> OpenBeneath(const std::string& root, const std::string& path, FileKind kind) {
  if (root.empty()) {
    ScopedFd fd(::open(path.c_str(), InputFlags(kind)));
    if (fd.get() < 0) {
      const int e = errno;
      if (e == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
      if (e == ENOTDIR) return absl::PermissionDeniedError(absl::StrCat(path, " is not a directory"));
      return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", std::strerror(e)));
    }
    return CheckKind(std::move(fd), path, kind);
  }
  const std::string want = Normal(path);
  // The root as given, or where it leads (an operator's symlinked mount).
  std::string base = Normal(root), rel;
  if (!RelativeTo(base, want, &rel)) {
    base = ResolvePath(root);
    if (!RelativeTo(base, want, &rel)) {
      return absl::PermissionDeniedError(absl::StrCat(path, " is not beneath the data root ", root));
    }
  }
  ScopedFd rootfd(::open(base.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (rootfd.get() < 0) return absl::UnavailableError(absl::StrCat("cannot open the data root ", root, ": ", std::strerror(errno)));
  const int flags = InputFlags(kind);
  int fd;
  if (HaveOpenat2()) {
    fd = static_cast<int>(Openat2(rootfd.get(), rel.c_str(), flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS));
  } else {
    fd = WalkNoFollow(rootfd.get(), rel, flags);
  }
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    if (e == EXDEV || e == ELOOP) {
      return absl::PermissionDeniedError(absl::StrCat(
          path, HaveOpenat2() ? " leads outside the data root " + root + " (through a symbolic link or ..)"
                              : " goes through a symbolic link (refused beneath the data root " + root + ")"));
    }
    if (e == ENOTDIR) return absl::PermissionDeniedError(absl::StrCat(path, " is not a directory"));
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, ": ", std::strerror(e)));
  }
  return CheckKind(ScopedFd(fd), path, kind);
}

StagedInputs::~StagedInputs() {
  for (const auto& [at, original] : pinned_) UnpinPath(at);
  if (created_) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    fs::remove_all(dir_ + ".pinned", ec);
  }
}

absl::Status StagedInputs::Create() {
  if (created_) return absl::OkStatus();
  for (const std::string& d : {dir_, dir_ + ".pinned"}) {
    if (auto s = MakeDirs(d); !s.ok()) return s;
    ::chmod(d.c_str(), 0700);
  }
  created_ = true;
  return absl::OkStatus();
}

absl::Status StagedInputs::Link(const std::string& original, ScopedFd fd) {
  const std::string at = dir_ + original;
  if (auto s = MakeDirs(fs::path(at).parent_path().string()); !s.ok()) return s;
  const std::string target = absl::StrCat("/proc/self/fd/", fd.get());
  if (::symlink(target.c_str(), at.c_str()) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot stage ", original, ": ", std::strerror(errno)));
  }
  fds_.push_back(std::move(fd));
  return absl::OkStatus();
}

absl::StatusOr<std::string> StagedInputs::Stage(const std::string& root, const std::string& path,
                                                const std::string& field) {
  if (auto s = Create(); !s.ok()) return s;
  const std::string original = Normal(path);
  auto fd = OpenBeneath(root, path, FileKind::kAny);
  if (!fd.ok()) return absl::Status(fd.status().code(), absl::StrCat(field, ": ", fd.status().message()));
  struct stat st {};
  ::fstat(fd->get(), &st);
  if (S_ISREG(st.st_mode)) {
    if (auto s = Link(original, std::move(*fd)); !s.ok()) return s;
    return dir_ + original;
  }
  // A directory (a model, a folder of .txt files): each regular file in it,
  // opened beneath the root by its own name. A link inside that leads out is
  // refused (vocab.txt -> /etc/shadow); FIFOs and devices are skipped.
  if (auto s = MakeDirs(dir_ + original); !s.ok()) return s;
  DIR* d = ::fdopendir(fd->release());
  if (d == nullptr) return absl::InternalError(absl::StrCat(field, ": cannot list ", path));
  absl::Status status;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    // Only files and links are opened: FIFOs, sockets, devices and
    // subdirectories are never read from a model directory.
    struct stat lst {};
    if (::fstatat(::dirfd(d), name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) != 0 ||
        !(S_ISREG(lst.st_mode) || S_ISLNK(lst.st_mode))) {
      continue;
    }
    auto entry = OpenBeneath(root, original + "/" + name, FileKind::kAny);
    if (!entry.ok()) {
      status = absl::Status(entry.status().code(), absl::StrCat(field, ": ", entry.status().message()));
      break;
    }
    struct stat est {};
    ::fstat(entry->get(), &est);
    if (!S_ISREG(est.st_mode)) continue;  // a link to a directory
    if (status = Link(original + "/" + name, std::move(*entry)); !status.ok()) break;
  }
  ::closedir(d);
  if (!status.ok()) return status;
  return dir_ + original;
}

namespace {

// The first symbolic link in the tree beneath directory `fd` ("" if none),
// as a path relative to it; at most `depth` levels and 100,000 entries.
std::string FirstLinkInside(int fd, const std::string& prefix, int depth, int* budget) {
  const int dup = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) return "";
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return "";
  }
  std::string found;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || --*budget < 0) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      found = prefix + name;
      break;
    }
    if (S_ISDIR(st.st_mode) && depth > 0) {
      ScopedFd sub(::openat(::dirfd(d), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.get() < 0) continue;
      found = FirstLinkInside(sub.get(), prefix + name + "/", depth - 1, budget);
      if (!found.empty()) break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

absl::StatusOr<std::string> StagedInputs::PinDirectory(const std::string& root, const std::string& path,
                                                       const std::string& field, bool create, bool no_links_inside) {
  if (auto s = Create(); !s.ok()) return s;
  const std::string original = Normal(path);
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(original, ec)) && !fs::exists(original, ec)) {
    return absl::PermissionDeniedError(absl::StrCat(field, ": ", path, " is a dangling symbolic link"));
  }
  if (!root.empty() && (original == Normal(root) || ResolvePath(original) == ResolvePath(root))) {
    return absl::PermissionDeniedError(absl::StrCat(field, ": ", path, " is the data root itself"));
  }
  // The nearest existing ancestor, opened (beneath the root), then each
  // missing component made and opened from its parent's descriptor.
  fs::path existing(original);
  std::vector<std::string> missing;
  while (!fs::exists(fs::symlink_status(existing, ec)) && existing.has_parent_path() &&
         existing != existing.parent_path()) {
    if (!create) return absl::NotFoundError(absl::StrCat(field, ": ", path, " does not exist"));
    missing.insert(missing.begin(), existing.filename().string());
    existing = existing.parent_path();
  }
  auto dir = OpenBeneath(root, existing.string(), FileKind::kDirectory);
  if (!dir.ok()) {
    return absl::Status(dir.status().code(),
                        absl::StrCat(field, ": ", missing.empty() ? "" : "cannot create directory " + path + ": ",
                                     dir.status().message()));
  }
  ScopedFd cur = std::move(*dir);
  for (const auto& name : missing) {
    if (::mkdirat(cur.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(absl::StrCat(field, ": cannot create ", path, ": ", std::strerror(errno)));
    }
    ScopedFd next(::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      return absl::PermissionDeniedError(
          absl::StrCat(field, ": ", path, " changed while it was created (", std::strerror(errno), ")"));
    }
    cur = std::move(next);
  }
  if (no_links_inside) {
    int budget = 100000;
    if (const std::string link = FirstLinkInside(cur.get(), "", 16, &budget); !link.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(field, ": ", path, "/", link,
                                                      " is a symbolic link; outputs are never written through links"));
    }
  }
  const std::string at = absl::StrCat(dir_, ".pinned/", pinned_.size());
  const std::string target = absl::StrCat("/proc/self/fd/", cur.get());
  if (::symlink(target.c_str(), at.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot pin ", path, ": ", std::strerror(errno)));
  }
  PinPath(at, cur.get());  // NOTE [pinned directories] (files.h)
  fds_.push_back(std::move(cur));
  pinned_.emplace(at, original);
  return at;
}

std::string StagedInputs::Unstage(const std::string& text) const {
  if (!created_) return text;
  return absl::StrReplaceAll(ShowStagedPaths(pinned_, text), {{dir_, ""}});
}

}  // namespace attune::common
