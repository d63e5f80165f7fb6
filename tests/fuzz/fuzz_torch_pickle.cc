// The allow-list unpickler of pytorch_model.bin state dicts: the pickle of a
// zip checkpoint, and a whole legacy (pre-1.6) file.
#include <string_view>

#include "common/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto dict = attune::common::ParseStateDictPickle(bytes, "fuzz/data.pkl");
  if (dict.ok()) {
    for (const auto& [name, t] : dict->tensors) (void)attune::common::Materialize(t, bytes, name);
  }
  (void)attune::common::ReadLegacyTorchFile(bytes, "fuzz.bin");
  return 0;
}
