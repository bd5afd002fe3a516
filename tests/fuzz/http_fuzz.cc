// The HTTP server's request path without sockets: Beast's request parser with the server's
// limits, then what the server does with a parsed request (http/uri.h parse_target, the router,
// the request id check) against a route table shaped like the API's.
//
// Input: the raw bytes a client sends (one request; pipelined bytes after it are ignored).
//
// Checks, besides "no crash": a matched route has one decoded segment per pattern segment, its
// literals equal the path's and its parameters are the path's segments at their places; a 405
// lists methods other than the one asked; a decoded segment, once percent-encoded, decodes back
// to itself; a request id the server would echo is at most 128 printable bytes.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "http/message.h"
#include "http/router.h"
#include "http/uri.h"

namespace {

namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using hi::fuzz::check;
namespace http = hi::http;

const http::Router& routes() {
  static const http::Router router = [] {
    http::Router r;
    const auto none = [](http::Request&) { return http::Response{}; };
    for (const auto& [method, pattern] : std::initializer_list<std::pair<const char*, const char*>>{
             {"POST", "/api/miners"},
             {"GET", "/api/miners"},
             {"POST", "/api/miners/bulk"},
             {"PATCH", "/api/miners/:id/status"},
             {"GET", "/api/miners/:id"},
             {"GET", "/api/portfolio/projection"},
             {"GET", "/api/tenants/:tenant/users/:user"},
             {"GET", "/"},
             {"GET", "/metrics"},
             {"GET", "/alive"}}) {
      r.add(method, pattern, none);
    }
    return r;
  }();
  return router;
}

std::string_view view(boost::beast::string_view s) { return {s.data(), s.size()}; }

void check_segments_round_trip(const std::vector<std::string>& segments) {
  for (const auto& s : segments) {
    const auto back = http::percent_decode(http::percent_encode(s));
    check(back.ok() && *back == s, "a decoded segment survives encoding and decoding");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(16 << 10);
  parser.body_limit(64 << 10);
  parser.eager(true);
  boost::beast::error_code ec;
  net::const_buffer rest(data, size);
  // As Beast's own read loop does: put() what there is. need_more means "call again with these
  // bytes and more"; there are no more, so parsing ends there (the server would wait), and a
  // complete header is still routed. Any other error is the server's 400 or 413.
  while (rest.size() > 0 && !parser.is_done()) {
    const std::size_t used = parser.put(rest, ec);
    rest += used;
    if (ec || used == 0) break;
  }
  if (ec && ec != bhttp::error::need_more) return 0;
  if (!parser.is_header_done()) return 0;

  const auto& msg = parser.get();
  const std::string_view id = view(msg["X-Request-Id"]);
  if (http::is_sane_request_id(id)) {
    check(id.size() <= 128, "an echoed request id is at most 128 bytes");
    for (const char c : id) check(c > 0x20 && c < 0x7f, "an echoed request id is printable");
  }

  const auto target = http::parse_target(view(msg.target()));
  if (!target) {
    check(target.error().code == hi::Code::kInvalidArgument, "a bad target is kInvalidArgument");
    return 0;
  }
  check(target->path.size() <= msg.target().size(), "the path is part of the target");
  check_segments_round_trip(target->segments);

  const std::string method(view(msg.method_string()));
  const auto match = routes().match(method, target->segments);
  if (match.route != nullptr) {
    check(match.route->method == method, "a route matches its own method");
    const auto pattern = http::parse_target(match.route->pattern);
    check(pattern.ok() && pattern->segments.size() == target->segments.size(),
          "a route matches as many segments as it has");
    std::size_t p = 0;
    for (std::size_t i = 0; i < pattern->segments.size(); ++i) {
      const std::string& seg = pattern->segments[i];
      if (!seg.empty() && seg[0] == ':') {
        check(p < match.params.size() && match.params[p].first == seg.substr(1) &&
                  match.params[p].second == target->segments[i] && !target->segments[i].empty(),
              "a parameter is the path's segment at its place");
        ++p;
      } else {
        check(seg == target->segments[i], "literals match exactly");
      }
    }
    check(p == match.params.size(), "one value per parameter");
  } else {
    for (const auto& allowed : match.allowed) {
      check(allowed != method, "405 lists only other methods");
    }
  }
  return 0;
}
