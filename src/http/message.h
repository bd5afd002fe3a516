// What a handler sees and returns.
//
// A Request is built by the server from one parsed HTTP/1.1 request and handed to one handler
// call; a Response is a value the handler returns. Neither is shared between threads.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "http/error.h"
#include "http/stream.h"
#include "http/uri.h"

namespace hi::http {

struct Request {
  std::string method;          // as sent: "GET"
  std::string target;          // as sent: "/api/miners/7/status?x=1"
  std::string path;            // the target's path, still encoded: "/api/miners/7/status"
  std::string route;           // the matched route's pattern: "/api/miners/:id/status"
  Pairs params;                // decoded path parameters of the route: {{"id", "7"}}
  Pairs query;                 // decoded query parameters, in order
  Pairs headers;               // names in lower case, values as sent, in order
  std::string body;            // at most the server's body limit
  std::string request_id;      // X-Request-Id as sent when sane, else generated (UUIDv7)
  std::string remote_address;  // the peer's IP address

  // The first header of that name (any case); nullopt when absent.
  std::optional<std::string_view> header(std::string_view name) const;
  // The first query parameter of that name; nullopt when absent ("?flag" is present, empty).
  std::optional<std::string_view> query_param(std::string_view name) const;
  // A path parameter of the route ("id" for ":id"); empty when the route has none of that name.
  std::string_view param(std::string_view name) const;
};

// True for an X-Request-Id the server may echo: 1 to 128 printable ASCII characters, no spaces.
bool is_sane_request_id(std::string_view id);

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Pairs headers;  // extra headers; the server sets Content-Length, Connection and X-Request-Id
  // When set, the server renders the error shape (error.h) with the request id as the body, and
  // `status` is the code's.
  std::optional<ApiError> error;
  // When set, the body is this stream's (stream.h) and `body` is ignored.
  std::shared_ptr<Stream> stream;

  static Response json(const nlohmann::json& body, int status = 200);
  static Response text(std::string body, std::string content_type = "text/plain; charset=utf-8",
                       int status = 200);
  static Response fail(ErrorCode code, std::string message, std::string field = {});
  static Response fail(ApiError error);
  // text/event-stream unless told otherwise; Cache-Control: no-cache.
  static Response streaming(std::shared_ptr<Stream> stream,
                            std::string content_type = "text/event-stream");
};

}  // namespace hi::http
