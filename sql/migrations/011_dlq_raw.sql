-- A parked message whose key, value or a header is not text PostgreSQL can store (bytes that
-- are not UTF-8, a NUL, a JSON value jsonb rejects) keeps its exact bytes here, base64-encoded:
-- {"key": b64, "value": b64, "headers": [[b64 name, b64 value], ...]}. The typed columns then
-- hold an escaped rendering for people; `hashinsight dlq replay` re-publishes these bytes.
ALTER TABLE event_dlq ADD COLUMN raw jsonb;
