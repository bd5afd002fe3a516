#include "core/time.h"

#include <cstdio>
#include <ctime>

namespace hi {

std::int64_t unix_now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::int64_t mono_now_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string format_rfc3339_us(std::int64_t unix_us) {
  std::int64_t secs = unix_us / 1'000'000;
  std::int64_t frac = unix_us % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    --secs;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(frac));
  return buf;
}

Result<std::int64_t> parse_rfc3339_us(std::string_view text) {
  auto bad = [&] { return invalid_argument("not an RFC 3339 time: '" + std::string(text) + "'"); };
  if (text.size() < 19) return bad();
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (i >= text.size() || text[i] < '0' || text[i] > '9') return false;
      out = out * 10 + (text[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, s;
  if (!num(0, 4, y) || text[4] != '-' || !num(5, 2, mo) || text[7] != '-' || !num(8, 2, d) ||
      (text[10] != 'T' && text[10] != ' ' && text[10] != 't') || !num(11, 2, h) ||
      text[13] != ':' || !num(14, 2, mi) || text[16] != ':' || !num(17, 2, s)) {
    return bad();
  }
  std::size_t pos = 19;
  std::int64_t frac_us = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 6) frac_us = frac_us * 10 + (text[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return bad();
    for (int i = digits; i < 6; ++i) frac_us *= 10;
  }
  std::int64_t offset_s = 0;
  if (pos < text.size()) {
    const char c = text[pos];
    if (c == 'Z' || c == 'z') {
      ++pos;
    } else if (c == '+' || c == '-') {
      int oh = 0, om = 0;
      if (!num(pos + 1, 2, oh)) return bad();
      std::size_t next = pos + 3;
      if (next < text.size() && text[next] == ':') ++next;
      if (next < text.size()) {
        if (!num(next, 2, om)) return bad();
        next += 2;
      }
      offset_s = (oh * 3600 + om * 60) * (c == '+' ? 1 : -1);
      pos = next;
    } else {
      return bad();
    }
  }
  if (pos != text.size()) return bad();
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const std::int64_t secs = static_cast<std::int64_t>(timegm(&tm)) - offset_s;
  return secs * 1'000'000 + frac_us;
}

}  // namespace hi
