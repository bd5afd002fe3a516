-- The mining domain: models, holdings, machines, inventory, derived portfolio, trades, CRM.

CREATE TABLE miner_models (
  id               integer PRIMARY KEY,
  slug             text NOT NULL UNIQUE,
  manufacturer     text NOT NULL,
  name             text NOT NULL,
  hashrate_ths     numeric(10,2) NOT NULL CHECK (hashrate_ths > 0),
  power_w          numeric(10,1) NOT NULL CHECK (power_w > 0),
  efficiency_j_th  numeric(10,2) NOT NULL CHECK (efficiency_j_th > 0),
  release_year     integer NOT NULL,
  price_usd        numeric(12,2)
);

-- A user's holdings: N units of a model (the portfolio is computed from these).
CREATE TABLE user_miners (
  id                         bigserial PRIMARY KEY,
  tenant_id                  bigint NOT NULL REFERENCES tenants(id),
  user_id                    bigint NOT NULL REFERENCES users(id),
  model_id                   integer NOT NULL REFERENCES miner_models(id),
  quantity                   integer NOT NULL CHECK (quantity > 0),
  electricity_price_usd_kwh  numeric(10,5) CHECK (electricity_price_usd_kwh >= 0),
  status                     text NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'inactive', 'maintenance', 'sold')),
  created_at                 timestamptz NOT NULL DEFAULT now(),
  updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON user_miners (tenant_id, user_id);

-- Individual physical machines (the hosting side). Credentials are envelope-encrypted.
CREATE TABLE miners (
  id              bigserial PRIMARY KEY,
  tenant_id       bigint NOT NULL REFERENCES tenants(id),
  user_id         bigint REFERENCES users(id),
  model_id        integer NOT NULL REFERENCES miner_models(id),
  serial          text NOT NULL,
  site            text,
  credentials_enc bytea,
  key_version     integer,
  status          text NOT NULL DEFAULT 'online'
                  CHECK (status IN ('online', 'offline', 'maintenance', 'curtailed', 'retired')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, serial)
);

CREATE TABLE inventory (
  id          bigserial PRIMARY KEY,
  tenant_id   bigint NOT NULL REFERENCES tenants(id),
  model_id    integer NOT NULL REFERENCES miner_models(id),
  location    text NOT NULL,
  quantity    integer NOT NULL CHECK (quantity >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, model_id, location)
);

-- The derived portfolio: written only by the portfolio consumer.
CREATE TABLE user_portfolio (
  tenant_id             bigint NOT NULL REFERENCES tenants(id),
  user_id               bigint NOT NULL REFERENCES users(id),
  units                 integer NOT NULL DEFAULT 0,
  hashrate_ths          double precision NOT NULL DEFAULT 0,
  power_kw              double precision NOT NULL DEFAULT 0,
  revenue_btc_day       double precision NOT NULL DEFAULT 0,
  revenue_usd_day       double precision NOT NULL DEFAULT 0,
  cost_usd_day          double precision NOT NULL DEFAULT 0,
  profit_usd_day        double precision NOT NULL DEFAULT 0,
  breakdown             jsonb NOT NULL DEFAULT '[]',
  computed_at           timestamptz NOT NULL DEFAULT now(),
  fencing_token         bigint NOT NULL DEFAULT 0,   -- of the lock holder that wrote this row
  source_event_id       text,
  source_lsn            text,
  through_seq           bigint NOT NULL DEFAULT 0,   -- highest event seq included
  events_applied        bigint NOT NULL DEFAULT 0,   -- effects applied (exactly-once check)
  PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE treasury_trades (
  id           bigserial PRIMARY KEY,
  tenant_id    bigint NOT NULL REFERENCES tenants(id),
  user_id      bigint NOT NULL REFERENCES users(id),
  side         text NOT NULL CHECK (side IN ('buy', 'sell')),
  amount_btc   numeric(20,8) NOT NULL CHECK (amount_btc > 0),
  price_usd    numeric(14,2) NOT NULL CHECK (price_usd > 0),
  executed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON treasury_trades (tenant_id, user_id, executed_at);

CREATE TABLE crm_customers (
  id          bigserial PRIMARY KEY,
  tenant_id   bigint NOT NULL REFERENCES tenants(id),
  name        text NOT NULL,
  email       text,
  created_by  bigint REFERENCES users(id),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops_schedule (
  id          bigserial PRIMARY KEY,
  tenant_id   bigint NOT NULL REFERENCES tenants(id),
  user_id     bigint NOT NULL REFERENCES users(id),
  day         date NOT NULL,
  schedule    jsonb NOT NULL,
  profit_usd  double precision,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, user_id, day)
);
