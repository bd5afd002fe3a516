#include "pg/lsn.h"

#include <charconv>

namespace hi::pg {

namespace {

constexpr std::size_t kMaxHalfDigits = 8;  // each half of "X/Y" is a 32-bit number

void append_hex(std::string& out, std::uint32_t v) {
  char buf[kMaxHalfDigits];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, 16);
  (void)ec;  // 8 chars always fit a uint32_t in hex
  for (char* p = buf; p != end; ++p) {
    out += (*p >= 'a' && *p <= 'f') ? static_cast<char>(*p - 'a' + 'A') : *p;
  }
}

// Parses one half: 1..8 hex digits, the whole of `s`.
bool parse_half(std::string_view s, std::uint32_t& out) {
  if (s.empty() || s.size() > kMaxHalfDigits) return false;
  // from_chars accepts neither a sign nor "0x" with base 16, which is what we want.
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, 16);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

std::string Lsn::to_string() const {
  std::string out;
  out.reserve(2 * kMaxHalfDigits + 1);
  append_hex(out, static_cast<std::uint32_t>(value >> 32));
  out += '/';
  append_hex(out, static_cast<std::uint32_t>(value));
  return out;
}

Result<Lsn> Lsn::parse(std::string_view text) {
  std::size_t slash = text.find('/');
  std::uint32_t hi = 0;
  std::uint32_t lo = 0;
  if (slash == std::string_view::npos || !parse_half(text.substr(0, slash), hi) ||
      !parse_half(text.substr(slash + 1), lo)) {
    std::string msg = "lsn: invalid \"";
    msg += text;
    msg += "\": expected X/Y with 1 to 8 hex digits each";
    return invalid_argument(std::move(msg));
  }
  return Lsn{(static_cast<std::uint64_t>(hi) << 32) | lo};
}

}  // namespace hi::pg
