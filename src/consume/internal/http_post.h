// A minimal blocking HTTP/1.1 client for webhooks: POST a body, read the status line.
// http:// only; one connection per request (Connection: close). Thread-compatible.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"

namespace hi::consume::internal {

struct HttpUrl {
  std::string host;
  int port = 80;
  std::string path = "/";
};
Result<HttpUrl> parse_http_url(const std::string& url);

// Returns the HTTP status code. kDeadlineExceeded when `timeout` (the whole exchange) passes,
// kUnavailable when the connection fails.
Result<int> http_post(const HttpUrl& url, const std::string& body,
                      const std::vector<std::pair<std::string, std::string>>& headers,
                      std::chrono::milliseconds timeout);

}  // namespace hi::consume::internal
