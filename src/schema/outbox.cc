#include "schema/outbox.h"

#include "core/ids.h"

namespace hi::schema {

// The user's sequence row is bumped in the same statement (what the SQL function
// next_user_seq() does, without a function call that PostgreSQL parses and plans again on
// every write: an eighth of a write's time in the database).
const char* const kAppendEventSql =
    "WITH s AS (INSERT INTO user_event_seq AS s (tenant_id, user_id, last_seq) "
    "VALUES ($2::bigint, $4::text, 1) ON CONFLICT (tenant_id, user_id) "
    "DO UPDATE SET last_seq = s.last_seq + 1 RETURNING last_seq) "
    "INSERT INTO event_outbox (id, tenant_id, kind, user_id, entity_id, payload, "
    "idempotency_key, seq) SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, "
    "$6::jsonb, $7::text, s.last_seq FROM s RETURNING id, seq";

Result<EventRef> append_event(pg::Connection& conn, const NewEvent& e) {
  const std::string id = e.id.value_or(uuid_v7());
  auto r = conn.exec(kAppendEventSql, {id, e.tenant_id, e.kind, e.user_id, e.entity_id, e.payload,
                                       e.idempotency_key});
  if (!r) return r.error().wrap("append event " + e.kind);
  return EventRef{std::string(r->text(0, 0)), r->int64(0, 1)};
}

}  // namespace hi::schema
