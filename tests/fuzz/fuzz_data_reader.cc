// The data readers (CSV, TSV, JSONL, plain text, CoNLL) and the cleaning
// that follows them. The first byte picks the format and the task; the rest
// is the file.
#include <unistd.h>

#include <fstream>
#include <string>

#include "worker/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace attune::worker::data;
  static const char* kExt[] = {".csv", ".tsv", ".jsonl", ".txt", ".conll"};
  const int pick = data[0];
  const std::string path = "/tmp/attune_fuzz_reader_" + std::to_string(::getpid()) + kExt[pick % 5];
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
  }
  ReaderOptions o;
  o.max_field_bytes = 4096;
  CleaningPolicy policy;
  switch (pick / 5 % 5) {
    case 1:  // masked_lm: no labels, plain text allowed
      o.require_label = false;
      policy.kind = LabelKind::kNone;
      break;
    case 2:  // token classification: word and tag lists, CoNLL
      o.token_lists = true;
      policy.kind = LabelKind::kTags;
      break;
    case 3:  // multi-label
      o.label_list = true;
      policy.kind = LabelKind::kMultiLabel;
      break;
    case 4:  // regression
      policy.kind = LabelKind::kNumber;
      break;
    default:
      break;
  }
  auto records = ReadRecords(path, o);
  if (records.ok()) (void)Clean(*records, policy, std::nullopt, path);
  ::unlink(path.c_str());
  return 0;
}
