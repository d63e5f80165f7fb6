// A safetensors file as a checkpoint or a user's model directory holds it.
#include <string>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)attune::common::ParseSafeTensors(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  return 0;
}
