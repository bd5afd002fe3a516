-- What the consumers need beyond 004: the DLQ's replay inputs and duplicate guard, and the
-- audit worker's change log (what changed, from the relay's table capture; `audit_logs` records
-- who did what through the API).

-- A DLQ row keeps the message as it was on the bus so `dlq replay` can re-publish it unchanged:
-- its key and headers (the envelope is `envelope`). One parked row per (consumer, event): a
-- worker that crashed after parking an event and parks it again on redelivery adds nothing.
ALTER TABLE event_dlq ADD COLUMN message_key text;
ALTER TABLE event_dlq ADD COLUMN headers jsonb NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX event_dlq_parked_once ON event_dlq (consumer_name, event_id)
  WHERE replayed_at IS NULL;

-- The portfolio worker rewrites each user's row on every batch that touches the user: leave
-- room on each page so those updates stay HOT (no index insertions, less bloat).
ALTER TABLE user_portfolio SET (fillfactor = 50);

-- One row per captured change, written exactly once by `hashinsight worker audit`.
-- tenant_id is the changed row's tenant_id column; changes of global tables (no tenant_id
-- column) are recorded under tenant 0.
CREATE TABLE change_audit_log (
  id               bigserial PRIMARY KEY,
  tenant_id        bigint NOT NULL,
  event_id         text NOT NULL,              -- commit_lsn:ordinal, the change's id on the bus
  source_table     text NOT NULL,              -- 'public.user_miners'
  operation        text NOT NULL CHECK (operation IN ('insert', 'update', 'delete', 'truncate')),
  row_key          jsonb,                      -- replica identity columns
  before           jsonb,
  after            jsonb,
  changed_columns  text[] NOT NULL DEFAULT '{}',
  unchanged_columns text[] NOT NULL DEFAULT '{}', -- TOASTed values the update did not touch
  lsn              text NOT NULL,              -- commit LSN of the transaction
  xid              bigint,
  commit_ts        timestamptz,
  correlation_id   text,                       -- shared by every change of one transaction
  recorded_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, event_id)
);
CREATE INDEX change_audit_log_table_time ON change_audit_log (tenant_id, source_table, commit_ts);
CREATE INDEX change_audit_log_key ON change_audit_log USING gin (row_key jsonb_path_ops);

ALTER TABLE change_audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE change_audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON change_audit_log
  USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint);

-- Append-only for the app: the worker inserts, `audit query` reads.
GRANT SELECT, INSERT ON change_audit_log TO hashinsight_app;
GRANT USAGE ON SEQUENCE change_audit_log_id_seq TO hashinsight_app;

-- The tenant of a captured row whose change does not carry tenant_id (a delete's old image
-- holds only the key unless the table has REPLICA IDENTITY FULL): the tenant of the row's last
-- recorded change. Returns a tenant id, never rows.
CREATE INDEX change_audit_log_row ON change_audit_log (source_table, row_key);
CREATE FUNCTION hi_audit_tenant_of(p_table text, p_key jsonb) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT tenant_id FROM change_audit_log
   WHERE source_table = p_table AND row_key = p_key AND tenant_id <> 0
   ORDER BY id DESC LIMIT 1;
$$;
GRANT SELECT ON change_audit_log TO hashinsight_stats;
ALTER FUNCTION hi_audit_tenant_of(text, jsonb) OWNER TO hashinsight_stats;
REVOKE ALL ON FUNCTION hi_audit_tenant_of(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hi_audit_tenant_of(text, jsonb) TO hashinsight_app;
