// What a consumer sees of a bus delivery: the fields the runtime needs to deduplicate, group
// and park it, read from the headers and the JSON value the relay wrote (cdc/router.h).
//
// Outbox events (topics events.*): id, kind and tenant_id from the headers (the envelope as a
// fallback), user_id from the key, seq and source.commit_lsn from the envelope.
// Table changes (topics cdc.<schema>.<table>): id = header `id` ("commit_lsn:ordinal"), kind =
// "cdc.<op>", tenant_id = the row's tenant_id column (0 for global tables), no user.
//
// A delivery that is not what the relay writes (a field of the wrong type, a non-object
// `source`, an id or user that is not text, a tenant that is not a bigint) is rejected with
// kInvalidArgument, never an exception: the runtime dead-letters it.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "bus/bus.h"
#include "core/result.h"

namespace hi::consume {

struct Event {
  std::string id;         // the event id end to end: inbox key, DLQ key, `id` header
  std::string kind;       // "miner.added"; "cdc.u" for a table change
  std::string tenant_id;  // decimal text; "0" for changes of global tables
  std::string user_id;    // decimal text; empty when the event has none
  std::int64_t seq = 0;   // per-user sequence (0 when absent)
  std::string lsn;        // source.commit_lsn ("0/16B3748"), may be empty
  const bus::Delivery* delivery = nullptr;  // the raw delivery; valid while the batch lives
  std::uint64_t xid = 0;  // source.xid (32 bits as the relay writes it); 0 when absent
};

// Parses a delivery of any topic (outbox envelope, Debezium-format payload, or table change).
// kInvalidArgument when the id or tenant cannot be determined: such a delivery is poison.
Result<Event> parse_event(const bus::Delivery& delivery);

// The value of one header, or "" when absent.
const std::string& header_value(const bus::Delivery& delivery, std::string_view name);

// True when `text` is a non-empty run of decimal digits whose value fits a PostgreSQL bigint
// (ids of tenants and users).
bool is_decimal_id(std::string_view text);

}  // namespace hi::consume
