#include "pg/array.h"

#include <cstdint>
#include <cstdio>

namespace hi::pg {

void ArrayLiteral::add(std::string_view element) {
  if (out_.size() > 1) out_ += ',';
  out_ += '"';
  // Copied a run at a time between the characters to escape (elements can be kilobytes of JSON).
  while (!element.empty()) {
    const std::size_t special = element.find_first_of("\"\\");
    out_.append(element.substr(0, special));
    if (special == std::string_view::npos) break;
    out_ += '\\';
    out_ += element[special];
    element.remove_prefix(special + 1);
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
