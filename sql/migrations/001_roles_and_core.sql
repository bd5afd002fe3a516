-- Roles, tenants, users and access control.
-- Run by the owner. Roles are cluster-wide, so they are created only when missing.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hashinsight_app') THEN
    CREATE ROLE hashinsight_app LOGIN NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hashinsight_relay') THEN
    CREATE ROLE hashinsight_relay LOGIN REPLICATION BYPASSRLS;
  END IF;
  -- Owns the SECURITY DEFINER functions that return cross-tenant aggregates (never rows).
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hashinsight_stats') THEN
    CREATE ROLE hashinsight_stats NOLOGIN BYPASSRLS;
  END IF;
END
$$;

-- The owner acts as the app role (SET ROLE) in the API and workers.
DO $$
BEGIN
  EXECUTE format('GRANT hashinsight_app TO %I', current_user);
  EXECUTE format('GRANT hashinsight_relay TO %I', current_user);
END
$$;

GRANT USAGE ON SCHEMA public TO hashinsight_app, hashinsight_relay, hashinsight_stats;

CREATE TABLE tenants (
  id          bigint PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id                          bigint PRIMARY KEY,
  tenant_id                   bigint NOT NULL REFERENCES tenants(id),
  email                       text NOT NULL,
  display_name                text NOT NULL,
  electricity_price_usd_kwh   numeric(10,5) NOT NULL DEFAULT 0.06
                              CHECK (electricity_price_usd_kwh >= 0 AND electricity_price_usd_kwh < 10),
  created_at                  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, email)
);
CREATE INDEX ON users (tenant_id);

-- Roles and permissions are global definitions; the assignment to users is per tenant.
CREATE TABLE roles (
  id          integer PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  description text NOT NULL DEFAULT ''
);

CREATE TABLE permissions (
  id          integer PRIMARY KEY,
  scope       text NOT NULL UNIQUE,          -- a JWT scope, e.g. miners:write
  description text NOT NULL DEFAULT ''
);

CREATE TABLE role_permissions (
  role_id       integer NOT NULL REFERENCES roles(id),
  permission_id integer NOT NULL REFERENCES permissions(id),
  PRIMARY KEY (role_id, permission_id)
);

CREATE TABLE user_roles (
  tenant_id  bigint NOT NULL REFERENCES tenants(id),
  user_id    bigint NOT NULL REFERENCES users(id),
  role_id    integer NOT NULL REFERENCES roles(id),
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id, role_id)
);

CREATE TABLE subscription_plans (
  id                  integer PRIMARY KEY,
  name                text NOT NULL UNIQUE,
  max_miners          integer,                 -- units (sum of quantities); NULL = unlimited
  requests_per_minute integer,                 -- NULL = unlimited
  price_usd_month     numeric(10,2) NOT NULL DEFAULT 0
);

CREATE TABLE user_subscriptions (
  tenant_id  bigint NOT NULL REFERENCES tenants(id),
  user_id    bigint NOT NULL REFERENCES users(id),
  plan_id    integer NOT NULL REFERENCES subscription_plans(id),
  started_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  PRIMARY KEY (tenant_id, user_id)
);
