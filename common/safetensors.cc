#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace attune::common {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100 << 20;  // as the reference implementation

absl::Status Bad(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": corrupt safetensors file: ", what));
}

// Parses `bytes`; tensors copy their bytes, or view them when `mapping`
// (which keeps `bytes` alive) is given.
absl::StatusOr<SafeTensorsFile> Parse(std::string_view bytes, const std::string& source,
                                      const std::shared_ptr<const void>& mapping);

}  // namespace

int64_t SafeTensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int DtypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return -1;
}

absl::StatusOr<SafeTensorsFile> ParseSafeTensors(const std::string& bytes,
                                                 const std::string& source) {
  return Parse(bytes, source, nullptr);
}

namespace {

absl::StatusOr<SafeTensorsFile> Parse(std::string_view bytes, const std::string& source,
                                      const std::shared_ptr<const void>& mapping) {
  if (bytes.size() < 8) return Bad(source, "shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return Bad(source, absl::StrCat("header length ", header_len, " exceeds the file (",
                                    bytes.size(), " bytes)"));
  }
  nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len,
                                                nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Bad(source, "header is not a JSON object");
  const uint64_t data_len = bytes.size() - 8 - header_len;
  const char* data = bytes.data() + 8 + header_len;

  SafeTensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return Bad(source, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return Bad(source, "__metadata__ values must be strings");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2) {
      return Bad(source, absl::StrCat("tensor '", name, "' lacks dtype, shape or data_offsets"));
    }
    SafeTensor t;
    t.dtype = v["dtype"].get<std::string>();
    int esize = DtypeSize(t.dtype);
    if (esize < 0) return Bad(source, absl::StrCat("tensor '", name, "' has unknown dtype ", t.dtype));
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return Bad(source, absl::StrCat("tensor '", name, "' has a bad shape"));
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint32_t>::max() * uint64_t{16} / dim) {
        return Bad(source, absl::StrCat("tensor '", name, "' shape overflows"));
      }
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offs = v["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return Bad(source, absl::StrCat("tensor '", name, "' has bad data_offsets"));
    }
    uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end || end > data_len) {
      return Bad(source, absl::StrCat("tensor '", name, "' data_offsets [", begin, ", ", end,
                                      ") fall outside the ", data_len, "-byte data section"));
    }
    if (end - begin != numel * static_cast<uint64_t>(esize)) {
      return Bad(source, absl::StrCat("tensor '", name, "' holds ", end - begin, " bytes but shape and ",
                                      t.dtype, " need ", numel * esize));
    }
    if (mapping) {
      t.mapping = mapping;
      t.mapped = std::string_view(data + begin, end - begin);
    } else {
      t.data.assign(data + begin, data + end);
    }
    ranges.emplace_back(begin, end);
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t cursor = 0;
  for (const auto& [b, e] : ranges) {
    if (b < cursor) return Bad(source, absl::StrCat("tensors overlap at byte ", b));
    if (b > cursor) return Bad(source, absl::StrCat("gap in the data section at byte ", cursor));
    cursor = e;
  }
  if (cursor != data_len) return Bad(source, absl::StrCat("trailing ", data_len - cursor, " bytes after the last tensor"));
  return out;
}

}  // namespace

absl::StatusOr<SafeTensorsFile> ReadSafeTensors(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    const std::string what = absl::StrCat("cannot open ", path, ": ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(what) : absl::PermissionDeniedError(what);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return Parse(std::string_view(), path, nullptr);
  }
  void* at = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the file
  if (at == MAP_FAILED) return absl::ResourceExhaustedError(absl::StrCat("cannot map ", path, ": ", std::strerror(e)));
  ::madvise(at, size, MADV_SEQUENTIAL);
  std::shared_ptr<const void> mapping(at, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  return Parse(std::string_view(static_cast<const char*>(at), size), path, mapping);
}

std::string SerializeSafeTensors(const SafeTensorsFile& file) {
  nlohmann::json header = nlohmann::json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes().size()}}};
    offset += t.bytes().size();
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& [name, t] : file.tensors) out += t.bytes();
  return out;
}

absl::Status WriteSafeTensors(const std::string& path, const SafeTensorsFile& file) {
  return WriteFileAtomic(path, SerializeSafeTensors(file));
}

}  // namespace attune::common
