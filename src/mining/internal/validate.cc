#include "mining/internal/validate.h"

#include <charconv>
#include <cmath>

namespace hi::mining::internal {

std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  // Whole numbers below 1e15 in plain digits ("100000", not "1e+05"); others shortest round-trip.
  const auto res = std::abs(value) < 1e15 && value == std::floor(value)
                       ? std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed, 0)
                       : std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, res.ptr);
}

Status check_range(std::string_view field, double value, double lo, double hi) {
  if (std::isfinite(value) && value >= lo && value <= hi) return ok_status();
  std::string msg(field);
  msg += " must be between " + format_number(lo) + " and " + format_number(hi) + ", got " +
         format_number(value);
  return invalid_argument(std::move(msg));
}

Status check_positive(std::string_view field, double value, double hi) {
  if (std::isfinite(value) && value > 0 && value <= hi) return ok_status();
  std::string msg(field);
  msg +=
      " must be greater than 0 and at most " + format_number(hi) + ", got " + format_number(value);
  return invalid_argument(std::move(msg));
}

}  // namespace hi::mining::internal
