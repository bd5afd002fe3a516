// Lsn: a PostgreSQL write-ahead-log position (XLogRecPtr).
//
// A strong type over the 64-bit byte position in the WAL, so that an LSN is never mixed up with an
// xid, an oid or a byte count. Ordered like the WAL itself: a later record has a greater LSN.
// Lsn{0} is PostgreSQL's InvalidXLogRecPtr ("0/0").
//
//   Result<Lsn> lsn = Lsn::parse("0/16B3748");
//   if (!lsn) return lsn.error();
//   log("confirmed", lsn->to_string());   // "0/16B3748"
//
// A plain value: cheap to copy, safe to share between threads.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace hi::pg {

struct Lsn {
  std::uint64_t value = 0;

  auto operator<=>(const Lsn&) const = default;

  // The text form PostgreSQL prints (pg_lsn): the high and low 32 bits in upper-case hex without
  // leading zeros, separated by a slash: Lsn{0x16B3748}.to_string() == "0/16B3748".
  std::string to_string() const;

  // Parses the pg_lsn text form "X/Y", each half 1 to 8 hex digits of either case, nothing else
  // (no sign, no spaces). Returns kInvalidArgument naming the input otherwise.
  static Result<Lsn> parse(std::string_view text);
};

}  // namespace hi::pg
