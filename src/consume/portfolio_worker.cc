#include "consume/portfolio_worker.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>

#include "consume/cache.h"
#include "core/time.h"
#include "pg/array.h"
#include "pg/transaction.h"

namespace hi::consume {
namespace {

using nlohmann::json;

double number(std::string_view text) { return std::strtod(std::string(text).c_str(), nullptr); }

void append_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";  // as nlohmann::json prints it
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest that reads back the same
  out.append(buf, end);
}

// The breakdown as JSON, written straight into a string: per user and batch it is a few dozen
// objects of nine fields, and building them as nlohmann::json trees (a std::map each) took
// most of the worker's time at 1,000 writes/s.
std::string breakdown_json(const mining::Portfolio& p) {
  std::string out;
  out.reserve(64 + p.by_model.size() * 256);
  out += '[';
  for (const auto& m : p.by_model) {
    if (out.size() > 1) out += ',';
    const auto& f = m.figures;
    out += "{\"model_id\":";
    out += std::to_string(m.model_id);
    out += ",\"model_name\":";
    out += json(m.model_name).dump();
    out += ",\"units\":";
    out += std::to_string(f.units);
    for (const auto& [key, value] : {std::pair{",\"hashrate_ths\":", f.hashrate_ths},
                                     {",\"power_kw\":", f.power_kw},
                                     {",\"revenue_btc_day\":", f.revenue_btc_per_day},
                                     {",\"revenue_usd_day\":", f.revenue_usd_per_day},
                                     {",\"cost_usd_day\":", f.cost_usd_per_day},
                                     {",\"profit_usd_day\":", f.profit_usd_per_day}}) {
      out += key;
      append_number(out, value);
    }
    out += '}';
  }
  out += ']';
  return out;
}

// One index lookup per user, whatever the table's size when the plan was made. These
// statements are prepared when a worker starts, often on near-empty tables, and a prepared
// statement keeps that generic plan until the table is next analyzed. With `user_id =
// ANY($1)` that plan read every row of the tenant through the (tenant_id, user_id) index and
// filtered the users out: a cost that grew with the table (4,500 rows read per batch after a
// minute of `bench e2e`). Per user (the OFFSET keeps the subquery from being merged into a
// join the planner could again answer with one scan), both columns are the index condition.
//
// Only active rows count, and a valuation is linear in the units, so the rows come summed per
// (model, electricity price): a user's hundreds of rows of a few dozen models arrive as a few
// dozen rows, and neither the sort, the wire nor the valuation pays per row.
constexpr const char* kMinersSql =
    "SELECT u.id, m.model_id, m.quantity, m.electricity_price_usd_kwh "
    "FROM unnest($1::bigint[]) AS u(id) CROSS JOIN LATERAL (SELECT model_id, "
    "electricity_price_usd_kwh, sum(quantity) AS quantity FROM user_miners WHERE user_id = u.id "
    "AND status = 'active' GROUP BY model_id, electricity_price_usd_kwh OFFSET 0) m "
    "ORDER BY 1, 2, 4";
constexpr const char* kUsersSql =
    "SELECT s.id, s.electricity_price_usd_kwh FROM unnest($1::bigint[]) AS u(id) CROSS JOIN "
    "LATERAL (SELECT id, electricity_price_usd_kwh FROM users WHERE id = u.id OFFSET 0) s";
// The sums stored with the users' portfolios, and whether they were read whole within $2.
constexpr const char* kStoredSql =
    "SELECT s.user_id, s.holdings, s.holdings_read_at > now() - $2::interval "
    "FROM unnest($1::bigint[]) AS u(id) CROSS JOIN LATERAL (SELECT user_id, holdings, "
    "holdings_read_at FROM user_portfolio WHERE user_id = u.id OFFSET 0) s";
// The active rows of (user, model) pairs, summed as in kMinersSql (index user_miners_user_model).
constexpr const char* kGroupsSql =
    "SELECT p.u, m.model_id, m.quantity, m.electricity_price_usd_kwh "
    "FROM unnest($1::bigint[], $2::int[]) AS p(u, model) CROSS JOIN LATERAL (SELECT model_id, "
    "electricity_price_usd_kwh, sum(quantity) AS quantity FROM user_miners WHERE user_id = p.u "
    "AND model_id = p.model AND status = 'active' GROUP BY model_id, electricity_price_usd_kwh "
    "OFFSET 0) m";
// Prepared by PortfolioHandler::prepare() on each of its connections.
constexpr const char* kMinersStmt = "hi_portfolio_miners";
constexpr const char* kUsersStmt = "hi_portfolio_users";
constexpr const char* kUpsertStmt = "hi_portfolio_upsert";
constexpr const char* kStoredStmt = "hi_portfolio_stored";
constexpr const char* kGroupsStmt = "hi_portfolio_groups";

constexpr const char* kUpsertSql = R"sql(
INSERT INTO user_portfolio AS p (tenant_id, user_id, units, hashrate_ths, power_kw,
  revenue_btc_day, revenue_usd_day, cost_usd_day, profit_usd_day, breakdown, computed_at,
  fencing_token, source_event_id, source_lsn, through_seq, events_applied, holdings,
  holdings_read_at)
SELECT $1::bigint, u.user_id, u.units, u.hashrate_ths, u.power_kw, u.revenue_btc_day,
       u.revenue_usd_day, u.cost_usd_day, u.profit_usd_day, b.breakdown::json, now(),
       u.fencing_token, u.source_event_id, NULLIF(u.source_lsn, ''), u.through_seq, u.n,
       NULLIF(h.holdings, 'null')::json, CASE WHEN u.whole THEN now() END
  FROM unnest($2::bigint[], $3::int[], $4::float8[], $5::float8[], $6::float8[], $7::float8[],
              $8::float8[], $9::float8[], $11::bigint[], $12::text[], $13::text[],
              $14::bigint[], $15::bigint[], $17::bool[]) WITH ORDINALITY
    AS u(user_id, units, hashrate_ths, power_kw, revenue_btc_day, revenue_usd_day, cost_usd_day,
         profit_usd_day, fencing_token, source_event_id, source_lsn, through_seq, n, whole, i)
  JOIN unnest(string_to_array($10::text, E'\x1e')) WITH ORDINALITY AS b(breakdown, i) USING (i)
  JOIN unnest(string_to_array($16::text, E'\x1e')) WITH ORDINALITY AS h(holdings, i) USING (i)
ON CONFLICT (tenant_id, user_id) DO UPDATE SET
  units = EXCLUDED.units, hashrate_ths = EXCLUDED.hashrate_ths, power_kw = EXCLUDED.power_kw,
  revenue_btc_day = EXCLUDED.revenue_btc_day, revenue_usd_day = EXCLUDED.revenue_usd_day,
  cost_usd_day = EXCLUDED.cost_usd_day, profit_usd_day = EXCLUDED.profit_usd_day,
  breakdown = EXCLUDED.breakdown, computed_at = EXCLUDED.computed_at,
  fencing_token = EXCLUDED.fencing_token, source_event_id = EXCLUDED.source_event_id,
  source_lsn = EXCLUDED.source_lsn,
  through_seq = GREATEST(p.through_seq, EXCLUDED.through_seq),
  events_applied = p.events_applied + EXCLUDED.events_applied,
  holdings = EXCLUDED.holdings,
  holdings_read_at = CASE WHEN EXCLUDED.holdings IS NULL THEN NULL
                          ELSE coalesce(EXCLUDED.holdings_read_at, p.holdings_read_at) END
WHERE p.fencing_token <= EXCLUDED.fencing_token
RETURNING user_id, through_seq, events_applied, computed_at::text
)sql";
// The same, failing when a row was fenced off ($18: the number of rows), for write_rows()'s
// `commit`: the COMMIT sent with it then finds the transaction aborted. The check's one row is
// made whether the upsert returned rows or none.
const std::string& upsert_checked_sql() {
  static const std::string sql =
      std::string("WITH w AS (") + kUpsertSql +
      ") SELECT w.* FROM (SELECT hi_portfolio_fence_check(count(*), $18::bigint) FROM w) c, w";
  return sql;
}
constexpr const char* kUpsertCheckedStmt = "hi_portfolio_upsert_checked";
// hi_portfolio_fence_check()'s SQLSTATE, as pg::Connection puts it in an error's message.
constexpr std::string_view kFencedOff = "(SQLSTATE HIF01)";

}  // namespace

namespace {

// DEL of the cached portfolio and the change notice, per written row.
std::vector<RedisCommand> invalidation(const std::string& tenant,
                                       const std::vector<PortfolioWrite::Written>& rows) {
  std::vector<RedisCommand> out;
  const std::string channel = portfolio_channel(tenant);
  out.reserve(rows.size() * 2);
  for (const auto& w : rows) {
    out.push_back(cache_invalidation(portfolio_cache_key(w.user_id), w.through_seq, kTombstoneTtl));
    json notice = {{"tenant_id", tenant},
                   {"user_id", w.user_id},
                   {"through_seq", w.through_seq},
                   {"events_applied", w.events_applied},
                   {"computed_at", w.computed_at}};
    out.push_back({"PUBLISH", channel, notice.dump()});
  }
  return out;
}

}  // namespace

std::string portfolio_cache_key(std::string_view user_id) {
  return "user_portfolio:" + std::string(user_id);
}
std::string portfolio_channel(std::string_view tenant_id) {
  return "hi:portfolio:" + std::string(tenant_id);
}

namespace {

bool reference_fresh(const ReferenceCache* cache) {
  return cache != nullptr && cache->loaded_ns != 0 &&
         mono_now_ns() - cache->loaded_ns < std::chrono::nanoseconds(cache->max_age).count();
}

// The reads of miner_models and the latest snapshot, unless `cache` holds them fresh.
void add_reference_reads(std::vector<pg::Statement>& reads, bool fresh) {
  if (fresh) return;
  reads.push_back({"SELECT id, name, hashrate_ths, power_w FROM miner_models", {}, false});
  reads.push_back(
      {"SELECT btc_price_usd, difficulty, network_hashrate_ehs, block_reward_btc, "
       "fees_btc_per_block FROM network_snapshots ORDER BY taken_at DESC LIMIT 1",
       {},
       false});
}

// Fills `in`'s reference data from results[at], results[at + 1] (add_reference_reads) or
// from the fresh `cache`.
Status take_reference(PortfolioInputs& in, std::span<const pg::QueryResult> results, std::size_t at,
                      bool fresh, ReferenceCache* cache) {
  if (fresh) {
    in.models = cache->models;
    in.snapshot = cache->snapshot;
    in.options = cache->options;
    return {};
  }
  const pg::QueryResult& models_q = results[at];
  const pg::QueryResult& snap_q = results[at + 1];
  if (snap_q.empty()) {
    return failed_precondition("no network_snapshots row: run `hashinsight seed`");
  }
  in.models.reserve(static_cast<std::size_t>(models_q.rows()));
  for (int i = 0; i < models_q.rows(); ++i) {
    in.models.push_back({models_q.int64(i, 0), std::string(models_q.text(i, 1)),
                         number(models_q.text(i, 2)), number(models_q.text(i, 3))});
  }
  in.snapshot = {snap_q.float64(0, 0), snap_q.float64(0, 1), snap_q.float64(0, 2)};
  in.options.block_reward_btc = snap_q.float64(0, 3);
  in.options.fees_per_block_btc = snap_q.float64(0, 4);
  if (cache != nullptr) {
    cache->models = in.models;
    cache->snapshot = in.snapshot;
    cache->options = in.options;
    cache->loaded_ns = mono_now_ns();
  }
  return {};
}

void take_prices(PortfolioInputs& in, const pg::QueryResult& users_q) {
  in.electricity_price.reserve(static_cast<std::size_t>(users_q.rows()));
  for (int i = 0; i < users_q.rows(); ++i) {
    in.electricity_price[std::string(users_q.text(i, 0))] = number(users_q.text(i, 1));
  }
}

// Appends one summed group (model, units, price or none) to a user's holdings. A sum may pass
// the per-row limit the valuation checks: it is valued in parts.
void add_group(std::vector<mining::UserMiner>& holdings, std::int64_t model, std::int64_t units,
               std::optional<double> price) {
  mining::UserMiner m;
  m.miner_model_id = model;
  m.electricity_usd_per_kwh = price;
  m.status = std::string(mining::kActiveStatus);
  for (std::int64_t left = units; left > 0; left -= mining::kMaxUnits) {
    m.quantity = std::min(left, mining::kMaxUnits);
    holdings.push_back(m);
  }
}

// Rows of (user, model, units, price) as kMinersSql and kGroupsSql return them.
void take_groups(PortfolioInputs& in, const pg::QueryResult& q) {
  for (int i = 0; i < q.rows(); ++i) {
    add_group(in.holdings[std::string(q.text(i, 0))], q.int64(i, 1), q.int64(i, 2),
              q.is_null(i, 3) ? std::nullopt : std::optional<double>(number(q.text(i, 3))));
  }
}

// The stored holdings_json(); nullopt when it is not what holdings_json() writes.
std::optional<std::vector<mining::UserMiner>> parse_holdings(std::string_view text) {
  auto v = json::parse(text, nullptr, false);
  if (v.is_discarded() || !v.is_array()) return std::nullopt;
  std::vector<mining::UserMiner> out;
  for (const auto& g : v) {
    if (!g.is_array() || g.size() != 3 || !g[0].is_number_integer() ||
        !(g[1].is_null() || g[1].is_number()) || !g[2].is_number_integer()) {
      return std::nullopt;
    }
    add_group(out, g[0].get<std::int64_t>(), g[2].get<std::int64_t>(),
              g[1].is_null() ? std::nullopt : std::optional<double>(g[1].get<double>()));
  }
  return out;
}

// The models `u`'s events changed, or nullopt when one of them does not say (the user is then
// read whole). Only miner.added names its model (payload.model_id); the envelope carries the
// payload under "payload", the Debezium format is the payload.
std::optional<std::set<std::int64_t>> changed_models(const UserEvents& u) {
  std::set<std::int64_t> models;
  for (const Event* e : u.events) {
    if (e->kind != "miner.added" || e->delivery == nullptr) return std::nullopt;
    auto v = json::parse(e->delivery->value, nullptr, false);
    if (v.is_discarded() || !v.is_object()) return std::nullopt;
    const json* payload = &v;
    if (auto it = v.find("payload"); it != v.end()) payload = &*it;
    const auto model = payload->is_object() ? payload->find("model_id") : payload->end();
    if (!payload->is_object() || model == payload->end() || !model->is_number_integer()) {
      return std::nullopt;
    }
    models.insert(model->get<std::int64_t>());
  }
  return models;
}

}  // namespace

std::string holdings_json(const std::vector<mining::UserMiner>& holdings) {
  std::string out = "[";
  for (const auto& m : holdings) {
    if (out.size() > 1) out += ',';
    out += '[';
    out += std::to_string(m.miner_model_id);
    out += ',';
    if (m.electricity_usd_per_kwh) {
      append_number(out, *m.electricity_usd_per_kwh);
    } else {
      out += "null";
    }
    out += ',';
    out += std::to_string(m.quantity);
    out += ']';
  }
  out += ']';
  return out;
}

Result<PortfolioInputs> load_inputs(pg::Connection& conn, const std::vector<std::string>& users,
                                    ReferenceCache* cache) {
  const std::string ids = pg::array_literal(users);
  const bool fresh = reference_fresh(cache);
  const bool prepared = cache != nullptr && cache->prepared;
  std::vector<pg::Statement> reads = {{prepared ? kMinersStmt : kMinersSql, {ids}, prepared},
                                      {prepared ? kUsersStmt : kUsersSql, {ids}, prepared}};
  add_reference_reads(reads, fresh);
  auto r = conn.pipeline(reads);
  if (!r) return r.error().wrap("portfolio inputs");
  PortfolioInputs in;
  if (auto s = take_reference(in, *r, 2, fresh, cache); !s) return s.error();
  take_prices(in, (*r)[1]);
  take_groups(in, (*r)[0]);
  return in;
}

namespace {

// What load_batch_inputs() reads first: every user's price and stored sums, and the changed
// models' rows of the users whose events name them (the others are read whole after).
struct BatchPlan {
  std::vector<std::string> users, pair_users, whole;
  std::vector<std::int64_t> pair_models;
  std::unordered_map<std::string, std::set<std::int64_t>> changed;
};
constexpr std::size_t kBatchReads = 3;      // users, stored sums, changed models' rows
constexpr std::size_t kReferenceReads = 2;  // add_reference_reads() when not fresh

BatchPlan plan_batch(const TenantBatch& batch) {
  BatchPlan plan;
  for (const auto& u : batch.users) {
    plan.users.push_back(u.user_id);
    if (auto models = changed_models(u)) {
      for (std::int64_t m : *models) {
        plan.pair_users.push_back(u.user_id);
        plan.pair_models.push_back(m);
      }
      plan.changed.emplace(u.user_id, std::move(*models));
    } else {
      plan.whole.push_back(u.user_id);
    }
  }
  return plan;
}

std::vector<pg::Statement> plan_reads(const BatchPlan& plan, bool fresh) {
  const std::string ids = pg::array_literal(plan.users);
  std::vector<pg::Statement> reads = {
      {kUsersStmt, {ids}, true},
      {kStoredStmt,
       {ids, std::to_string(std::chrono::seconds(kHoldingsMaxAge).count()) + " seconds"},
       true},
      {kGroupsStmt,
       {pg::array_literal(plan.pair_users), pg::array_literal(plan.pair_models)},
       true}};
  add_reference_reads(reads, fresh);
  return reads;
}

}  // namespace

std::vector<pg::Statement> batch_reads(const TenantBatch& batch, const ReferenceCache& cache) {
  return plan_reads(plan_batch(batch), reference_fresh(&cache));
}

Result<PortfolioInputs> load_batch_inputs(pg::Connection& conn, const TenantBatch& batch,
                                          ReferenceCache& cache) {
  // One round trip (none when the runtime ran it with the inbox statement): prices, stored
  // sums, and the changed models' rows of every user whose events name them; a second only
  // for users read whole.
  BatchPlan plan = plan_batch(batch);
  std::vector<pg::QueryResult> fetched;
  std::span<const pg::QueryResult> r = batch.prefetched;
  if (r.empty()) {
    auto got = conn.pipeline(plan_reads(plan, reference_fresh(&cache)));
    if (!got) return got.error().wrap("portfolio inputs");
    fetched = std::move(*got);
    r = fetched;
  }
  if (r.size() != kBatchReads && r.size() != kBatchReads + kReferenceReads) {
    return internal_error("portfolio inputs: " + std::to_string(r.size()) + " results");
  }
  const bool fresh = r.size() == kBatchReads;  // what the reads' maker found
  PortfolioInputs in;
  if (auto s = take_reference(in, r, kBatchReads, fresh, &cache); !s) return s.error();
  take_prices(in, r[0]);
  auto& changed = plan.changed;
  auto& whole = plan.whole;

  // Users with usable stored sums: those sums, less the changed models, plus their rows.
  const pg::QueryResult& stored_q = r[1];
  std::unordered_set<std::string> usable;
  for (int i = 0; i < stored_q.rows(); ++i) {
    const std::string user(stored_q.text(i, 0));
    auto c = changed.find(user);
    if (c == changed.end() || stored_q.is_null(i, 1) || !stored_q.boolean(i, 2)) continue;
    auto stored = parse_holdings(stored_q.text(i, 1));
    if (!stored) continue;
    auto& h = in.holdings[user];
    for (auto& m : *stored) {
      if (!c->second.contains(m.miner_model_id)) h.push_back(std::move(m));
    }
    usable.insert(user);
    in.reused.insert(user);
  }
  const pg::QueryResult& groups_q = r[2];
  for (int i = 0; i < groups_q.rows(); ++i) {
    const std::string user(groups_q.text(i, 0));
    if (!usable.contains(user)) continue;
    add_group(
        in.holdings[user], groups_q.int64(i, 1), groups_q.int64(i, 2),
        groups_q.is_null(i, 3) ? std::nullopt : std::optional<double>(number(groups_q.text(i, 3))));
  }
  for (const auto& [user, models] : changed) {
    if (!usable.contains(user)) whole.push_back(user);
  }
  if (!whole.empty()) {
    in.holdings.reserve(plan.users.size());
    auto all = conn.exec_prepared(kMinersStmt, {pg::array_literal(whole)});
    if (!all) return all.error().wrap("portfolio inputs");
    for (const auto& user : whole) in.holdings.erase(user);
    take_groups(in, *all);
  }
  return in;
}

Result<mining::Portfolio> portfolio_of(const PortfolioInputs& in, const std::string& user,
                                       const mining::NetworkSnapshot& snapshot) {
  auto p = in.electricity_price.find(user);
  if (p == in.electricity_price.end()) {
    return not_found("user " + user + " does not exist in this tenant");
  }
  static const std::vector<mining::UserMiner> kNone;
  auto h = in.holdings.find(user);
  auto portfolio = mining::recalculate_portfolio(h == in.holdings.end() ? kNone : h->second,
                                                 in.models, snapshot, p->second, in.options);
  if (!portfolio) return portfolio.error().wrap("portfolio of user " + user);
  return portfolio;
}

Result<std::vector<PortfolioRow>> recalculate_rows(pg::Connection& conn, const TenantBatch& batch,
                                                   ReferenceCache* cache, bool reuse_holdings) {
  std::vector<std::string> users;
  for (const auto& u : batch.users) {
    if (!is_decimal_id(u.user_id)) {
      return invalid_argument("event " + (u.events.empty() ? "" : u.events.front()->id) +
                              ": user_id '" + u.user_id + "' is not a user id");
    }
    users.push_back(u.user_id);
  }
  auto in = reuse_holdings && cache != nullptr && cache->prepared
                ? load_batch_inputs(conn, batch, *cache)
                : load_inputs(conn, users, cache);
  if (!in) return in.error();
  static const std::vector<mining::UserMiner> kNone;
  std::vector<PortfolioRow> rows;
  rows.reserve(batch.users.size());
  for (const auto& u : batch.users) {
    auto portfolio = portfolio_of(*in, u.user_id, in->snapshot);
    if (!portfolio) return portfolio.error().wrap("tenant " + batch.tenant_id);
    PortfolioRow row;
    row.user_id = u.user_id;
    row.portfolio = std::move(*portfolio);
    row.fencing_token = u.fencing_token;
    row.new_events = static_cast<std::int64_t>(u.events.size());
    const auto h = in->holdings.find(u.user_id);
    row.holdings = holdings_json(h == in->holdings.end() ? kNone : h->second);
    row.holdings_whole = !in->reused.contains(u.user_id);
    const Event* last = nullptr;
    for (const Event* e : u.events) {
      if (last == nullptr || e->seq >= last->seq) last = e;
    }
    if (last != nullptr) {
      row.source_event_id = last->id;
      row.source_lsn = last->lsn;
      row.through_seq = last->seq;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

namespace {

std::vector<PortfolioWrite::Written> written_rows(const pg::QueryResult& res) {
  std::vector<PortfolioWrite::Written> out;
  out.reserve(static_cast<std::size_t>(res.rows()));
  for (int i = 0; i < res.rows(); ++i) {
    PortfolioWrite::Written w;
    w.user_id = std::string(res.text(i, 0));
    w.through_seq = res.int64(i, 1);
    w.events_applied = res.int64(i, 2);
    auto us = parse_rfc3339_us(res.text(i, 3));
    w.computed_at = us ? format_rfc3339_us(*us) : std::string(res.text(i, 3));
    out.push_back(std::move(w));
  }
  return out;
}

// The stored fencing tokens of `rows`' users.
pg::Statement stored_tokens(const std::vector<PortfolioRow>& rows) {
  std::vector<std::string> users;
  users.reserve(rows.size());
  for (const auto& r : rows) users.push_back(r.user_id);
  return {"SELECT user_id, fencing_token FROM user_portfolio WHERE user_id = ANY($1::bigint[])",
          {pg::array_literal(users)},
          false};
}

// (user, stored token) of the rows of `stored` (stored_tokens()) newer than `rows`' tokens.
std::vector<std::pair<std::string, std::int64_t>> newer_tokens(
    const pg::QueryResult& stored, const std::vector<PortfolioRow>& rows) {
  std::unordered_map<std::string_view, std::int64_t> ours;
  for (const auto& r : rows) ours.emplace(r.user_id, r.fencing_token);
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (int i = 0; i < stored.rows(); ++i) {
    const auto it = ours.find(stored.text(i, 0));
    if (it != ours.end() && stored.int64(i, 1) > it->second) {
      out.emplace_back(std::string(stored.text(i, 0)), stored.int64(i, 1));
    }
  }
  return out;
}

// write_rows() with `commit`: the checked upsert and COMMIT in one round trip.
Result<PortfolioWrite> write_and_commit(pg::Connection& conn, const std::string& tenant_id,
                                        const std::vector<PortfolioRow>& rows, pg::Params params) {
  params.emplace_back(std::to_string(rows.size()));
  const pg::Statement statements[] = {{kUpsertCheckedStmt, std::move(params), true},
                                      {"COMMIT", {}, false}};
  PortfolioWrite out;
  auto r = conn.pipeline(statements);
  if (r) {
    out.ended = true;
    out.written = written_rows(r->front());
    return out;
  }
  if (r.error().message.find(kFencedOff) == std::string::npos) {
    return r.error().wrap("upsert user_portfolio");  // the caller rolls back
  }
  // Rolled back, the tokens that beat ours are read in a transaction of the tenant (row-level
  // security), all in one round trip.
  conn.defer({"ROLLBACK", {}, false});
  pg::Transaction tx(conn);
  if (auto s = tx.begin(tenant_id, pg::Transaction::Start::kWithFirstStatement); !s)
    return s.error();
  const pg::Statement read[] = {stored_tokens(rows)};
  auto stored = tx.commit_with(read);
  if (!stored) return stored.error().wrap("read fencing tokens after a fenced write");
  out.ended = true;
  auto fenced = newer_tokens(stored->front(), rows);
  if (fenced.empty()) {
    // The newer token went away between the upsert and this read (the row was deleted): the
    // next attempt writes.
    return unavailable("portfolio write fenced off, and no newer token is stored now");
  }
  out.fenced = std::move(fenced);
  return out;
}

}  // namespace

Result<PortfolioWrite> write_rows(pg::Connection& conn, const std::string& tenant_id,
                                  const std::vector<PortfolioRow>& rows, bool prepared,
                                  bool commit) {
  PortfolioWrite out;
  if (rows.empty()) return out;
  std::vector<std::string> users, event_ids, lsns;
  // The breakdowns (and the holdings) as one text, separated by the ASCII record separator,
  // which JSON text never holds raw (in a string it is escaped): PostgreSQL splits it with a
  // byte search and checks each element as json once, in one pass of its JSON lexer. A JSON
  // array of them was lexed twice (as json, then by json_array_elements) and a text[] cost a
  // parse of every escaped character (array_in) besides; the lexer was the portfolio backend's
  // largest cost at 1,000 writes/s.
  constexpr char kSeparator = '\x1e';
  std::string breakdowns, holdings;
  std::string whole = "{";
  std::vector<std::int64_t> units, tokens, seqs, counts;
  std::vector<double> hashrate, power, rev_btc, rev_usd, cost, profit;
  for (const auto& r : rows) {
    const auto& t = r.portfolio.totals;
    users.push_back(r.user_id);
    units.push_back(t.units);
    hashrate.push_back(t.hashrate_ths);
    power.push_back(t.power_kw);
    rev_btc.push_back(t.revenue_btc_per_day);
    rev_usd.push_back(t.revenue_usd_per_day);
    cost.push_back(t.cost_usd_per_day);
    profit.push_back(t.profit_usd_per_day);
    if (users.size() > 1) {  // after the first row
      breakdowns += kSeparator;
      holdings += kSeparator;
    }
    breakdowns += breakdown_json(r.portfolio);
    holdings += r.holdings.empty() ? "null" : r.holdings;
    whole += whole.size() > 1 ? "," : "";
    whole += r.holdings_whole ? 't' : 'f';
    tokens.push_back(r.fencing_token);
    event_ids.push_back(r.source_event_id);
    lsns.push_back(r.source_lsn);
    seqs.push_back(r.through_seq);
    counts.push_back(r.new_events);
  }
  whole += '}';
  pg::Params params = {tenant_id,
                       pg::array_literal(users),
                       pg::array_literal(units),
                       pg::array_literal(hashrate),
                       pg::array_literal(power),
                       pg::array_literal(rev_btc),
                       pg::array_literal(rev_usd),
                       pg::array_literal(cost),
                       pg::array_literal(profit),
                       breakdowns,
                       pg::array_literal(tokens),
                       pg::array_literal(event_ids),
                       pg::array_literal(lsns),
                       pg::array_literal(seqs),
                       pg::array_literal(counts),
                       holdings,
                       whole};
  if (commit && prepared) return write_and_commit(conn, tenant_id, rows, std::move(params));
  auto res = prepared ? conn.exec_prepared(kUpsertStmt, params) : conn.exec(kUpsertSql, params);
  if (!res) return res.error().wrap("upsert user_portfolio");
  out.written = written_rows(*res);
  if (out.written.size() < rows.size()) {
    // Rows not returned were fenced off: read the tokens that beat ours.
    const pg::Statement read[] = {stored_tokens(rows)};
    auto stored = conn.pipeline(read);
    if (!stored) return stored.error().wrap("read fencing tokens");
    out.fenced = newer_tokens(stored->front(), rows);
    if (out.fenced.empty()) return unavailable("portfolio rows neither written nor fenced off");
  }
  return out;
}

Status prepare_inputs(pg::Connection& conn, ReferenceCache& cache) {
  for (const auto& [name, sql] :
       {std::pair{kMinersStmt, kMinersSql}, std::pair{kUsersStmt, kUsersSql}}) {
    if (auto s = conn.prepare(name, sql); !s) return s.error().wrap("prepare portfolio inputs");
  }
  cache.prepared = true;
  cache.loaded_ns = 0;
  auto warm = load_inputs(conn, {}, &cache);
  // An empty network_snapshots is the first batch's error to report (run `hashinsight seed`).
  if (!warm && warm.error().code != Code::kFailedPrecondition) return warm.error();
  return {};
}

Status PortfolioHandler::prepare(pg::Connection& conn) {
  if (auto s = prepare_inputs(conn, reference_); !s) return s;
  for (const auto& [name, sql] :
       {std::pair{kUpsertStmt, kUpsertSql},
        std::pair{kUpsertCheckedStmt, upsert_checked_sql().c_str()},
        std::pair{kStoredStmt, kStoredSql}, std::pair{kGroupsStmt, kGroupsSql}}) {
    if (auto s = conn.prepare(name, sql); !s) return s.error().wrap("prepare portfolio");
  }
  return {};
}

std::vector<pg::Statement> PortfolioHandler::prefetch(const TenantBatch& batch) {
  if (!reference_.prepared) return {};
  for (const auto& u : batch.users) {
    if (!is_decimal_id(u.user_id)) return {};  // apply() reports it
  }
  return batch_reads(batch, reference_);
}

Result<ApplyOutcome> PortfolioHandler::apply(pg::Connection& conn, const TenantBatch& batch) {
  auto rows = recalculate_rows(conn, batch, &reference_, /*reuse_holdings=*/true);
  if (!rows) return rows.error();
  auto written = write_rows(conn, batch.tenant_id, *rows, /*prepared=*/true, batch.commit);
  if (!written) return written.error();
  ApplyOutcome out;
  out.ended = written->ended;
  out.fenced = std::move(written->fenced);
  if (!out.fenced.empty()) return out;
  out.after_commit = invalidation(batch.tenant_id, written->written);
  return out;
}

Result<std::vector<RedisCommand>> PortfolioHandler::after_redelivery(pg::Connection& conn,
                                                                     const TenantBatch& batch) {
  std::vector<std::string> users;
  for (const auto& u : batch.users) {
    if (is_decimal_id(u.user_id)) users.push_back(u.user_id);
  }
  if (users.empty()) return std::vector<RedisCommand>{};
  auto r = conn.exec(
      "SELECT user_id, through_seq, events_applied, computed_at::text FROM user_portfolio "
      "WHERE user_id = ANY($1::bigint[])",
      {pg::array_literal(users)});
  if (!r) return r.error().wrap("read user_portfolio");
  std::vector<PortfolioWrite::Written> rows;
  for (int i = 0; i < r->rows(); ++i) {
    PortfolioWrite::Written w;
    w.user_id = std::string(r->text(i, 0));
    w.through_seq = r->int64(i, 1);
    w.events_applied = r->int64(i, 2);
    auto us = parse_rfc3339_us(r->text(i, 3));
    w.computed_at = us ? format_rfc3339_us(*us) : std::string(r->text(i, 3));
    rows.push_back(std::move(w));
  }
  return invalidation(batch.tenant_id, rows);
}

}  // namespace hi::consume
