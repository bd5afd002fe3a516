CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric(12,2), active boolean,
                       note text, created_at timestamptz);
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
CREATE TABLE moods (id int PRIMARY KEY, feeling mood, payload bytea, meta jsonb);
ALTER TABLE moods REPLICA IDENTITY FULL;
CREATE TABLE ledger (id serial PRIMARY KEY, account_id int REFERENCES accounts(id), amount int);
CREATE PUBLICATION pub FOR ALL TABLES;
SELECT pg_replication_origin_create('upstream_a');
