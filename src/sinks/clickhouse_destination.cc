// The ClickHouse destination (18.16, over its HTTP interface).
//
// A target table is ReplacingMergeTree(_version) ordered by the source's primary key, with
// `_version` (the commit LSN, UInt64), `_ordinal` (UInt32) and `_is_deleted` (UInt8). ClickHouse
// replaces whole rows, so every row written is complete (an update's unchanged TOAST values come
// from its old image: the source needs REPLICA IDENTITY FULL). Rows are inserted as RowBinary,
// or as JSONEachRow when a type or value needs ClickHouse's own reading (clickhouse_rows.h); a
// replay inserts copies that merges (and FINAL) collapse to the highest version, the later
// insert among equal ones. Read it as
//
//   SELECT * FROM t FINAL WHERE _is_deleted = 0
//   -- or: SELECT k, argMax(col, (_version, _ordinal)) ... GROUP BY k HAVING argMax(_is_deleted,
//   ...) = 0
//
// A TRUNCATE is a mutation deleting the rows below its version (waited for in
// system.mutations), its floor kept in _hi_sink_tables. Positions go to _hi_sink_positions
// (ReplacingMergeTree on the time of the write) after the batch's rows. ClickHouse has no
// transactions: a crash between the two replays the batch, which changes nothing.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <thread>

#include "core/failpoint.h"
#include "core/strings.h"
#include "core/time.h"
#include "http/client.h"
#include "http/uri.h"
#include "sinks/clickhouse_rows.h"
#include "sinks/destination.h"

namespace hi::sinks {
namespace {

int int_rank(std::string_view t) {
  if (t == "Int16") return 1;
  if (t == "Int32") return 2;
  if (t == "Int64") return 3;
  return 0;
}

std::string_view unwrap_nullable(std::string_view t) {
  if (t.starts_with("Nullable(") && t.ends_with(")")) return t.substr(9, t.size() - 10);
  return t;
}

class ClickHouseDestination final : public Destination {
 public:
  ClickHouseDestination(DestinationOptions o, http::Url url, std::string database)
      : options_(std::move(o)), url_(std::move(url)), database_(std::move(database)) {}

  std::string_view kind() const override { return "clickhouse"; }

  Status connect() override {
    if (auto s = request("", "CREATE DATABASE IF NOT EXISTS " + quote_clickhouse_name(database_),
                         "default");
        !s) {
      return s.error();
    }
    columns_.clear();
    for (const char* sql :
         {"CREATE TABLE IF NOT EXISTS _hi_sink_positions (destination String, topic String, "
          "partition Int32, position String, updated_us UInt64) "
          "ENGINE = ReplacingMergeTree(updated_us) ORDER BY (destination, topic, partition)",
          "CREATE TABLE IF NOT EXISTS _hi_sink_tables (destination String, target String, "
          "truncate_lsn UInt64, truncate_ordinal UInt32) "
          "ENGINE = ReplacingMergeTree(truncate_lsn) ORDER BY (destination, target)",
          "CREATE TABLE IF NOT EXISTS _hi_sink_schemas (destination String, target String, "
          "schema_lsn UInt64, schema_ordinal UInt32) "
          "ENGINE = ReplacingMergeTree(schema_lsn) ORDER BY (destination, target)",
          "CREATE TABLE IF NOT EXISTS _hi_sink_dead_letters (destination String, "
          "source_table String, target String, change_id String, row_key String, "
          "change String, reason String, parked_at DateTime) "
          "ENGINE = MergeTree ORDER BY (destination, parked_at)"}) {
      if (auto s = query(sql); !s) return s.error();
    }
    return {};
  }

  Result<Positions> load_positions() override {
    auto r = query(
        "SELECT topic, partition, position FROM _hi_sink_positions FINAL WHERE "
        "destination = " +
        quote_clickhouse_string(options_.name) + " FORMAT JSONEachRow");
    if (!r) return r.error();
    Positions out;
    for (const auto& line : lines(*r)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) return data_loss("clickhouse: unreadable position row");
      out[{j["topic"].get<std::string>(), j["partition"].get<std::int32_t>()}] =
          j["position"].get<std::string>();
    }
    return out;
  }

  Result<TableState> table_state(const std::string& target) override {
    TableState st;
    auto r = query("SELECT name, type FROM system.columns WHERE database = " +
                   quote_clickhouse_string(database_) +
                   " AND table = " + quote_clickhouse_string(target) + " FORMAT JSONEachRow");
    if (!r) return r.error();
    for (const auto& line : lines(*r)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) return data_loss("clickhouse: unreadable system.columns row");
      st.exists = true;
      const std::string name = j["name"].get<std::string>();
      if (name == kVersionColumn || name == kOrdinalColumn || name == "_is_deleted") continue;
      st.columns.push_back({name, j["type"].get<std::string>()});
    }
    auto& types = columns_[target];
    types.clear();
    for (const auto& c : st.columns) types[c.name] = c.type;
    const std::string where = " WHERE destination = " + quote_clickhouse_string(options_.name) +
                              " AND target = " + quote_clickhouse_string(target);
    auto floor = stored_version(
        "SELECT truncate_lsn AS lsn, truncate_ordinal AS ordinal FROM _hi_sink_tables FINAL" +
        where);
    if (!floor) return floor.error();
    st.truncate = *floor;
    // Rows until merged: the newest wins.
    auto schema =
        stored_version("SELECT schema_lsn AS lsn, schema_ordinal AS ordinal FROM _hi_sink_schemas" +
                       where + " ORDER BY schema_lsn DESC, schema_ordinal DESC LIMIT 1");
    if (!schema) return schema.error();
    st.schema = *schema;
    return st;
  }

  // The version in the first row of `select` (columns `lsn` and `ordinal`), if any.
  Result<std::optional<Version>> stored_version(const std::string& select) {
    auto r = query(select + " FORMAT JSONEachRow");
    if (!r) return r.error();
    for (const auto& line : lines(*r)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      // UInt64 comes quoted in JSON output (output_format_json_quote_64bit_integers).
      const auto num = [](const nlohmann::json& v) -> std::uint64_t {
        return v.is_string() ? std::stoull(v.get<std::string>()) : v.get<std::uint64_t>();
      };
      return std::optional<Version>(
          Version{num(j["lsn"]), static_cast<std::uint32_t>(num(j["ordinal"]))});
    }
    return std::optional<Version>();
  }

  Status save_schema_version(const std::string& target, const Version& version) override {
    const nlohmann::json j = {{"destination", options_.name},
                              {"target", target},
                              {"schema_lsn", version.lsn},
                              {"schema_ordinal", version.ordinal}};
    if (auto r = insert("_hi_sink_schemas", j.dump() + "\n"); !r) {
      return r.error().wrap("store the schema version of " + target);
    }
    return {};
  }

  std::string column_type(std::string_view pg_type, bool masked, bool key) const override {
    if (masked) return key ? "String" : "Nullable(String)";
    return clickhouse_column_type(pg_type, key);
  }

  TypeChange classify(std::string_view from, std::string_view to) const override {
    if (from == to) return TypeChange::kSame;
    const std::string_view f = unwrap_nullable(from), t = unwrap_nullable(to);
    if (f == t) return TypeChange::kWiden;  // Nullable added or removed
    if (t == "String") return TypeChange::kWiden;
    if (int_rank(f) > 0 && int_rank(t) > int_rank(f)) return TypeChange::kWiden;
    if (f == "Float32" && t == "Float64") return TypeChange::kWiden;
    return TypeChange::kNarrow;
  }

  Status create_table(const std::string& target, const std::vector<Column>& columns,
                      const std::vector<std::string>& keys) override {
    std::string sql = "CREATE TABLE IF NOT EXISTS " + quote_clickhouse_name(target) + " (";
    for (const auto& c : columns) sql += quote_clickhouse_name(c.name) + " " + c.type + ", ";
    sql +=
        "_version UInt64, _ordinal UInt32, _is_deleted UInt8) "
        "ENGINE = ReplacingMergeTree(_version) ORDER BY (";
    for (std::size_t i = 0; i < keys.size(); ++i)
      sql += (i ? ", " : "") + quote_clickhouse_name(keys[i]);
    sql += ")";
    return ddl(sql);
  }

  // 18.16 knows neither ADD COLUMN IF NOT EXISTS nor DROP COLUMN IF EXISTS: each step asks
  // system.columns first, so it can be repeated.
  Status add_column(const std::string& target, const Column& c) override {
    auto has = has_column(target, c.name);
    if (!has) return has.error();
    if (*has) return {};
    return ddl("ALTER TABLE " + quote_clickhouse_name(target) + " ADD COLUMN " +
               quote_clickhouse_name(c.name) + " " + c.type);
  }

  Status drop_column(const std::string& target, const std::string& column) override {
    auto has = has_column(target, column);
    if (!has) return has.error();
    if (!*has) return {};
    return ddl("ALTER TABLE " + quote_clickhouse_name(target) + " DROP COLUMN " +
               quote_clickhouse_name(column));
  }

  Status alter_column(const std::string& target, const Column& c) override {
    return ddl("ALTER TABLE " + quote_clickhouse_name(target) + " MODIFY COLUMN " +
               quote_clickhouse_name(c.name) + " " + c.type);
  }

  Status apply(const Batch& batch) override {
    for (const auto& t : batch.tables) {
      if (t.truncate) {
        if (auto s = truncate(t.target, *t.truncate); !s) return s;
      }
      if (t.rows.empty()) continue;
      const ClickHouseTypes& types = known_types(t.target);
      if (auto binary = row_binary(t.rows, types)) {
        auto r = request("INSERT INTO " + quote_clickhouse_name(t.target) + " " +
                             row_binary_columns(types) + " FORMAT RowBinary",
                         std::move(*binary));
        if (!r) return r.error();
      } else if (auto r = insert(t.target, json_each_row(t.rows, types)); !r) {
        return r.error();
      }
      if (auto s = failpoint("sink.mid_batch"); !s) return s;
    }
    if (!batch.positions.empty()) {
      std::string body;
      const auto now = static_cast<std::uint64_t>(unix_now_us());
      for (const auto& [where, position] : batch.positions) {
        nlohmann::json j = {{"destination", options_.name},
                            {"topic", where.first},
                            {"partition", where.second},
                            {"position", position},
                            {"updated_us", now}};
        body += j.dump() + "\n";
      }
      if (auto r = insert("_hi_sink_positions", body); !r) return r.error();
    }
    return {};
  }

  Status park(const std::vector<DeadLetter>& letters) override {
    if (letters.empty()) return {};
    std::string body;
    const std::int64_t now_s = unix_now_us() / 1000000;
    for (const auto& l : letters) {
      nlohmann::json j = {{"destination", options_.name},
                          {"source_table", l.source_table},
                          {"target", l.target},
                          {"change_id", l.change_id},
                          {"row_key", l.key.is_null() ? "" : l.key.dump()},
                          {"change", l.change.is_null() ? "" : l.change.dump()},
                          {"reason", l.reason},
                          {"parked_at", now_s}};
      body += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    auto r = insert("_hi_sink_dead_letters", body);
    if (!r) return r.error();
    return {};
  }

  Result<std::int64_t> parked_count() override {
    auto r = query("SELECT count() FROM _hi_sink_dead_letters WHERE destination = " +
                   quote_clickhouse_string(options_.name));
    if (!r) return r.error();
    return std::stoll(*r);
  }

  Result<std::vector<ParkedLetter>> parked(std::int64_t limit) override {
    auto r = query(
        "SELECT source_table, target, change_id, row_key, change, reason, "
        "toString(parked_at, 'UTC') AS at FROM _hi_sink_dead_letters WHERE destination = " +
        quote_clickhouse_string(options_.name) + " ORDER BY parked_at DESC LIMIT " +
        std::to_string(limit) + " FORMAT JSONEachRow");
    if (!r) return r.error();
    std::vector<ParkedLetter> out;
    for (const auto& line : lines(*r)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        return internal_error("clickhouse: unreadable dead letter row: " + line.substr(0, 200));
      }
      auto text = [&j](const char* name) { return j.value(name, std::string()); };
      // "YYYY-MM-DD hh:mm:ss" in UTC; the table keeps seconds.
      std::string at = text("at");
      if (at.size() == 19) at = at.substr(0, 10) + "T" + at.substr(11) + "Z";
      out.push_back({text("source_table"), text("target"), text("change_id"), text("row_key"),
                     text("change"), text("reason"), at});
    }
    return out;
  }

 private:
  static std::vector<std::string> lines(const std::string& body) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at < body.size()) {
      auto nl = body.find('\n', at);
      if (nl == std::string::npos) nl = body.size();
      if (nl > at) out.push_back(body.substr(at, nl - at));
      at = nl + 1;
    }
    return out;
  }

  Status ddl(const std::string& sql) {
    auto r = query(sql);
    if (!r) return r.error();
    columns_.clear();
    return {};
  }

  Result<bool> has_column(const std::string& target, const std::string& column) {
    auto r = query("SELECT count() FROM system.columns WHERE database = " +
                   quote_clickhouse_string(database_) +
                   " AND table = " + quote_clickhouse_string(target) +
                   " AND name = " + quote_clickhouse_string(column));
    if (!r) return r.error();
    return std::stoll(*r) > 0;
  }

  // The stored type of each column of `target`.
  const ClickHouseTypes& known_types(const std::string& target) {
    if (!columns_.count(target)) (void)table_state(target);
    return columns_[target];
  }

  Status truncate(const std::string& target, const Version& v) {
    const std::string where = "(_version < " + std::to_string(v.lsn) +
                              " OR (_version = " + std::to_string(v.lsn) + " AND _ordinal < " +
                              std::to_string(v.ordinal) + "))";
    auto r = query("ALTER TABLE " + quote_clickhouse_name(target) + " DELETE WHERE " + where);
    if (!r) return r.error();
    nlohmann::json j = {{"destination", options_.name},
                        {"target", target},
                        {"truncate_lsn", v.lsn},
                        {"truncate_ordinal", v.ordinal}};
    if (auto s = insert("_hi_sink_tables", j.dump() + "\n"); !s) return s.error();
    // The mutation runs in the background; later inserts are not touched by it. Wait until it
    // is done so a reader never sees rows the TRUNCATE removed.
    for (int i = 0; i < 600; ++i) {
      auto m = query("SELECT count() FROM system.mutations WHERE database = " +
                     quote_clickhouse_string(database_) +
                     " AND table = " + quote_clickhouse_string(target) + " AND is_done = 0");
      if (!m) return m.error();
      if (std::stoll(*m) == 0) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return unavailable("clickhouse: the TRUNCATE mutation of " + target + " is not done");
  }

  // One statement; the answer's body. A refusal by ClickHouse is kInvalidArgument with its
  // message (the batch's data is at fault), anything else kUnavailable.
  Result<std::string> request(const std::string& query_param, std::string body,
                              const std::string& database = "") {
    http::ClientRequest req;
    req.method = "POST";
    req.url = url_;
    req.url.target = "/?database=" + http::percent_encode(database.empty() ? database_ : database) +
                     (query_param.empty() ? "" : "&query=" + http::percent_encode(query_param));
    req.body = std::move(body);
    req.headers = {{"Content-Type", "text/plain; charset=utf-8"}};
    req.timeout = std::chrono::milliseconds(30000);
    req.max_response_bytes = std::size_t{256} << 20;
    req.ca_file = options_.tls.ca_file;
    auto r = session_.fetch(req);
    if (!r) return unavailable("clickhouse " + url_.authority() + ": " + r.error().message);
    if (r->status / 100 != 2) {
      std::string msg = r->body.substr(0, 400);
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
      if (r->status >= 500 && msg.find("Code: ") == std::string::npos) {
        return unavailable("clickhouse: HTTP " + std::to_string(r->status));
      }
      return invalid_argument("clickhouse: " + msg);
    }
    return std::move(r->body);
  }

  Result<std::string> query(const std::string& sql) { return request("", sql); }
  Result<std::string> insert(const std::string& table, std::string rows) {
    return request("INSERT INTO " + quote_clickhouse_name(table) + " FORMAT JSONEachRow",
                   std::move(rows));
  }

  DestinationOptions options_;
  http::Url url_;
  std::string database_;
  http::Session session_;
  std::map<std::string, ClickHouseTypes> columns_;
};

}  // namespace

Result<std::unique_ptr<Destination>> make_clickhouse_destination(
    const DestinationOptions& options) {
  auto url = http::parse_url(options.url);
  if (!url) return url.error().wrap("destination " + options.name + " url");
  std::string database = "default";
  const std::string path = url->target.substr(0, url->target.find('?'));
  if (path.size() > 1) database = path.substr(1);
  if (database.find('/') != std::string::npos) {
    return invalid_argument("destination " + options.name + ": the URL path names the database");
  }
  return std::unique_ptr<Destination>(
      new ClickHouseDestination(options, std::move(*url), std::move(database)));
}

}  // namespace hi::sinks
