-- The breakdown is written whole on every recalculation and read whole by every push to the
-- page; nothing queries inside it. As json (the text, checked) it is neither parsed into a tree
-- when written nor printed back when read: with jsonb both took most of a recalculation's time
-- for a user holding a few dozen models.
ALTER TABLE user_portfolio ALTER COLUMN breakdown DROP DEFAULT;
ALTER TABLE user_portfolio ALTER COLUMN breakdown TYPE json USING breakdown::json;
ALTER TABLE user_portfolio ALTER COLUMN breakdown SET DEFAULT '[]';
ALTER TABLE user_portfolio ALTER COLUMN breakdown SET COMPRESSION lz4;
