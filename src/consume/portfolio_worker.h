// The portfolio worker (group portfolio-recalc-group, topic events.miner): recalculates
// `user_portfolio` for every user with new events, once per user per batch.
//
// Inside the tenant transaction it reads the users' user_miners rows, their electricity price,
// miner_models and the latest network_snapshots row (one pipelined round trip), values them
// with mining::recalculate_portfolio, and upserts every row in one statement that is
// conditional on the fencing token (`WHERE stored.fencing_token <= new.fencing_token`). The row
// records computed_at, the token, the source event id and LSN (the user's last event of the
// batch), through_seq = GREATEST(stored, highest seq of the batch) and events_applied += the
// number of new events (the exactly-once check: after any crash, the sum of events_applied
// equals the inbox rows).
//
// After the commit: a tombstone on user_portfolio:{uid} at the row's through_seq (the API's
// SWR cache, consume/cache.h) and PUBLISH on
// hi:portfolio:{tenant} one JSON notice per user, {"tenant_id","user_id","through_seq",
// "computed_at","events_applied"}, which the API turns into a live page update. For a
// redelivered event both go out again, with the stored row's figures.
//
// Not thread-safe: one per Runtime.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "consume/runtime.h"
#include "mining/portfolio.h"

namespace hi::consume {

inline constexpr const char* kPortfolioGroup = "portfolio-recalc-group";

std::string portfolio_cache_key(std::string_view user_id);  // user_portfolio:{uid}
std::string portfolio_channel(std::string_view tenant_id);  // hi:portfolio:{tenant}

// One recalculated row, ready to be written.
struct PortfolioRow {
  std::string user_id;
  mining::Portfolio portfolio;
  std::int64_t fencing_token = 0;
  std::string source_event_id;
  std::string source_lsn;
  std::int64_t through_seq = 0;  // highest seq among the new events
  std::int64_t new_events = 0;
  // The sums the portfolio was computed from (holdings_json()), stored with it; empty = none.
  std::string holdings;
  bool holdings_whole = false;  // read from all the user's rows (not reused in part)
};

// What a recalculation reads, for a set of users of one tenant (inside its transaction).
struct PortfolioInputs {
  std::vector<mining::PortfolioModel> models;
  mining::NetworkSnapshot snapshot;
  mining::PortfolioOptions options;
  std::unordered_map<std::string, double> electricity_price;  // user -> USD/kWh (users row)
  // user -> the user's active miners, quantity summed per (model, electricity price), in
  // parts of at most mining::kMaxUnits units; a user without any has no entry.
  std::unordered_map<std::string, std::vector<mining::UserMiner>> holdings;
  // Users whose holdings were in part the ones stored with their portfolio (load_batch_inputs).
  std::unordered_set<std::string> reused;
};
//
// Reference data (miner_models, the latest network_snapshots row) is global and changes
// rarely; with a `cache`, it is re-read at most every `cache->max_age` (the snapshot is daily;
// a valuation may use one up to max_age old), which saves a partitioned-table scan per batch.
struct ReferenceCache {
  std::chrono::milliseconds max_age{10000};
  std::int64_t loaded_ns = 0;  // mono_now_ns() of the last read; 0 = never
  bool prepared = false;       // the connection has prepare_inputs()'s statements
  std::vector<mining::PortfolioModel> models;
  mining::NetworkSnapshot snapshot;
  mining::PortfolioOptions options;
};
Result<PortfolioInputs> load_inputs(pg::Connection& conn, const std::vector<std::string>& users,
                                    ReferenceCache* cache = nullptr);
// Prepares load_inputs()'s per-batch reads on `conn` (a handler's prepare()), marks `cache`
// so that load_inputs() uses them, and loads the reference data: the first batch after a
// start does not pay for the first scan of every partition.
Status prepare_inputs(pg::Connection& conn, ReferenceCache& cache);

// The portfolio of one user from loaded inputs; kNotFound when the user does not exist.
Result<mining::Portfolio> portfolio_of(const PortfolioInputs& in, const std::string& user,
                                       const mining::NetworkSnapshot& snapshot);

// The inputs of a batch, reading from user_miners only what its events changed. With each
// portfolio the worker stores the sums it was computed from (user_portfolio.holdings, one
// entry per model and price); a batch whose events for a user all name the model they changed
// (miner.added) reads those models' rows again and takes the user's other models from the
// stored sums. Sums are re-read, never adjusted by deltas, so a redelivery or a row whose event
// is still to come cannot count twice. A user is read whole when any of its events names no
// model (a status change, a bulk import, any other kind), when nothing is stored, and when
// what is stored was read whole more than kHoldingsMaxAge ago: a change written without an
// event shows within that time. Needs prepare_inputs() and PortfolioHandler::prepare()'s
// statements on `conn`. The first round trip's statements are batch_reads(); when
// `batch.prefetched` holds their results (run with the inbox statement), it is not made.
inline constexpr std::chrono::seconds kHoldingsMaxAge{60};
Result<PortfolioInputs> load_batch_inputs(pg::Connection& conn, const TenantBatch& batch,
                                          ReferenceCache& cache);
std::vector<pg::Statement> batch_reads(const TenantBatch& batch, const ReferenceCache& cache);

// A user's holdings as stored with the portfolio: [[model_id, price or null, units], ...].
std::string holdings_json(const std::vector<mining::UserMiner>& holdings);

// Recalculates the portfolios of `batch`'s users from the tables (inside the tenant's
// transaction). kNotFound when a user does not exist in the tenant. `reuse_holdings`: read
// with load_batch_inputs() (`cache` prepared on `conn`), else every row of every user.
Result<std::vector<PortfolioRow>> recalculate_rows(pg::Connection& conn, const TenantBatch& batch,
                                                   ReferenceCache* cache = nullptr,
                                                   bool reuse_holdings = false);

struct PortfolioWrite {
  std::vector<std::pair<std::string, std::int64_t>> fenced;  // (user, stored token)
  bool ended = false;  // `commit`: committed, or rolled back when `fenced` is not empty
  struct Written {
    std::string user_id;
    std::int64_t through_seq = 0;
    std::int64_t events_applied = 0;
    std::string computed_at;  // RFC 3339
  };
  std::vector<Written> written;
};

// Upserts the rows, each conditional on its fencing token (inside the tenant's transaction).
// `prepared`: use PortfolioHandler's prepared statements (on a connection it prepared).
// `commit` (needs `prepared`): the COMMIT goes in the upsert's round trip, and a row fenced off
// fails the upsert (hi_portfolio_fence_check), so that the transaction rolls back instead; the
// stored tokens are then read after the ROLLBACK.
Result<PortfolioWrite> write_rows(pg::Connection& conn, const std::string& tenant_id,
                                  const std::vector<PortfolioRow>& rows, bool prepared = false,
                                  bool commit = false);

class PortfolioHandler final : public Handler {
 public:
  bool locks_users() const override { return true; }
  bool reads_state() const override { return true; }
  Status prepare(pg::Connection& conn) override;
  std::vector<pg::Statement> prefetch(const TenantBatch& batch) override;
  Result<ApplyOutcome> apply(pg::Connection& conn, const TenantBatch& batch) override;
  Result<std::vector<RedisCommand>> after_redelivery(pg::Connection& conn,
                                                     const TenantBatch& batch) override;

 private:
  ReferenceCache reference_;
};

}  // namespace hi::consume
