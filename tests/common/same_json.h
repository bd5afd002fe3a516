// JSON values compared as a parser built them (the sink's change tests and fuzzer): the same
// types and values all the way down. nlohmann's == holds 1 (unsigned) and 1 (signed) equal, which
// is not what a test of two readings of the same text must accept.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>

namespace hi::test {

inline bool same_json(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.type() != b.type()) return false;
  if (a.is_object() || a.is_array()) {
    if (a.size() != b.size()) return false;
    auto j = b.begin();
    for (auto i = a.begin(); i != a.end(); ++i, ++j) {
      if (a.is_object() && i.key() != j.key()) return false;
      if (!same_json(i.value(), j.value())) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace hi::test
