\set ON_ERROR_STOP 1
-- a: small transaction: not streamed, Begin/Commit without xids on the changes
INSERT INTO accounts VALUES (10, 'erin', 5, true, NULL, '2024-06-01 00:00:00+00', 3);
-- b: large committed transaction streamed in segments (logical_decoding_work_mem = 64kB):
--    transactional message, Type + Relation inside the stream, inserts, update, delete, truncate
BEGIN;
SELECT pg_logical_emit_message(true, 'hi.stream', 'in stream');
INSERT INTO moods SELECT i, 'sad', decode(md5(i::text), 'hex'), NULL FROM generate_series(1, 600) i;
UPDATE moods SET feeling = 'happy' WHERE id = 7;
DELETE FROM moods WHERE id = 8;
INSERT INTO ledger (account_id, amount) VALUES (10, 1);
TRUNCATE ledger;
COMMIT;
-- c: large transaction that rolls back after being streamed: Stream Abort (xid == subxid)
BEGIN;
INSERT INTO docs SELECT i, 'row ' || i, md5(i::text) FROM generate_series(100, 700) i;
ROLLBACK;
-- d: subtransaction streamed then rolled back: Stream Abort (subxid != xid), then Stream Commit
BEGIN;
INSERT INTO docs VALUES (2, 'kept', 'before savepoint');
SAVEPOINT s1;
INSERT INTO docs SELECT i, 'sub ' || i, md5(i::text) FROM generate_series(1000, 1600) i;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO docs VALUES (3, 'kept too', 'after rollback');
COMMIT;
