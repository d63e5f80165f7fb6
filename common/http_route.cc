#include "common/http_route.h"

namespace attune::common {

bool HttpHeadComplete(std::string_view buffered) {
  return buffered.find("\r\n\r\n") != std::string_view::npos || buffered.find("\n\n") != std::string_view::npos;
}

HttpRequest RouteHttpRequest(std::string_view head) {
  const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
  // METHOD SP TARGET [SP VERSION]; runs of spaces are tolerated.
  auto next_word = [&line](size_t& at) {
    while (at < line.size() && line[at] == ' ') ++at;
    const size_t start = at;
    while (at < line.size() && line[at] != ' ') ++at;
    return line.substr(start, at - start);
  };
  size_t at = 0;
  const std::string_view method = next_word(at);
  const std::string_view target = next_word(at);
  HttpRequest r;
  r.head_only = method == "HEAD";
  if (method != "GET" && !r.head_only) {
    r.route = HttpRoute::kMethodNotAllowed;
    return r;
  }
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/metrics") {
    r.route = HttpRoute::kMetrics;
  } else if (path == "/" || path == "/healthz") {
    r.route = HttpRoute::kHealth;
  }
  return r;
}

}  // namespace attune::common
