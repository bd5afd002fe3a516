#include "http/router.h"

#include <algorithm>
#include <cassert>

namespace hi::http {

std::vector<Router::Segment> Router::compile(std::string_view pattern) {
  assert(!pattern.empty() && pattern[0] == '/');
  std::vector<Segment> out;
  if (pattern.size() <= 1) return out;
  std::string_view rest = pattern.substr(1);
  for (;;) {
    const auto slash = rest.find('/');
    const std::string_view piece = rest.substr(0, slash);
    if (!piece.empty() && piece[0] == ':') {
      assert(piece.size() > 1 && "a route parameter needs a name");
      out.push_back({std::string(piece.substr(1)), true});
    } else {
      out.push_back({std::string(piece), false});
    }
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  return out;
}

bool Router::fits(const std::vector<Segment>& pattern, const std::vector<std::string>& segments) {
  if (pattern.size() != segments.size()) return false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i].param ? segments[i].empty() : pattern[i].text != segments[i]) return false;
  }
  return true;
}

Router& Router::add(std::string method, std::string pattern, Handler handler, Execution execution) {
  assert(std::none_of(routes_.begin(), routes_.end(),
                      [&](const Route& r) { return r.method == method && r.pattern == pattern; }) &&
         "route added twice");
  compiled_.push_back(compile(pattern));
  routes_.push_back({std::move(method), std::move(pattern), std::move(handler), execution});
  return *this;
}

RouteMatch Router::match(std::string_view method, const std::vector<std::string>& segments) const {
  RouteMatch out;
  std::size_t best = routes_.size();
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    if (!fits(compiled_[i], segments)) continue;
    if (routes_[i].method != method) {
      if (std::find(out.allowed.begin(), out.allowed.end(), routes_[i].method) ==
          out.allowed.end()) {
        out.allowed.push_back(routes_[i].method);
      }
      continue;
    }
    if (best == routes_.size()) {
      best = i;
      continue;
    }
    // The more specific pattern: a literal where the other has a parameter, first from the left.
    const auto& a = compiled_[i];
    const auto& b = compiled_[best];
    for (std::size_t k = 0; k < a.size(); ++k) {
      if (a[k].param != b[k].param) {
        if (!a[k].param) best = i;
        break;
      }
    }
  }
  if (best == routes_.size()) return out;
  out.allowed.clear();
  out.route = &routes_[best];
  const auto& pattern = compiled_[best];
  for (std::size_t k = 0; k < pattern.size(); ++k) {
    if (pattern[k].param) out.params.emplace_back(pattern[k].text, segments[k]);
  }
  return out;
}

}  // namespace hi::http
