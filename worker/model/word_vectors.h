#pragma once

// Pretrained word vectors (GloVe) as a starting point for the token
// embeddings of a model trained from scratch: `model.init_embeddings`.
// Torch-free: this reads the installed table and matches a WordPiece
// vocabulary against it; bert.h's InitWordEmbeddings projects the matches
// into the model.
//
// An installed table is a directory <embeddings_dir>/<name>/ written by
// tools/convert_word_vectors.cjs (scripts/fetch-embeddings.sh):
//   vectors.safetensors  one F32 tensor "vectors" of shape [words, dimensions]
//   words.txt            the words, one per line, row i of the tensor
//   manifest.json        {"name", "words", "dimensions", "source", "source_sha256",
//                         "files": {"vectors.safetensors": sha256, "words.txt": sha256}}
// Both files are checked against the manifest's SHA-256 and against each
// other (row count, dimensions, finite values) before anything is used.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace attune::worker::model {

inline constexpr char kDefaultEmbeddingsDir[] = "/usr/local/share/attune/embeddings";

struct WordVectors {
  std::string name;
  int64_t dimensions = 0;
  std::vector<std::string> words;
  std::vector<float> values;  // words.size() x dimensions, row-major
  std::unordered_map<std::string, int64_t> row_of;
  const float* Row(int64_t row) const { return values.data() + row * dimensions; }
};

// Reads <dir>/<name>/ as above; `name` must be one of
// common::kWordVectorTables (a name, never a path). kNotFound names the directory and how to
// install it; kInvalidArgument names the file and what is wrong with it.
absl::StatusOr<WordVectors> ReadWordVectors(const std::string& dir, const std::string& name);

// How a vocabulary maps onto a table. Whole-word tokens take their word's
// vector; "##" pieces the vector of the same-spelled word; each is looked up
// as written and then lower-cased (GloVe 6B is lower-case). Bracketed special
// tokens ([PAD], [CLS], [unused0], ...) are left out and keep their random
// initialisation, as does every token without a vector.
struct WordVectorCoverage {
  std::string name;
  int64_t vocab_size = 0;
  int64_t special = 0;
  int64_t whole_words = 0, whole_words_covered = 0;
  int64_t pieces = 0, pieces_covered = 0;
  int64_t covered() const { return whole_words_covered + pieces_covered; }
};
struct VocabularyMatch {
  WordVectorCoverage coverage;
  std::vector<int64_t> token_ids;    // covered tokens, in vocabulary order
  std::vector<int64_t> vector_rows;  // their rows of the table
};

VocabularyMatch MatchVocabulary(const std::vector<std::string>& vocab, const WordVectors& vectors);

// One line for logs and reports: "glove-6b-100d: 6,912 of 8,192 tokens (84.4%): whole words 5,001 of 5,532,
// ## pieces 1,911 of 2,655; 5 special tokens and the 1,275 without a vector keep their random
// initialisation".
std::string CoverageLine(const WordVectorCoverage& c);

}  // namespace attune::worker::model
