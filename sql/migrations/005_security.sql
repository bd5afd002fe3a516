-- Row-level security on every tenant-owned table, grants per role, and the aggregate-only
-- functions the health endpoint uses across tenants.

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['users', 'user_roles', 'user_subscriptions', 'user_miners', 'miners',
                           'inventory', 'user_portfolio', 'treasury_trades', 'crm_customers',
                           'ops_schedule', 'miner_telemetry', 'forecast_daily', 'event_outbox',
                           'user_event_seq', 'consumer_inbox', 'event_dlq',
                           'api_idempotency_records', 'audit_logs']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    -- NULLIF: after a SET LOCAL ends, the setting reads '' rather than NULL.
    EXECUTE format('CREATE POLICY tenant_isolation ON %I USING '
                   '(tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint) '
                   'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint)', t);
  END LOOP;
END
$$;

-- Global reference data: readable by the app.
GRANT SELECT ON tenants, roles, permissions, role_permissions, subscription_plans, miner_models,
                network_snapshots, relay_settings TO hashinsight_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON users, user_roles, user_subscriptions, user_miners, miners,
  inventory, user_portfolio, treasury_trades, crm_customers, ops_schedule, miner_telemetry,
  forecast_daily, event_outbox, user_event_seq, consumer_inbox, event_dlq, api_idempotency_records
  TO hashinsight_app;
GRANT SELECT, INSERT ON audit_logs TO hashinsight_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO hashinsight_app;
GRANT EXECUTE ON FUNCTION next_user_seq(bigint, text) TO hashinsight_app;

-- The relay: the outbox only (poll mode marks rows processed; retention deletes them).
GRANT SELECT, UPDATE, DELETE ON event_outbox TO hashinsight_relay;
GRANT SELECT, UPDATE ON relay_settings TO hashinsight_relay;

-- Cross-tenant aggregates for /health; never rows.
GRANT SELECT ON event_outbox, event_dlq, consumer_inbox, forecast_daily TO hashinsight_stats;

CREATE FUNCTION hi_outbox_stats(OUT unprocessed bigint, OUT oldest_unprocessed timestamptz,
                                OUT total bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT count(*) FILTER (WHERE NOT processed), min(created_at) FILTER (WHERE NOT processed),
         count(*)
    FROM event_outbox;
$$;

CREATE FUNCTION hi_dlq_stats()
RETURNS TABLE (consumer_name text, kind text, parked bigint, replayed bigint,
               oldest timestamptz, newest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT consumer_name, kind, count(*) FILTER (WHERE replayed_at IS NULL),
         count(*) FILTER (WHERE replayed_at IS NOT NULL), min(failed_at), max(failed_at)
    FROM event_dlq GROUP BY consumer_name, kind ORDER BY consumer_name, kind;
$$;

CREATE FUNCTION hi_forecast_freshness_seconds() RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT extract(epoch FROM now() - max(fitted_at))::double precision FROM forecast_daily;
$$;

ALTER FUNCTION hi_outbox_stats() OWNER TO hashinsight_stats;
ALTER FUNCTION hi_dlq_stats() OWNER TO hashinsight_stats;
ALTER FUNCTION hi_forecast_freshness_seconds() OWNER TO hashinsight_stats;
REVOKE ALL ON FUNCTION hi_outbox_stats(), hi_dlq_stats(), hi_forecast_freshness_seconds() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hi_outbox_stats(), hi_dlq_stats(), hi_forecast_freshness_seconds()
  TO hashinsight_app, hashinsight_relay;
