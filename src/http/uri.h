// Request targets and URLs, parsed here because Boost 1.74 has no Boost.URL.
//
// Pure functions, thread-safe, no allocation beyond their results. Bad input is an Error with
// kInvalidArgument whose message names the part that is wrong ("query: bad percent-encoding").
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace hi::http {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// %XX sequences to bytes; with `plus_as_space` (query strings) '+' is a space. A '%' not followed
// by two hex digits is an error, and so is a decoded NUL (no caller has a use for one and C APIs
// downstream would cut the string there).
Result<std::string> percent_decode(std::string_view text, bool plus_as_space = false);

// Every byte outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~) as %XX.
std::string percent_encode(std::string_view text);

// "a=1&b=x%20y&flag" -> {{"a","1"}, {"b","x y"}, {"flag",""}}, in order, duplicates kept; empty
// pieces ("a=1&&b=2") are skipped.
Result<Pairs> parse_query(std::string_view query);

// An origin-form request target ("/api/miners/7?days=30"), split and decoded.
struct Target {
  std::string path;                   // as sent, still encoded: "/api/miners/7"
  std::vector<std::string> segments;  // decoded, split before decoding: {"api", "miners", "7"}
  Pairs query;                        // decoded
};
// "/" has no segments; "/a/" is {"a", ""}. A target that does not start with '/' (absolute
// form, "*"), or holds a '#', is an error.
Result<Target> parse_target(std::string_view target);

// http[s]://host[:port][/path][?query]. https: the client verifies the server's certificate and
// name (client.h).
struct Url {
  std::string host;          // a name, an IPv4 address, or an IPv6 address without brackets
  int port = 80;             // 443 for https unless given
  std::string target = "/";  // path and query, as given
  bool tls = false;          // https

  // "host:port" as a Host header and in messages ("[::1]:8080" for IPv6); the port is left out
  // when it is the scheme's default.
  std::string authority() const;
};
Result<Url> parse_url(std::string_view url);

}  // namespace hi::http
