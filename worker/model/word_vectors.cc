#include "worker/model/word_vectors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/job_config.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace attune::worker::model {

namespace {

constexpr int64_t kMaxTableBytes = int64_t{2} << 30;
constexpr int64_t kMaxWordsBytes = int64_t{256} << 20;
constexpr int64_t kMaxDimensions = 4096;

// "12345" -> "12,345".
std::string Grouped(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

bool IsSpecial(const std::string& token) {
  return token.size() >= 2 && token.front() == '[' && token.back() == ']';
}

}  // namespace

absl::StatusOr<WordVectors> ReadWordVectors(const std::string& dir, const std::string& name) {
  if (!common::IsWordVectorTable(name)) {
    return absl::InvalidArgumentError(absl::StrCat("model.init_embeddings: unknown word vectors '", name, "'"));
  }
  const std::string root = absl::StrCat(dir, "/", name);
  auto manifest_text = common::ReadFile(root + "/manifest.json", 1 << 20);
  if (!manifest_text.ok()) {
    if (absl::IsNotFound(manifest_text.status())) {
      return absl::NotFoundError(absl::StrCat("model.init_embeddings: ", name, " is not installed in ", dir,
                                              " (no ", root, "/manifest.json): run scripts/fetch-embeddings.sh, or "
                                              "point the worker's --embeddings_dir at a directory that has it"));
    }
    return manifest_text.status();
  }
  nlohmann::json manifest = nlohmann::json::parse(*manifest_text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& file, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(root, "/", file, ": ", why));
  };
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object() ||
      !manifest.contains("dimensions") || !manifest["dimensions"].is_number_integer() ||
      !manifest.contains("words") || !manifest["words"].is_number_integer()) {
    return bad("manifest.json", "not a word-vector manifest (needs files, words and dimensions)");
  }
  const int64_t dims = manifest["dimensions"].get<int64_t>();
  const int64_t count = manifest["words"].get<int64_t>();
  if (dims <= 0 || dims > kMaxDimensions) return bad("manifest.json", absl::StrCat("dimensions ", dims, " out of range"));
  if (count <= 0 || count > kMaxTableBytes / 4 / dims) {
    return bad("manifest.json", absl::StrCat("words ", count, " out of range"));
  }
  // Each file is read once, and the bytes read are the bytes hashed.
  auto checked = [&](const std::string& file, int64_t max_bytes) -> absl::StatusOr<std::string> {
    const auto& files = manifest["files"];
    if (!files.contains(file) || !files[file].is_string()) return bad("manifest.json", "lists no sha256 for " + file);
    ATTUNE_ASSIGN_OR_RETURN(std::string bytes, common::ReadFile(root + "/" + file, max_bytes));
    const std::string want = files[file].get<std::string>();
    if (const std::string got = common::Sha256Hex(bytes); got != want) {
      return bad(file, absl::StrCat("SHA-256 ", got, " is not the manifest's ", want, " (damaged or replaced)"));
    }
    return bytes;
  };

  WordVectors wv;
  wv.name = name;
  wv.dimensions = dims;
  {
    ATTUNE_ASSIGN_OR_RETURN(std::string text, checked("words.txt", kMaxWordsBytes));
    if (!text.empty() && text.back() == '\n') text.pop_back();
    wv.words = absl::StrSplit(text, '\n');
  }
  if (static_cast<int64_t>(wv.words.size()) != count) {
    return bad("words.txt", absl::StrCat(wv.words.size(), " lines, the manifest says ", count, " words"));
  }
  {
    common::SafeTensor vectors;
    {
      ATTUNE_ASSIGN_OR_RETURN(std::string bytes, checked("vectors.safetensors", kMaxTableBytes + (1 << 20)));
      ATTUNE_ASSIGN_OR_RETURN(common::SafeTensorsFile file,
                              common::ParseSafeTensors(bytes, root + "/vectors.safetensors"));
      auto it = file.tensors.find("vectors");
      if (it == file.tensors.end()) return bad("vectors.safetensors", "has no tensor named 'vectors'");
      vectors = std::move(it->second);
    }
    if (vectors.dtype != "F32" || vectors.shape != std::vector<int64_t>{count, dims}) {
      return bad("vectors.safetensors",
                 absl::StrFormat("'vectors' must be F32 [%d, %d] (the manifest's words and dimensions)", count, dims));
    }
    wv.values.resize(static_cast<size_t>(count * dims));
    std::memcpy(wv.values.data(), vectors.bytes().data(), wv.values.size() * sizeof(float));
  }
  for (size_t i = 0; i < wv.values.size(); ++i) {
    if (!std::isfinite(wv.values[i])) {
      return bad("vectors.safetensors",
                 absl::StrCat("row ", i / static_cast<size_t>(dims), " ('", wv.words[i / static_cast<size_t>(dims)],
                              "') is not finite"));
    }
  }
  wv.row_of.reserve(wv.words.size());
  for (size_t i = 0; i < wv.words.size(); ++i) wv.row_of.emplace(wv.words[i], static_cast<int64_t>(i));  // first wins
  return wv;
}

VocabularyMatch MatchVocabulary(const std::vector<std::string>& vocab, const WordVectors& vectors) {
  VocabularyMatch m;
  WordVectorCoverage& c = m.coverage;
  c.name = vectors.name;
  c.vocab_size = static_cast<int64_t>(vocab.size());
  auto lookup = [&](const std::string& word) -> int64_t {
    if (word.empty()) return -1;
    if (auto it = vectors.row_of.find(word); it != vectors.row_of.end()) return it->second;
    if (auto it = vectors.row_of.find(absl::AsciiStrToLower(word)); it != vectors.row_of.end()) return it->second;
    return -1;
  };
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string& token = vocab[id];
    if (IsSpecial(token)) {
      ++c.special;
      continue;
    }
    const bool piece = absl::StartsWith(token, "##");
    (piece ? c.pieces : c.whole_words)++;
    const int64_t row = lookup(piece ? token.substr(2) : token);
    if (row < 0) continue;
    (piece ? c.pieces_covered : c.whole_words_covered)++;
    m.token_ids.push_back(static_cast<int64_t>(id));
    m.vector_rows.push_back(row);
  }
  return m;
}

std::string CoverageLine(const WordVectorCoverage& m) {
  return absl::StrFormat(
      "%s: %s of %s tokens (%.1f%%): whole words %s of %s, ## pieces %s of %s; %s special tokens and the %s "
      "without a vector keep their random initialisation",
      m.name, Grouped(m.covered()), Grouped(m.vocab_size), 100.0 * m.covered() / std::max<int64_t>(1, m.vocab_size),
      Grouped(m.whole_words_covered), Grouped(m.whole_words), Grouped(m.pieces_covered), Grouped(m.pieces),
      Grouped(m.special), Grouped(m.whole_words + m.pieces - m.covered()));
}

}  // namespace attune::worker::model
