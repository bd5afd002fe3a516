#include "api/internal/support.h"

#include <unordered_map>

#include "core/ids.h"
#include "pg/array.h"
#include "pg/transaction.h"

namespace hi::api::internal {

using nlohmann::json;

http::Response db_failure(const Error& e) { return http::Response::fail(http::api_error(e)); }

Result<schema::EventRef> record_write(Call& c, const WriteRecord& w) {
  const auto key = c.request.header("idempotency-key");
  const json details = {{"before", w.before}, {"after", w.after}};
  // The event and the audit row in one round trip.
  const pg::Statement writes[] = {
      {schema::kAppendEventSql,
       {uuid_v7(), c.who.tenant_id, w.kind, c.who.user_id, w.entity_id, w.payload.dump(),
        key ? std::optional<std::string>(std::string(*key)) : std::nullopt},
       false},
      {"INSERT INTO audit_logs (tenant_id, user_id, action, entity, entity_id, request_id, ip, "
       "details) VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, '')::inet, $8)",
       {c.who.tenant_id, c.who.user_id, w.action, w.entity, w.entity_id, c.request.request_id,
        c.request.remote_address, details.dump()},
       false}};
  auto r = w.last && c.commit_early != nullptr ? c.commit_early->commit_with(writes)
                                               : c.db.pipeline(writes);
  if (!r) return r.error().wrap("append event " + w.kind);
  return schema::EventRef{std::string((*r)[0].text(0, 0)), (*r)[0].int64(0, 1)};
}

http::Response json_query(Call& c, const std::string& sql, const pg::Params& params) {
  auto rows = c.db.exec(sql, params);
  if (!rows) return db_failure(rows.error());
  return http::Response::text(std::string(rows->text(0, 0)), "application/json");
}

http::Response write_response(json fields, const schema::EventRef& ev, int status) {
  fields["event_id"] = ev.id;
  fields["seq"] = ev.seq;
  return http::Response::json(std::move(fields), status);
}

Result<std::int64_t> first_unknown_model(pg::Connection& db, const std::set<std::int64_t>& ids) {
  auto r = db.exec(
      "SELECT coalesce(min(x), 0) FROM unnest($1::bigint[]) x "
      "WHERE NOT EXISTS (SELECT 1 FROM miner_models m WHERE m.id = x)",
      {pg::array_literal(std::vector<std::int64_t>(ids.begin(), ids.end()))});
  if (!r) return r.error();
  return r->int64(0, 0);
}

Result<Network> latest_network(pg::Connection& db) {
  auto r = db.exec(
      "SELECT btc_price_usd, difficulty, coalesce(network_hashrate_ehs, 0), block_reward_btc, "
      "coalesce(fees_btc_per_block, 0), day::text FROM network_snapshots "
      "ORDER BY taken_at DESC LIMIT 1");
  if (!r) return r.error();
  if (r->empty()) return failed_precondition("no network snapshot yet: run `hashinsight seed`");
  return Network{r->float64(0, 0), r->float64(0, 1), r->float64(0, 2),
                 r->float64(0, 3), r->float64(0, 4), std::string(r->text(0, 5))};
}

Result<std::vector<PortfolioView>> portfolio_views(pg::Connection& db,
                                                   const std::vector<std::string>& users) {
  auto rows = db.exec(
      "SELECT user_id::text, json_build_object('user_id', user_id::text, 'units', units, "
      "'hashrate_ths', hashrate_ths, 'power_kw', power_kw, 'revenue_btc_day', revenue_btc_day, "
      "'revenue_usd_day', revenue_usd_day, 'cost_usd_day', cost_usd_day, 'profit_usd_day', "
      "profit_usd_day, 'breakdown', breakdown, 'computed_at', computed_at, 'through_seq', "
      "through_seq)::text, through_seq FROM user_portfolio WHERE user_id = ANY($1::bigint[])",
      {pg::array_literal(users)});
  if (!rows) return rows.error();
  std::unordered_map<std::string_view, int> row_of;
  for (int i = 0; i < rows->rows(); ++i) row_of.emplace(rows->text(i, 0), i);
  std::vector<PortfolioView> out;
  out.reserve(users.size());
  for (const auto& user : users) {
    PortfolioView v;
    v.user_id = user;
    if (auto it = row_of.find(user); it != row_of.end()) {
      v.json = std::string(rows->text(it->second, 1));
      v.through_seq = rows->int64(it->second, 2);
    } else {
      // Nothing computed yet: an empty portfolio, not an error.
      v.json = nlohmann::json({{"user_id", user},
                               {"units", 0},
                               {"hashrate_ths", 0},
                               {"power_kw", 0},
                               {"revenue_btc_day", 0},
                               {"revenue_usd_day", 0},
                               {"cost_usd_day", 0},
                               {"profit_usd_day", 0},
                               {"breakdown", nlohmann::json::array()},
                               {"computed_at", nullptr},
                               {"through_seq", 0}})
                   .dump();
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace hi::api::internal
