-- Secrets at rest (docs/secrets.md): every secret column holds one blob sealed by hi::vault
-- (a fresh AES-256-GCM data key per value, wrapped by a versioned master key that lives in
-- DIR/secrets/master_keys, never in the database), and `key_version` names the master key the
-- row's blobs are wrapped under, so `hashinsight keys rotate` finds the rows still below the
-- newest version. The blobs authenticate their record id ("miners:<id>:credentials",
-- "exchange_keys:<id>:key", "exchange_keys:<id>:secret"): a blob copied to another row or
-- column does not open.

-- Where a physical miner hashes; not secret. Its pool password is in credentials_enc.
ALTER TABLE miners ADD COLUMN pool_url text, ADD COLUMN pool_worker text;
-- A sealed value always says which master key wraps it, and a version never stands alone.
ALTER TABLE miners ADD CONSTRAINT miners_credentials_version
  CHECK ((credentials_enc IS NULL) = (key_version IS NULL) AND key_version > 0);

-- A user's API key on an exchange (treasury trading), one per exchange. key_last4 lets a user
-- tell keys apart without anything being decrypted.
CREATE TABLE exchange_keys (
  id          bigserial PRIMARY KEY,
  tenant_id   bigint NOT NULL REFERENCES tenants(id),
  user_id     bigint NOT NULL REFERENCES users(id),
  exchange    text NOT NULL CHECK (exchange ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
  key_enc     bytea NOT NULL,
  secret_enc  bytea NOT NULL,
  key_last4   text NOT NULL CHECK (char_length(key_last4) <= 4),
  key_version integer NOT NULL CHECK (key_version > 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, user_id, exchange)
);

-- Tenant isolation as on every tenant table (005_security.sql).
ALTER TABLE exchange_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE exchange_keys FORCE ROW LEVEL SECURITY;
-- NULLIF: after a SET LOCAL ends, the setting reads '' rather than NULL.
CREATE POLICY tenant_isolation ON exchange_keys
  USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint);

GRANT SELECT, INSERT, UPDATE, DELETE ON exchange_keys TO hashinsight_app;
GRANT USAGE ON SEQUENCE exchange_keys_id_seq TO hashinsight_app;
