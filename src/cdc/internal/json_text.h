// Fast JSON text building for the relay's hot path (no DOM: the envelope is appended directly).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/strings.h"

namespace hi::cdc::internal {

using hi::append_json_string;

// PostgreSQL timestamptz text in UTC ("2026-11-22 10:00:00.5+00") -> RFC 3339 with microseconds
// ("2026-11-22T10:00:00.500000Z"). Other offsets are passed through with 'T' and padded fraction.
inline std::string pg_timestamp_to_rfc3339(std::string_view ts) {
  if (ts.size() < 19) return std::string(ts);
  std::string out(ts.substr(0, 19));
  out[10] = 'T';
  std::size_t pos = 19;
  std::string frac;
  if (pos < ts.size() && ts[pos] == '.') {
    ++pos;
    while (pos < ts.size() && ts[pos] >= '0' && ts[pos] <= '9') frac += ts[pos++];
  }
  frac.resize(6, '0');
  out += '.';
  out += frac;
  const std::string_view zone = ts.substr(pos);
  if (zone.empty() || zone == "+00" || zone == "+00:00" || zone == "Z") {
    out += 'Z';
  } else {
    out += zone;
    if (zone.size() == 3) out += ":00";
  }
  return out;
}

}  // namespace hi::cdc::internal
