#include "consume/audit_worker.h"

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "consume/dlq.h"
#include "pg/transaction.h"
#include "redis/client.h"

namespace hi::consume {
namespace {

using nlohmann::json;

constexpr const char* kInsertSql = R"sql(
INSERT INTO change_audit_log (tenant_id, event_id, source_table, operation, row_key, before,
                              after, changed_columns, unchanged_columns, lsn, xid, commit_ts,
                              correlation_id)
SELECT $1::bigint, r.event_id, r.source_table, r.operation, r.row_key, r.before, r.after,
       r.changed_columns, r.unchanged_columns, r.lsn, r.xid, r.commit_ts, r.correlation_id
  FROM jsonb_to_recordset($2::jsonb) AS r(event_id text, source_table text, operation text,
       row_key jsonb, before jsonb, after jsonb, changed_columns text[],
       unchanged_columns text[], lsn text, xid bigint, commit_ts timestamptz,
       correlation_id text)
ON CONFLICT (tenant_id, event_id) DO NOTHING
)sql";

// Fields read without nlohmann's throwing value(): a missing field, or one of another type
// than expected, reads as null / the fallback (parse_event has rejected malformed envelopes).
const json& field(const json& object, const char* name) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(name);
  return it == object.end() ? kNull : *it;
}

std::string text_field(const json& object, const char* name, const std::string& fallback) {
  const json& v = field(object, name);
  return v.is_string() ? v.get<std::string>() : fallback;
}

std::string operation(const std::string& op) {
  if (op == "c") return "insert";
  if (op == "u") return "update";
  if (op == "d") return "delete";
  if (op == "t") return "truncate";
  if (op == "r") return "snapshot";  // a row read by `hashinsight snapshot`
  return "";
}

json changed_columns(const std::string& op, const json& before, const json& after) {
  json out = json::array();
  if (op == "insert" || op == "snapshot" || (op == "update" && !before.is_object())) {
    if (after.is_object()) {
      for (auto it = after.begin(); it != after.end(); ++it) out.push_back(it.key());
    }
  } else if (op == "delete") {
    if (before.is_object()) {
      for (auto it = before.begin(); it != before.end(); ++it) out.push_back(it.key());
    }
  } else if (op == "update" && after.is_object()) {
    std::set<std::string> names;
    for (auto it = after.begin(); it != after.end(); ++it) names.insert(it.key());
    for (auto it = before.begin(); it != before.end(); ++it) names.insert(it.key());
    for (const auto& n : names) {
      const bool in_a = after.contains(n);
      const bool in_b = before.contains(n);
      if (in_a && in_b && after[n] == before[n]) continue;
      if (!in_a) continue;  // unchanged TOAST or dropped column: not a change we saw
      out.push_back(n);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> audit_topics(const std::vector<std::string>& tables,
                                      const bus::BusOptions& bus) {
  std::vector<std::string> topics;
  for (const auto& t : tables) {
    topics.push_back("cdc." + (t.find('.') == std::string::npos ? "public." + t : t));
  }
  if (!topics.empty()) return topics;
  if (bus.kind == bus::BusKind::kKafka) return {"^cdc\\..*"};
  auto client = redis::Client::connect(bus.redis_url);
  if (!client) return topics;
  std::string cursor = "0";
  do {
    auto r = client->command({"SCAN", cursor, "MATCH", "cdc.*", "TYPE", "stream", "COUNT", "1000"});
    if (!r || r->is_error() || r->elements.size() < 2) break;
    cursor = r->elements[0].str;
    for (const auto& e : r->elements[1].elements) topics.push_back(e.str);
  } while (cursor != "0");
  return topics;
}

Status AuditHandler::resolve(pg::Connection& conn, std::vector<Event>& events) {
  std::map<std::pair<std::string, std::string>, std::string> known;  // (topic, key) -> tenant
  for (auto& e : events) {
    if (e.delivery == nullptr || e.delivery->topic.rfind("cdc.", 0) != 0) continue;
    const auto row = std::make_pair(e.delivery->topic, e.delivery->key);
    if (e.tenant_id != "0") {
      known[row] = e.tenant_id;
      continue;
    }
    if (e.kind != "cdc.d" || e.delivery->key.empty()) continue;
    if (auto it = known.find(row); it != known.end()) {
      e.tenant_id = it->second;
      continue;
    }
    auto r = conn.exec("SELECT hi_audit_tenant_of($1, $2::jsonb)",
                       {e.delivery->topic.substr(4), e.delivery->key});
    if (!r) return r.error().wrap("tenant of deleted row");
    if (!r->empty() && !r->is_null(0, 0)) e.tenant_id = std::string(r->text(0, 0));
  }
  return {};
}

Result<ApplyOutcome> AuditHandler::apply(pg::Connection& conn, const TenantBatch& batch) {
  json rows = json::array();
  for (const auto& u : batch.users) {
    for (const Event* e : u.events) {
      const json v = json::parse(e->delivery->value, nullptr, false);
      if (!v.is_object()) return invalid_argument("change " + e->id + ": value is not an object");
      const std::string op = operation(text_field(v, "op", ""));
      if (op.empty()) return invalid_argument("change " + e->id + ": unknown op");
      const json& before = field(v, "before");
      const json& after = field(v, "after");
      const json& source = field(v, "source");
      std::string table = text_field(source, "table", "");
      if (table.empty()) table = e->delivery->topic.substr(4);  // "cdc." prefix
      json key = json::parse(e->delivery->key, nullptr, false);
      if (!key.is_object()) key = nullptr;
      rows.push_back(
          {{"event_id", e->id},
           {"source_table", table},
           {"operation", op},
           {"row_key", key},
           {"before", before},
           {"after", after},
           {"changed_columns", changed_columns(op, before, after)},
           {"unchanged_columns",
            field(v, "unchanged").is_array() ? field(v, "unchanged") : json::array()},
           {"lsn", text_field(source, "commit_lsn", e->lsn)},
           {"xid", field(source, "xid").is_number_integer() ? field(source, "xid") : json()},
           {"commit_ts",
            field(source, "commit_ts").is_string() ? field(source, "commit_ts") : json()},
           {"correlation_id", text_field(source, "commit_lsn", e->lsn)}});
    }
  }
  auto r = conn.exec(kInsertSql,
                     {batch.tenant_id, rows.dump(-1, ' ', false, json::error_handler_t::replace)});
  if (!r) return r.error().wrap("insert change_audit_log");
  return ApplyOutcome{};
}

Result<std::vector<std::string>> audit_query(pg::Connection& app, const AuditQuery& q) {
  std::vector<std::string> tenants;
  if (q.tenant) {
    tenants.push_back(*q.tenant);
  } else {
    auto all = all_tenants(app);
    if (!all) return all.error();
    tenants = std::move(*all);
  }
  std::string table = q.table;
  if (!table.empty() && table.find('.') == std::string::npos) table = "public." + table;
  const std::string sql =
      "SELECT json_build_object('id', id, 'tenant_id', tenant_id, 'event_id', event_id, "
      "'table', source_table, 'op', operation, 'key', row_key, 'before', before, 'after', after, "
      "'changed_columns', changed_columns, 'unchanged_columns', unchanged_columns, 'lsn', lsn, "
      "'xid', xid, 'commit_ts', to_char(commit_ts AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'correlation_id', correlation_id, "
      "'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text "
      "FROM change_audit_log WHERE ($1 = '' OR source_table = $1) "
      "AND ($2 = '' OR row_key @> $2::jsonb) "
      "AND ($3::timestamptz IS NULL OR commit_ts >= $3::timestamptz) "
      "AND ($4::timestamptz IS NULL OR commit_ts < $4::timestamptz) "
      "ORDER BY commit_ts, id LIMIT $5::bigint";
  std::vector<std::string> out;
  for (const auto& t : tenants) {
    if (static_cast<std::int64_t>(out.size()) >= q.limit) break;
    pg::Transaction tx(app);
    if (auto s = tx.begin(t); !s) return s.error();
    auto r = app.exec(sql, {table, q.key, q.since, q.until,
                            std::to_string(q.limit - static_cast<std::int64_t>(out.size()))});
    if (!r) return r.error().wrap("audit query");
    for (int i = 0; i < r->rows(); ++i) out.emplace_back(r->text(i, 0));
    (void)tx.commit();
  }
  return out;
}

}  // namespace hi::consume
