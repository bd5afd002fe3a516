-- The relay logs in as hashinsight_relay: it records the progress of its first backfill in
-- relay_settings (a row per slot, inserted when the slot is created).
GRANT INSERT ON relay_settings TO hashinsight_relay;
