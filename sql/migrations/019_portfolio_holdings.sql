-- With each portfolio the worker stores the sums it computed it from: one entry per (model,
-- electricity price) of the user's active miners, [[model_id, price or null, units], ...], and
-- when it last read them from all the user's rows. A batch then reads again only the models its
-- events changed (through the index below, which also serves every lookup by user) instead of
-- every row of the user: at 1,000 writes/s a user held hundreds of rows after a minute.
ALTER TABLE user_portfolio ADD COLUMN holdings json, ADD COLUMN holdings_read_at timestamptz;
CREATE INDEX user_miners_user_model ON user_miners (tenant_id, user_id, model_id);
DROP INDEX user_miners_tenant_id_user_id_idx;
