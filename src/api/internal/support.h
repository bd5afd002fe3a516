// What the route handlers share: the write record every write adds to its transaction, and
// small helpers for answering from PostgreSQL.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "api/live.h"
#include "api/service.h"
#include "core/result.h"
#include "http/message.h"
#include "schema/outbox.h"

namespace hi::api::internal {

// A database failure as the client sees it (the details go to the log).
http::Response db_failure(const Error& e);

// What every write records in its transaction besides its row: the outbox event (carrying the
// request's Idempotency-Key) and the audit_logs row (who, what, before, after, from where).
struct WriteRecord {
  std::string kind;    // the event: "miner.added"
  std::string action;  // the audit action: "miner.add"
  std::string entity;  // the table written
  std::string entity_id;
  nlohmann::json payload;
  nlohmann::json before;
  nlohmann::json after;
  // The request's last statements: the answer follows at once, so when the request allows it
  // (Call::commit_early) COMMIT rides in the same round trip.
  bool last = false;
};
Result<schema::EventRef> record_write(Call& c, const WriteRecord& w);

// A query whose one cell is the JSON answer (built by PostgreSQL), as a response.
http::Response json_query(Call& c, const std::string& sql, const pg::Params& params = {});

// The answer of a write: `fields` plus the event's id and the caller's seq.
http::Response write_response(nlohmann::json fields, const schema::EventRef& ev, int status);

// The first of `ids` that is not a miner_models row, or 0 when all are.
Result<std::int64_t> first_unknown_model(pg::Connection& db, const std::set<std::int64_t>& ids);

// The latest network_snapshots row, the reference every valuation uses.
struct Network {
  double btc_price_usd = 0;
  double difficulty = 0;
  double network_hashrate_ehs = 0;
  double block_reward_btc = 0;
  double fees_per_block_btc = 0;
  std::string day;
};
Result<Network> latest_network(pg::Connection& db);

// GET /api/portfolio's answer for each of `users` (user ids as text) in the caller's tenant
// transaction, in the order given: the user_portfolio row as JSON, or an empty portfolio
// (through_seq 0) for a user the worker has not computed yet. The live stream pushes the same.
Result<std::vector<PortfolioView>> portfolio_views(pg::Connection& db,
                                                   const std::vector<std::string>& users);

}  // namespace hi::api::internal
