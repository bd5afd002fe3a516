#include "pg/array.h"

#include <cstdint>
#include <cstdio>

namespace hi::pg {

void ArrayLiteral::add(std::string_view element) {
  if (out_.size() > 1) out_ += ',';
  out_ += '"';
  for (char c : element) {
    if (c == '"' || c == '\\') out_ += '\\';
    out_ += c;
  }
  out_ += '"';
}

void ArrayLiteral::add_null() {
  if (out_.size() > 1) out_ += ',';
  out_ += "NULL";
}

void ArrayLiteral::add(std::int64_t element) { add(std::string_view(std::to_string(element))); }

void ArrayLiteral::add(double element) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", element);
  add(std::string_view(buf, static_cast<std::size_t>(n)));
}

}  // namespace hi::pg
