-- Incremental snapshots of captured tables (`hashinsight snapshot`). A request is a row the
-- owner inserts; the table is in the relay's outbox publication (inserts only), so the relay
-- learns of a request from the WAL and the request survives restarts. The relay records its
-- progress here: last_key (the key of the last row of the last chunk the bus acknowledged), so a
-- crash resumes from the next chunk.
CREATE TABLE relay_snapshots (
  id             bigserial PRIMARY KEY,
  table_name     text NOT NULL,                        -- 'schema.table', a captured table
  chunk_size     integer NOT NULL DEFAULT 10000 CHECK (chunk_size BETWEEN 1 AND 1000000),
  where_clause   text,                                 -- run with the relay's rights, read-only
  state          text NOT NULL DEFAULT 'requested'
                   CHECK (state IN ('requested', 'running', 'done', 'cancelled', 'failed')),
  last_key       jsonb,                                -- {"<pk column>": "<text value>", ...}
  rows_done      bigint NOT NULL DEFAULT 0,
  rows_estimated bigint,
  chunks_done    integer NOT NULL DEFAULT 0,
  keys_excluded  bigint NOT NULL DEFAULT 0,            -- rows left to the stream (changed in a window)
  requested_at   timestamptz NOT NULL DEFAULT now(),
  started_at     timestamptz,
  updated_at     timestamptz,
  finished_at    timestamptz,
  error          text
);
CREATE INDEX relay_snapshots_open ON relay_snapshots (id) WHERE state IN ('requested', 'running');

ALTER PUBLICATION hashinsight_outbox ADD TABLE relay_snapshots;

-- The relay reads requests and records progress; only the owner inserts.
GRANT SELECT, UPDATE ON relay_snapshots TO hashinsight_relay;
GRANT SELECT ON relay_snapshots TO hashinsight_stats;

-- A snapshot row reaches the audit worker as op "r": recorded as operation 'snapshot'.
ALTER TABLE change_audit_log DROP CONSTRAINT change_audit_log_operation_check;
ALTER TABLE change_audit_log ADD CONSTRAINT change_audit_log_operation_check
  CHECK (operation IN ('insert', 'update', 'delete', 'truncate', 'snapshot'));
