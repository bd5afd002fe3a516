-- An Idempotency-Key belongs to one user of one tenant (CONTRACTS): two users of a tenant may
-- pick the same key without one's write being taken for the other's repeat. The outbox's
-- unique key follows the API's records, (tenant_id, user_id, idem_key).
ALTER TABLE event_outbox DROP CONSTRAINT event_outbox_idempotency;
ALTER TABLE event_outbox
  ADD CONSTRAINT event_outbox_idempotency UNIQUE (tenant_id, user_id, idempotency_key);

-- The outbox backlog of the health check: events committed but not yet on the bus. Poll mode
-- marks rows processed; CDC mode never does, so there the backlog is the rows created after the
-- newest transaction the relay confirmed (`confirmed_commit_at` of its status; NULL: it has
-- confirmed nothing yet, or polls). Aggregates only, for hashinsight_app. Both modes count by
-- created_at through event_outbox_created_at, made in 006.

CREATE FUNCTION hi_outbox_backlog(relayed_through timestamptz, OUT backlog bigint,
                                  OUT oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT count(*), min(o.created_at)
    FROM public.event_outbox o
   WHERE CASE WHEN relayed_through IS NULL THEN NOT o.processed
              ELSE o.created_at > relayed_through END;
$$;
ALTER FUNCTION hi_outbox_backlog(timestamptz) OWNER TO hashinsight_stats;
REVOKE ALL ON FUNCTION hi_outbox_backlog(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hi_outbox_backlog(timestamptz) TO hashinsight_app, hashinsight_relay;
