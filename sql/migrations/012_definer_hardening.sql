-- SECURITY DEFINER functions run with their owner's rights: a caller must not be able to put
-- its own objects in front of ours. Each gets search_path = pg_catalog, public, pg_temp (the
-- caller's temporary schema last, where it cannot shadow anything) and names its tables with
-- their schema.
CREATE OR REPLACE FUNCTION hi_outbox_stats(OUT unprocessed bigint,
                                           OUT oldest_unprocessed timestamptz, OUT total bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT count(*) FILTER (WHERE NOT o.processed), min(o.created_at) FILTER (WHERE NOT o.processed),
         count(*)
    FROM public.event_outbox o;
$$;

CREATE OR REPLACE FUNCTION hi_dlq_stats()
RETURNS TABLE (consumer_name text, kind text, parked bigint, replayed bigint,
               oldest timestamptz, newest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT d.consumer_name, d.kind, count(*) FILTER (WHERE d.replayed_at IS NULL),
         count(*) FILTER (WHERE d.replayed_at IS NOT NULL), min(d.failed_at), max(d.failed_at)
    FROM public.event_dlq d GROUP BY d.consumer_name, d.kind ORDER BY d.consumer_name, d.kind;
$$;

CREATE OR REPLACE FUNCTION hi_forecast_freshness_seconds() RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT extract(epoch FROM now() - max(f.fitted_at))::double precision
    FROM public.forecast_daily f;
$$;

-- The tenant of a captured row, for the audit worker (which runs without a tenant while it
-- finds out). A session scoped to a tenant learns at most its own id: another tenant's row
-- answers NULL, as an unknown row does.
CREATE OR REPLACE FUNCTION hi_audit_tenant_of(p_table text, p_key jsonb) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT l.tenant_id FROM public.change_audit_log l
   WHERE l.source_table = p_table AND l.row_key = p_key AND l.tenant_id <> 0
     AND (NULLIF(current_setting('app.tenant_id', true), '') IS NULL
          OR l.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint)
   ORDER BY l.id DESC LIMIT 1;
$$;
