// PostgreSQL array literals, for passing a list as one parameter:
//
//   conn.exec("SELECT ... WHERE id = ANY($1::bigint[])", {pg::array_literal(ids)});
//
// Every element is double-quoted and escaped, so any text is safe (commas, quotes, braces,
// backslashes, the word NULL) and the same literal casts to text[], bigint[], uuid[] or float8[].
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

namespace hi::pg {

class ArrayLiteral {
 public:
  void add(std::string_view element);
  // Numbers in their shortest exact text form (doubles round-trip: %.17g).
  void add(std::int64_t element);
  void add(double element);
  // SQL NULL (unquoted), for a text[] that carries missing values.
  void add_null();
  // "{...}"; "{}" when nothing was added.
  std::string str() const { return out_ + '}'; }

 private:
  std::string out_ = "{";
};

// The literal of every element of `items` (strings, string views or numbers).
template <typename Range>
std::string array_literal(const Range& items) {
  ArrayLiteral a;
  for (const auto& item : items) {
    if constexpr (std::integral<std::decay_t<decltype(item)>>) {
      a.add(static_cast<std::int64_t>(item));
    } else {
      a.add(item);
    }
  }
  return a.str();
}

}  // namespace hi::pg
