-- pgbench script for `hashinsight bench api`: per transaction, the one outbox row that
-- POST /api/miners commits beside its user_miners and audit_logs rows (schema::kAppendEventSql,
-- the per-user seq bumped in the same statement), for a random bench user, as the owner in the user's
-- tenant. The id is time-ordered (the transaction id, 36 characters) like the API's UUIDv7s.
-- Variables (-D): first = the first bench user id, users = how many.
--
--   pgbench -n -M prepared -c 8 -j 2 -T 10 -D first=1000000 -D users=100 -f outbox_insert.sql URL
\set u :first + random(0, :users - 1)
\set tenant 1 + (:u - :first) % 2
BEGIN;
SELECT set_config('app.tenant_id', :tenant::text, true);
WITH s AS (INSERT INTO user_event_seq AS s (tenant_id, user_id, last_seq)
           VALUES (:tenant, :u::text, 1) ON CONFLICT (tenant_id, user_id)
           DO UPDATE SET last_seq = s.last_seq + 1 RETURNING last_seq)
INSERT INTO event_outbox (id, tenant_id, kind, user_id, entity_id, payload, idempotency_key, seq)
  SELECT lpad(txid_current()::text, 36, '0'), :tenant, 'miner.added', :u::text, NULL,
         '{"model_id": 1, "quantity": 1}', NULL, s.last_seq FROM s;
COMMIT;
