-- user_portfolio is rewritten on every recalculation (each change of a user's holdings), and its
-- breakdown (one JSON object per model held, a few kB) is compressed each time: lz4 compresses
-- it several times faster than the default pglz. Room on each page lets the update stay a HOT
-- update (no new index entries) and lets the page prune the versions it replaces.
ALTER TABLE user_portfolio ALTER COLUMN breakdown SET COMPRESSION lz4;
ALTER TABLE user_portfolio SET (fillfactor = 70);
