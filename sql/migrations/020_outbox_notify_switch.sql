-- Every outbox insert paid for the polling fallback's wake-up, also under logical replication,
-- which never listens: a statement trigger in plpgsql that read relay_settings to find it was
-- off, about 40 us per insert statement (pg_stat_user_functions, `bench e2e` at 1,000
-- writes/s), a tenth of POST /api/miners' own statement. The trigger is now disabled until a
-- poller switches it on with hi_outbox_notify(true), and then it notifies without a lookup.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('hi_outbox', '');
  RETURN NULL;
END
$$;

-- The relay does not own the outbox, so it switches the trigger through its owner's rights. The
-- ALTER TABLE (a lock that waits for the inserts in flight) is made only when the state changes;
-- relay_settings keeps saying which it is, for people.
CREATE FUNCTION hi_outbox_notify(enabled boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  IF enabled IS DISTINCT FROM (SELECT t.tgenabled <> 'D' FROM pg_catalog.pg_trigger t
                                WHERE t.tgrelid = 'public.event_outbox'::regclass
                                  AND t.tgname = 'event_outbox_notify') THEN
    EXECUTE format('ALTER TABLE public.event_outbox %s TRIGGER event_outbox_notify',
                   CASE WHEN enabled THEN 'ENABLE' ELSE 'DISABLE' END);
  END IF;
  UPDATE public.relay_settings SET value = CASE WHEN enabled THEN 'on' ELSE 'off' END
   WHERE name = 'outbox_notify';
END
$$;
REVOKE ALL ON FUNCTION hi_outbox_notify(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hi_outbox_notify(boolean) TO hashinsight_relay;

-- As before this migration: on only where a poller had switched it on.
SELECT hi_outbox_notify((SELECT value = 'on' FROM relay_settings WHERE name = 'outbox_notify'));
