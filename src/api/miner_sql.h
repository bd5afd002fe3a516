// The statement behind POST /api/miners, shared with `hashinsight bench api`, which runs it
// under pgbench to show what the database alone sustains of the API's busiest write.
#pragma once

namespace hi::api {

// Inserts a user_miners row (only if its model exists), bumps the user's seq, appends the
// miner.added event and the audit row; returns (id, the row as JSON, event id, seq), or no row
// for an unknown model. $1 tenant, $2 user, $3 model, $4 quantity, $5 price, $6 status,
// $7 event id, $8 Idempotency-Key, $9 request id, $10 client address. Run it in a transaction
// whose app.tenant_id is $1.
extern const char* const kAddMinerSql;

}  // namespace hi::api
