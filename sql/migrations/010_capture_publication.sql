-- The publication of captured tables exists from the start, empty: pgoutput reads publications
-- as of the WAL position it decodes, so a publication created after a slot would make the slot
-- fail on older WAL ("publication does not exist"). The relay adds and removes tables with
-- ALTER PUBLICATION ... SET TABLE, which is safe at any time.
CREATE PUBLICATION hashinsight_outbox_capture;
