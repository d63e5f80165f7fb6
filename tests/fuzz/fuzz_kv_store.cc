// The rendezvous store's request handling, as its server runs it: the input
// is a byte stream cut into frames (4-byte little-endian length, payload),
// each handled by one table until a frame is refused (the server would close
// the connection there). Small limits, so that the caps are reached too.
#include <string>
#include <string_view>

#include "worker/comm/kv_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attune::worker::comm::KvLimits limits;
  limits.max_key_bytes = 64;
  limits.max_value_bytes = 256;
  limits.max_keys = 16;
  limits.max_total_bytes = 1024;
  attune::worker::comm::KvTable table(limits);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (in.size() >= 4) {
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << (8 * i);
    in.remove_prefix(4);
    if (n == 0 || n > table.MaxRequestBytes() || n > in.size()) break;
    auto response = table.Handle(in.substr(0, n));
    if (!response.ok()) break;
    if (response->empty() || static_cast<uint8_t>((*response)[0]) > 2) __builtin_trap();
    if (table.size() > limits.max_keys) __builtin_trap();
    in.remove_prefix(n);
  }
  return 0;
}
