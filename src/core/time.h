// Time helpers. All times are UTC; wall-clock instants travel as microseconds since the Unix epoch.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace hi {

// Wall clock, microseconds since 1970-01-01T00:00:00Z.
std::int64_t unix_now_us();

// Monotonic clock in nanoseconds, for measuring durations.
std::int64_t mono_now_ns();

// "2026-11-22T10:00:00.123456Z"
std::string format_rfc3339_us(std::int64_t unix_us);

// Parses RFC 3339 with optional fraction and a Z or +hh:mm offset, and PostgreSQL's
// "2026-11-22 10:00:00.123456+00" text form.
Result<std::int64_t> parse_rfc3339_us(std::string_view text);

// An injectable clock for code that tests need to drive.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t unix_us() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::int64_t unix_us() const override { return unix_now_us(); }
};

}  // namespace hi
