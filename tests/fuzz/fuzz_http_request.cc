// The metrics server's request head routing: bytes from any client.
#include <string_view>

#include "common/http_route.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view head(reinterpret_cast<const char*>(data), size);
  (void)attune::common::HttpHeadComplete(head);
  (void)attune::common::RouteHttpRequest(head);
  return 0;
}
