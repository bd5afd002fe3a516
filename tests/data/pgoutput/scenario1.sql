\set ON_ERROR_STOP 1
-- 1: insert with a NULL column
INSERT INTO accounts VALUES (1, 'alice', 10.50, true, NULL, '2024-05-01 12:00:00+00');
-- 2: TOAST-sized text (10240 chars of md5 hex: stays out of line)
INSERT INTO docs SELECT 1, 'big', string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 320) i;
-- 3: update without touching the toasted column (identity DEFAULT, key unchanged): body -> 'u'
UPDATE docs SET title = 'big v2' WHERE id = 1;
-- 4: key change under identity DEFAULT: 'K' old key + 'N'
UPDATE accounts SET id = 2, name = 'alice2' WHERE id = 1;
-- 5: custom enum column: Type message, identity FULL table
INSERT INTO moods VALUES (1, 'happy', '\x00ff10', '{"a": 1}');
-- 6: update under identity FULL: 'O' + 'N'
UPDATE moods SET feeling = 'ok' WHERE id = 1;
-- 7: transactional logical message inside a transaction
BEGIN;
SELECT pg_logical_emit_message(true, 'hi.tx', 'hello tx');
INSERT INTO accounts VALUES (3, 'bob', 0, false, 'second', '2024-05-02 00:00:00+00');
COMMIT;
-- 8: non-transactional message with binary content
SELECT pg_logical_emit_message(false, 'hi.nontx', '\x0001ff'::bytea);
-- 9: new column mid-stream -> new Relation message
ALTER TABLE accounts ADD COLUMN tier int DEFAULT 7;
INSERT INTO accounts VALUES (4, 'carol', 99.99, true, 'tiered', '2024-05-03 00:00:00+00', 2);
-- 10: delete under identity DEFAULT: 'K'
DELETE FROM accounts WHERE id = 3;
-- 11: delete under identity FULL: 'O'
DELETE FROM moods WHERE id = 1;
-- 12: identity FULL on the toasted table: old 'O' carries the body, new 'N' has 'u'
ALTER TABLE docs REPLICA IDENTITY FULL;
UPDATE docs SET title = 'big v3' WHERE id = 1;
-- 13: transaction replayed from another origin -> Origin message
SELECT pg_replication_origin_session_setup('upstream_a');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-05-04 00:00:00+00');
INSERT INTO accounts VALUES (5, 'dave', 1, true, 'from origin', '2024-05-04 00:00:00+00', 1);
COMMIT;
SELECT pg_replication_origin_session_reset();
-- 14: truncate with cascade + restart identity
INSERT INTO ledger (account_id, amount) VALUES (2, 100);
TRUNCATE accounts RESTART IDENTITY CASCADE;
