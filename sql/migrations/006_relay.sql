-- What the relay needs beyond the outbox itself: its own rows in relay_settings (slot backfill
-- markers) and an index for outbox retention by age.
GRANT INSERT ON relay_settings TO hashinsight_relay;
CREATE INDEX event_outbox_created_at ON event_outbox (created_at);
