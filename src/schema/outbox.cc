#include "schema/outbox.h"

#include "core/ids.h"

namespace hi::schema {

const char* const kAppendEventSql =
    "INSERT INTO event_outbox (id, tenant_id, kind, user_id, entity_id, payload, "
    "idempotency_key, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, next_user_seq($2, $4)) "
    "RETURNING id, seq";

Result<EventRef> append_event(pg::Connection& conn, const NewEvent& e) {
  const std::string id = e.id.value_or(uuid_v7());
  auto r = conn.exec(kAppendEventSql, {id, e.tenant_id, e.kind, e.user_id, e.entity_id, e.payload,
                                       e.idempotency_key});
  if (!r) return r.error().wrap("append event " + e.kind);
  return EventRef{std::string(r->text(0, 0)), r->int64(0, 1)};
}

}  // namespace hi::schema
