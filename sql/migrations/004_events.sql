-- The transactional outbox, the consumers' inbox and dead-letter queue, API idempotency
-- records and the audit log.

-- One event per business write, inserted in the same transaction (seed 003's DDL plus
-- tenant_id, seq and processed_at). The relay reads inserts from the WAL; `processed` is used
-- only by the polling fallback.
CREATE TABLE event_outbox (
  id               text PRIMARY KEY,                 -- UUIDv7: the event id end to end
  tenant_id        bigint NOT NULL,
  kind             text NOT NULL,                    -- 'miner.added'; prefix routes the topic
  user_id          text NOT NULL,                    -- message key
  entity_id        text,
  payload          jsonb NOT NULL,
  idempotency_key  text,
  seq              bigint NOT NULL,                  -- per-user monotonic, assigned in the tx
  created_at       timestamptz NOT NULL DEFAULT now(),
  processed        boolean NOT NULL DEFAULT false,
  processed_at     timestamptz,
  CONSTRAINT event_outbox_idempotency UNIQUE (tenant_id, idempotency_key),
  CONSTRAINT event_outbox_kind_shape CHECK (kind ~ '^[a-z0-9_]+\.[a-z0-9_.]+$')
);
COMMENT ON TABLE event_outbox IS 'transactional outbox: written with the business change, relayed from the WAL';
COMMENT ON COLUMN event_outbox.seq IS 'per-user monotonic sequence (next_user_seq) returned by the API';
CREATE INDEX event_outbox_unprocessed ON event_outbox (processed, created_at);
CREATE INDEX event_outbox_user ON event_outbox (user_id, created_at);

-- Per-user sequence: the row lock serializes writers of one user, so seq order is commit order.
CREATE TABLE user_event_seq (
  tenant_id  bigint NOT NULL,
  user_id    text NOT NULL,
  last_seq   bigint NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);

CREATE FUNCTION next_user_seq(p_tenant bigint, p_user text) RETURNS bigint
LANGUAGE sql AS $$
  INSERT INTO user_event_seq AS s (tenant_id, user_id, last_seq) VALUES (p_tenant, p_user, 1)
  ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seq = s.last_seq + 1
  RETURNING last_seq;
$$;

-- Polling fallback: writers NOTIFY only while a poller has switched it on, because NOTIFY
-- takes a global lock at commit that logical replication does not need.
CREATE TABLE relay_settings (
  name   text PRIMARY KEY,
  value  text NOT NULL
);
INSERT INTO relay_settings VALUES ('outbox_notify', 'off');

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT value FROM relay_settings WHERE name = 'outbox_notify') = 'on' THEN
    PERFORM pg_notify('hi_outbox', '');
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE consumer_inbox (
  consumer_name  text NOT NULL,
  event_id       text NOT NULL,
  tenant_id      bigint NOT NULL,
  processed_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_name, event_id)
);

CREATE TABLE event_dlq (
  id             bigserial PRIMARY KEY,
  event_id       text NOT NULL,
  consumer_name  text NOT NULL,
  topic          text NOT NULL,
  kind           text NOT NULL,
  tenant_id      bigint NOT NULL,
  user_id        text,
  envelope       jsonb NOT NULL,
  error          text NOT NULL,
  retry_count    integer NOT NULL,
  failed_at      timestamptz NOT NULL DEFAULT now(),
  replayed_at    timestamptz
);
CREATE INDEX ON event_dlq (failed_at) WHERE replayed_at IS NULL;
CREATE INDEX ON event_dlq (consumer_name, kind);

CREATE TABLE api_idempotency_records (
  tenant_id       bigint NOT NULL,
  user_id         bigint NOT NULL,
  idem_key        text NOT NULL,
  request_hash    text NOT NULL,
  state           text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
  response_status integer,
  response_body   jsonb,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
  PRIMARY KEY (tenant_id, user_id, idem_key)
);
CREATE INDEX ON api_idempotency_records (expires_at);

-- Who did what: one row per API write, in the write's transaction. Append-only for the app.
CREATE TABLE audit_logs (
  id          bigserial PRIMARY KEY,
  tenant_id   bigint NOT NULL,
  user_id     bigint,
  action      text NOT NULL,            -- 'miner.add'
  entity      text,
  entity_id   text,
  request_id  text,
  ip          inet,
  details     jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON audit_logs (tenant_id, created_at);

-- The relay's publication: outbox inserts only (updates and deletes of outbox rows publish
-- nothing). Table capture uses a publication of its own with every operation.
CREATE PUBLICATION hashinsight_outbox FOR TABLE event_outbox WITH (publish = 'insert');
