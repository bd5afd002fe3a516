// Writing an event into the transactional outbox, inside the caller's transaction.
//
// The business write and its event commit together or not at all. The event's id is a UUIDv7
// (the id end to end: bus header, consumer inbox key); its `seq` is the user's next sequence
// number, assigned under a row lock so that one user's events are numbered in commit order.
//
//   pg::Transaction tx(conn);
//   tx.begin(tenant);
//   ... INSERT INTO user_miners ... ;
//   auto ev = schema::append_event(conn, {tenant, user, "miner.added", entity, payload, key});
//   tx.commit();
#pragma once

#include <optional>
#include <string>

#include "core/result.h"
#include "pg/connection.h"

namespace hi::schema {

struct NewEvent {
  std::string tenant_id;
  std::string user_id;
  std::string kind;  // "<prefix>.<verb>", e.g. "miner.added"
  std::optional<std::string> entity_id;
  std::string payload = "{}";  // a JSON object
  std::optional<std::string> idempotency_key;
  std::optional<std::string> id;  // default: a new UUIDv7
};

struct EventRef {
  std::string id;
  std::int64_t seq = 0;
};

// Must run inside a transaction whose app.tenant_id is `event.tenant_id`.
Result<EventRef> append_event(pg::Connection& conn, const NewEvent& event);

// The SQL of append_event, for pipelined batches: parameters $1 id, $2 tenant_id, $3 kind,
// $4 user_id, $5 entity_id, $6 payload, $7 idempotency_key; returns (id, seq).
extern const char* const kAppendEventSql;

}  // namespace hi::schema
