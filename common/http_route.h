#pragma once

// The request line of an HTTP/1.x request head, as the metrics server
// routes it. Pure and torch-free: the head comes from any client on the
// network, so it is fuzzed (tests/fuzz).

#include <string>
#include <string_view>

namespace attune::common {

enum class HttpRoute { kMetrics, kHealth, kNotFound, kMethodNotAllowed };

struct HttpRequest {
  HttpRoute route = HttpRoute::kNotFound;
  bool head_only = false;  // HEAD: the headers without the body
};

// Whether `buffered` holds a whole request head (it ends with a blank line).
bool HttpHeadComplete(std::string_view buffered);

// GET or HEAD of /metrics, / or /healthz (a query string is ignored); any
// other method is kMethodNotAllowed, any other path kNotFound.
HttpRequest RouteHttpRequest(std::string_view head);

}  // namespace attune::common
