-- Time series, partitioned by UTC day with PostgreSQL declarative partitioning
-- (TimescaleDB is not packaged for Debian 12). ensure_daily_partitions() creates the
-- partitions for coming days; `migrate` and the running stack call it, so inserts for
-- today and the next two weeks always find their partition. A DEFAULT partition catches
-- anything outside the maintained window instead of failing the write.

CREATE TABLE network_snapshots (
  day                    date NOT NULL,
  taken_at               timestamptz NOT NULL,
  btc_price_usd          double precision NOT NULL CHECK (btc_price_usd > 0),
  difficulty             double precision NOT NULL CHECK (difficulty > 0),
  network_hashrate_ehs   double precision NOT NULL CHECK (network_hashrate_ehs > 0),
  block_reward_btc       double precision NOT NULL DEFAULT 3.125,
  fees_btc_per_block     double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (taken_at)
) PARTITION BY RANGE (taken_at);
CREATE TABLE network_snapshots_default PARTITION OF network_snapshots DEFAULT;
CREATE INDEX ON network_snapshots (day);

CREATE TABLE miner_telemetry (
  tenant_id     bigint NOT NULL,
  miner_id      bigint NOT NULL,
  ts            timestamptz NOT NULL,
  hashrate_ths  double precision,
  power_w       double precision,
  temperature_c double precision,
  status        text,
  PRIMARY KEY (tenant_id, miner_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE miner_telemetry_default PARTITION OF miner_telemetry DEFAULT;

-- Price and difficulty forecasts are global rows of a tenant (user_id NULL); projected profit
-- is per user. `model` names the method, e.g. 'arima(1,1,1)' or 'arima(1,1,1) on log'.
CREATE TABLE forecast_daily (
  tenant_id   bigint NOT NULL,
  user_id     bigint,
  metric      text NOT NULL,
  day         date NOT NULL,
  value       double precision NOT NULL,
  lower_95    double precision,
  upper_95    double precision,
  model       text NOT NULL,
  fitted_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (day);
CREATE TABLE forecast_daily_default PARTITION OF forecast_daily DEFAULT;
CREATE UNIQUE INDEX forecast_daily_key ON forecast_daily (tenant_id, COALESCE(user_id, 0), metric, day);

CREATE FUNCTION ensure_daily_partitions(parent regclass, first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  d date := first_day;
  created integer := 0;
  part text;
  is_date boolean;
BEGIN
  SELECT format_type(a.atttypid, a.atttypmod) = 'date' INTO is_date
    FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
   WHERE p.partrelid = parent;
  WHILE d <= last_day LOOP
    part := format('%s_p%s', parent::text, to_char(d, 'YYYYMMDD'));
    IF to_regclass(part) IS NULL THEN
      BEGIN
        IF is_date THEN
          EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                         part, parent, d, d + 1);
        ELSE
          EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                         part, parent, d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
        END IF;
        created := created + 1;
      EXCEPTION WHEN check_violation OR invalid_object_definition THEN
        -- rows of that day already sit in the DEFAULT partition; leave them there
        RAISE NOTICE 'partition % not created: %', part, SQLERRM;
      END;
    END IF;
    d := d + 1;
  END LOOP;
  RETURN created;
END
$$;

CREATE FUNCTION ensure_all_partitions(days_back integer DEFAULT 100, days_ahead integer DEFAULT 14)
RETURNS integer LANGUAGE sql AS $$
  SELECT ensure_daily_partitions('network_snapshots', (now() AT TIME ZONE 'UTC')::date - days_back,
                                 (now() AT TIME ZONE 'UTC')::date + days_ahead)
       + ensure_daily_partitions('miner_telemetry', (now() AT TIME ZONE 'UTC')::date - 7,
                                 (now() AT TIME ZONE 'UTC')::date + days_ahead)
       + ensure_daily_partitions('forecast_daily', (now() AT TIME ZONE 'UTC')::date - days_back,
                                 (now() AT TIME ZONE 'UTC')::date + days_ahead + 7);
$$;

SELECT ensure_all_partitions();
