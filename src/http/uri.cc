#include "http/uri.h"

#include <charconv>

namespace hi::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

}  // namespace

Result<std::string> percent_decode(std::string_view text, bool plus_as_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int high = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
      const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (high < 0 || low < 0) return invalid_argument("bad percent-encoding");
      const char decoded = static_cast<char>(high * 16 + low);
      if (decoded == '\0') return invalid_argument("percent-encoded NUL");
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (unreserved(c)) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

Result<Pairs> parse_query(std::string_view query) {
  Pairs out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    const auto eq = piece.find('=');
    auto name = percent_decode(piece.substr(0, eq), true);
    if (!name) return name.error().wrap("query");
    auto value = percent_decode(eq == std::string_view::npos ? "" : piece.substr(eq + 1), true);
    if (!value) return value.error().wrap("query parameter '" + *name + "'");
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

Result<Target> parse_target(std::string_view target) {
  if (target.empty() || target[0] != '/') return invalid_argument("target: not a path");
  if (target.find('#') != std::string_view::npos) return invalid_argument("target: holds a '#'");
  Target out;
  const auto qmark = target.find('?');
  const std::string_view path = target.substr(0, qmark);
  out.path = std::string(path);
  if (qmark != std::string_view::npos) {
    auto query = parse_query(target.substr(qmark + 1));
    if (!query) return query.error();
    out.query = std::move(*query);
  }
  // Split first, then decode: "%2F" inside a segment stays part of it.
  std::string_view rest = path.substr(1);
  if (path.size() > 1) {
    for (;;) {
      const auto slash = rest.find('/');
      auto segment = percent_decode(rest.substr(0, slash));
      if (!segment) return segment.error().wrap("path");
      out.segments.push_back(std::move(*segment));
      if (slash == std::string_view::npos) break;
      rest = rest.substr(slash + 1);
    }
  }
  return out;
}

std::string Url::authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) out += ":" + std::to_string(port);
  return out;
}

Result<Url> parse_url(std::string_view url) {
  const std::string quoted = "url '" + std::string(url) + "'";
  Url out;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    rest = url.substr(8);
    out.tls = true;
    out.port = 443;
  } else {
    return invalid_argument(quoted + ": only http:// and https:// are supported");
  }
  const auto end = rest.find_first_of("/?");
  std::string_view hostport = rest.substr(0, end);
  if (end != std::string_view::npos) {
    out.target = std::string(rest.substr(end));
    if (out.target[0] == '?') out.target.insert(0, "/");
  }
  if (hostport.find('@') != std::string_view::npos) {
    return invalid_argument(quoted + ": credentials in the url are not supported");
  }
  std::string_view port;
  if (hostport.starts_with("[")) {
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) return invalid_argument(quoted + ": unclosed '['");
    out.host = std::string(hostport.substr(1, close - 1));
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty() && after[0] != ':') return invalid_argument(quoted + ": bad host");
    if (!after.empty()) port = after.substr(1);
    if (!after.empty() && port.empty()) return invalid_argument(quoted + ": bad port");
  } else {
    const auto colon = hostport.rfind(':');
    out.host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = hostport.substr(colon + 1);
      if (port.empty()) return invalid_argument(quoted + ": bad port");
    }
  }
  if (out.host.empty()) return invalid_argument(quoted + ": no host");
  if (!port.empty()) {
    int p = 0;
    const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      return invalid_argument(quoted + ": bad port");
    }
    out.port = p;
  }
  return out;
}

}  // namespace hi::http
