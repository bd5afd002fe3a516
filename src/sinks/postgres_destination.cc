// The PostgreSQL destination: batched, version-guarded upserts in one transaction per batch,
// with the sink's position.
//
// A target table has the source's columns (masked ones as text), `_version` (the commit LSN as
// bigint), `_ordinal` and `_deleted`, and the source's primary key. Per group of rows writing
// the same columns, one statement:
//
//   INSERT INTO t AS d (k, a, b, _version, _ordinal, _deleted)
//   SELECT u.k::bigint, u.a::text, ... FROM unnest($1::text[], $2::text[], ...) u(k, a, ...)
//   ON CONFLICT (k) DO UPDATE SET a = EXCLUDED.a, ..., _version = EXCLUDED._version, ...
//   WHERE (d._version, d._ordinal) < (EXCLUDED._version, EXCLUDED._ordinal)
//
// Columns an update left as unchanged TOAST are not in the row, hence not in the SET list: the
// stored value stays. Deletes write `_deleted = true` and their version (a tombstone). A TRUNCATE
// removes the rows below its version and stores it as the table's floor in _hi_sink_tables.
#include <algorithm>
#include <map>
#include <set>

#include "core/failpoint.h"
#include "core/log.h"
#include "pg/array.h"
#include "pg/connection.h"
#include "sinks/destination.h"

namespace hi::sinks {
namespace {

constexpr const char* kSchemaSql = R"sql(
CREATE TABLE IF NOT EXISTS _hi_sink_positions (
  destination text NOT NULL,
  topic       text NOT NULL,
  partition   integer NOT NULL,
  position    text NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (destination, topic, partition));
CREATE TABLE IF NOT EXISTS _hi_sink_tables (
  destination      text NOT NULL,
  target           text NOT NULL,
  truncate_lsn     bigint NOT NULL,
  truncate_ordinal integer NOT NULL,
  PRIMARY KEY (destination, target));
CREATE TABLE IF NOT EXISTS _hi_sink_schemas (
  destination    text NOT NULL,
  target         text NOT NULL,
  schema_lsn     bigint NOT NULL,
  schema_ordinal integer NOT NULL,
  PRIMARY KEY (destination, target));
CREATE TABLE IF NOT EXISTS _hi_sink_dead_letters (
  id           bigserial PRIMARY KEY,
  destination  text NOT NULL,
  source_table text NOT NULL,
  target       text NOT NULL,
  change_id    text NOT NULL,
  row_key      jsonb,
  change       jsonb,
  reason       text NOT NULL,
  parked_at    timestamptz NOT NULL DEFAULT now());
)sql";

std::string with_tls(std::string url, const TlsSpec& tls) {
  auto add = [&url](const std::string& k, const std::string& v) {
    url += (url.find('?') == std::string::npos ? '?' : '&');
    url += k + "=" + v;
  };
  if (!tls.sslmode.empty()) add("sslmode", tls.sslmode);
  if (!tls.ca_file.empty()) add("sslrootcert", tls.ca_file);
  return url;
}

// A string is its own text (no copy); anything else its JSON text, made in `scratch`.
std::string_view value_text(const nlohmann::json& v, std::string& scratch) {
  if (v.is_string()) return v.get_ref<const std::string&>();
  scratch = v.dump();
  return scratch;
}

class PostgresDestination final : public Destination {
 public:
  explicit PostgresDestination(DestinationOptions o) : options_(std::move(o)) {}

  std::string_view kind() const override { return "postgres"; }

  Status connect() override {
    if (conn_.valid() && conn_.healthy()) return {};
    auto c = pg::Connection::connect(with_tls(options_.url, options_.tls));
    if (!c) return c.error().wrap("destination " + options_.name);
    conn_ = std::move(*c);
    columns_.clear();
    if (auto s = conn_.exec_script(kSchemaSql); !s) return s;
    return {};
  }

  Result<Positions> load_positions() override {
    auto r = conn_.exec(
        "SELECT topic, partition, position FROM _hi_sink_positions WHERE destination = $1",
        {options_.name});
    if (!r) return r.error();
    Positions out;
    for (int i = 0; i < r->rows(); ++i) {
      out[{std::string(r->text(i, 0)), static_cast<std::int32_t>(r->int64(i, 1))}] =
          std::string(r->text(i, 2));
    }
    return out;
  }

  Result<TableState> table_state(const std::string& target) override {
    TableState st;
    auto r = conn_.exec(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        {conn_.quote_ident(target)});
    if (!r) return r.error();
    for (int i = 0; i < r->rows(); ++i) {
      std::string name(r->text(i, 0));
      if (name.starts_with('_') &&
          (name == kVersionColumn || name == kOrdinalColumn || name == "_deleted")) {
        st.exists = true;
        continue;
      }
      st.exists = true;
      st.columns.push_back({std::move(name), std::string(r->text(i, 1))});
    }
    auto floor = stored_version(
        "SELECT truncate_lsn, truncate_ordinal FROM _hi_sink_tables "
        "WHERE destination = $1 AND target = $2",
        target);
    if (!floor) return floor.error();
    st.truncate = *floor;
    auto schema = stored_version(
        "SELECT schema_lsn, schema_ordinal FROM _hi_sink_schemas "
        "WHERE destination = $1 AND target = $2",
        target);
    if (!schema) return schema.error();
    st.schema = *schema;
    columns_[target] = st.columns;
    return st;
  }

  // The version `select` ($1 the destination, $2 the target) returns, if any.
  Result<std::optional<Version>> stored_version(const char* select, const std::string& target) {
    auto r = conn_.exec(select, {options_.name, target});
    if (!r) return r.error();
    if (r->empty()) return std::optional<Version>();
    return std::optional<Version>(Version{static_cast<std::uint64_t>(r->int64(0, 0)),
                                          static_cast<std::uint32_t>(r->int64(0, 1))});
  }

  Status save_schema_version(const std::string& target, const Version& version) override {
    auto r = conn_.exec(
        "INSERT INTO _hi_sink_schemas VALUES ($1, $2, $3, $4) ON CONFLICT (destination, target) "
        "DO UPDATE SET schema_lsn = EXCLUDED.schema_lsn, schema_ordinal = "
        "EXCLUDED.schema_ordinal WHERE (_hi_sink_schemas.schema_lsn, "
        "_hi_sink_schemas.schema_ordinal) < (EXCLUDED.schema_lsn, EXCLUDED.schema_ordinal)",
        {options_.name, target, std::to_string(version.lsn), std::to_string(version.ordinal)});
    if (!r) return r.error().wrap("store the schema version of " + target);
    return {};
  }

  std::string column_type(std::string_view pg_type, bool masked, bool) const override {
    return masked ? "text" : postgres_column_type(pg_type);
  }

  TypeChange classify(std::string_view from, std::string_view to) const override {
    return classify_type_change(from, to);
  }

  Status create_table(const std::string& target, const std::vector<Column>& columns,
                      const std::vector<std::string>& keys) override {
    std::string sql = "CREATE TABLE IF NOT EXISTS " + conn_.quote_ident(target) + " (";
    for (const auto& c : columns) {
      sql += conn_.quote_ident(c.name) + " " + c.type;
      if (std::find(keys.begin(), keys.end(), c.name) != keys.end()) sql += " NOT NULL";
      sql += ", ";
    }
    sql +=
        "_version bigint NOT NULL, _ordinal integer NOT NULL, "
        "_deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (";
    for (std::size_t i = 0; i < keys.size(); ++i) {
      sql += (i ? ", " : "") + conn_.quote_ident(keys[i]);
    }
    sql += "))";
    return ddl(sql);
  }

  Status add_column(const std::string& target, const Column& c) override {
    return ddl("ALTER TABLE " + conn_.quote_ident(target) + " ADD COLUMN IF NOT EXISTS " +
               conn_.quote_ident(c.name) + " " + c.type);
  }

  Status drop_column(const std::string& target, const std::string& column) override {
    return ddl("ALTER TABLE " + conn_.quote_ident(target) + " DROP COLUMN IF EXISTS " +
               conn_.quote_ident(column));
  }

  Status alter_column(const std::string& target, const Column& c) override {
    const std::string col = conn_.quote_ident(c.name);
    return ddl("ALTER TABLE " + conn_.quote_ident(target) + " ALTER COLUMN " + col + " TYPE " +
               c.type + " USING " + col + "::" + c.type);
  }

  Status apply(const Batch& batch) override {
    if (auto r = conn_.exec("BEGIN"); !r) return r.error();
    Status s = apply_in_transaction(batch);
    if (!s) {
      (void)conn_.exec("ROLLBACK");
      return s;
    }
    if (auto r = conn_.exec("COMMIT"); !r) return r.error();
    return {};
  }

  Status park(const std::vector<DeadLetter>& letters) override {
    if (letters.empty()) return {};
    pg::ArrayLiteral src, tgt, ids, keys, changes, reasons;
    for (const auto& l : letters) {
      src.add(l.source_table);
      tgt.add(l.target);
      ids.add(l.change_id);
      if (l.key.is_null())
        keys.add_null();
      else
        keys.add(l.key.dump());
      if (l.change.is_null())
        changes.add_null();
      else
        changes.add(l.change.dump());
      reasons.add(l.reason);
    }
    auto r = conn_.exec(
        "INSERT INTO _hi_sink_dead_letters "
        "(destination, source_table, target, change_id, row_key, change, reason) "
        "SELECT $1, s, t, i, k::jsonb, c::jsonb, r FROM unnest($2::text[], $3::text[], "
        "$4::text[], $5::text[], $6::text[], $7::text[]) AS u(s, t, i, k, c, r)",
        {options_.name, src.str(), tgt.str(), ids.str(), keys.str(), changes.str(), reasons.str()});
    if (!r) return r.error();
    return {};
  }

  Result<std::int64_t> parked_count() override {
    auto r = conn_.exec("SELECT count(*) FROM _hi_sink_dead_letters WHERE destination = $1",
                        {options_.name});
    if (!r) return r.error();
    return r->int64(0, 0);
  }

  Result<std::vector<ParkedLetter>> parked(std::int64_t limit) override {
    auto r = conn_.exec(
        "SELECT source_table, target, change_id, coalesce(row_key::text, ''), "
        "coalesce(change::text, ''), reason, "
        "to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
        "FROM _hi_sink_dead_letters WHERE destination = $1 ORDER BY id DESC LIMIT $2::bigint",
        {options_.name, std::to_string(limit)});
    if (!r) return r.error();
    std::vector<ParkedLetter> out;
    for (int i = 0; i < r->rows(); ++i) {
      out.push_back({std::string(r->text(i, 0)), std::string(r->text(i, 1)),
                     std::string(r->text(i, 2)), std::string(r->text(i, 3)),
                     std::string(r->text(i, 4)), std::string(r->text(i, 5)),
                     std::string(r->text(i, 6))});
    }
    return out;
  }

 private:
  Status ddl(const std::string& sql) {
    auto r = conn_.exec(sql);
    if (!r) return r.error();
    columns_.clear();
    return {};
  }

  // The stored type of each column of `target` (table_state() fills it).
  const std::vector<Column>& known_columns(const std::string& target) {
    auto it = columns_.find(target);
    if (it == columns_.end()) {
      (void)table_state(target);
      it = columns_.find(target);
      if (it == columns_.end()) it = columns_.emplace(target, std::vector<Column>{}).first;
    }
    return it->second;
  }

  Status apply_in_transaction(const Batch& batch) {
    for (const auto& t : batch.tables) {
      const std::string table = conn_.quote_ident(t.target);
      if (t.truncate) {
        auto r = conn_.exec("DELETE FROM " + table + " WHERE (_version, _ordinal) < ($1, $2)",
                            {std::to_string(t.truncate->lsn), std::to_string(t.truncate->ordinal)});
        if (!r) return r.error();
        auto f = conn_.exec(
            "INSERT INTO _hi_sink_tables VALUES ($1, $2, $3, $4) ON CONFLICT (destination, "
            "target) DO UPDATE SET truncate_lsn = EXCLUDED.truncate_lsn, truncate_ordinal = "
            "EXCLUDED.truncate_ordinal WHERE (_hi_sink_tables.truncate_lsn, "
            "_hi_sink_tables.truncate_ordinal) < (EXCLUDED.truncate_lsn, "
            "EXCLUDED.truncate_ordinal)",
            {options_.name, t.target, std::to_string(t.truncate->lsn),
             std::to_string(t.truncate->ordinal)});
        if (!f) return f.error();
      }
      if (auto s = upsert(t); !s) return s;
      if (auto s = failpoint("sink.mid_batch"); !s) return s;
    }
    for (const auto& [where, position] : batch.positions) {
      auto r = conn_.exec(
          "INSERT INTO _hi_sink_positions (destination, topic, partition, position) "
          "VALUES ($1, $2, $3, $4) ON CONFLICT (destination, topic, partition) DO UPDATE SET "
          "position = EXCLUDED.position, updated_at = now()",
          {options_.name, where.first, std::to_string(where.second), position});
      if (!r) return r.error();
    }
    return {};
  }

  Status upsert(const TableWork& t) {
    const auto& known = known_columns(t.target);
    std::map<std::string, std::string> types;
    for (const auto& c : known) types[c.name] = c.type;
    // The destination's non-key columns, in name order (as a row's values are).
    std::vector<std::string> settable;
    for (const auto& [name, type] : types) {
      if (std::find(t.key_columns.begin(), t.key_columns.end(), name) == t.key_columns.end()) {
        settable.push_back(name);
      }
    }
    // Rows grouped by the columns they write (deletes write none but the key): a group's
    // signature has one byte per settable column, found in one ordered pass over the row.
    std::map<std::string, std::vector<const RowImage*>> groups;
    std::string signature;
    for (const auto& row : t.rows) {
      signature.assign(settable.size(), '0');
      if (!row.deleted) {
        std::size_t i = 0;
        for (auto it = row.values.begin(); it != row.values.end() && i < settable.size(); ++it) {
          while (i < settable.size() && settable[i] < it.key()) ++i;
          if (i < settable.size() && settable[i] == it.key()) signature[i] = '1';
        }
      }
      groups[signature].push_back(&row);
    }
    for (const auto& [sig, rows] : groups) {
      std::vector<std::string> all = t.key_columns;
      for (std::size_t i = 0; i < settable.size(); ++i) {
        if (sig[i] == '1') all.push_back(settable[i]);
      }
      std::vector<pg::ArrayLiteral> arrays(all.size() + 3);
      std::string scratch;
      for (const RowImage* row : rows) {
        for (std::size_t i = 0; i < all.size(); ++i) {
          const auto it = row->values.find(all[i]);
          if (it == row->values.end() || it->is_null()) {
            arrays[i].add_null();
          } else {
            arrays[i].add(value_text(*it, scratch));
          }
        }
        arrays[all.size()].add(static_cast<std::int64_t>(row->version.lsn));
        arrays[all.size() + 1].add(static_cast<std::int64_t>(row->version.ordinal));
        arrays[all.size() + 2].add(std::string_view(row->deleted ? "true" : "false"));
      }
      std::string insert_cols, select_cols, unnest_args, alias_cols, set;
      pg::Params params;
      for (std::size_t i = 0; i < all.size(); ++i) {
        const std::string q = conn_.quote_ident(all[i]);
        const std::string a = "c" + std::to_string(i);
        auto ty = types.find(all[i]);
        const std::string type = ty == types.end() ? "text" : ty->second;
        insert_cols += q + ", ";
        select_cols += "u." + a + "::" + type + ", ";
        unnest_args += "$" + std::to_string(i + 1) + "::text[], ";
        alias_cols += a + ", ";
        if (i >= t.key_columns.size()) set += q + " = EXCLUDED." + q + ", ";
        params.emplace_back(arrays[i].str());
      }
      const std::size_t n = all.size();
      for (std::size_t j = 0; j < 3; ++j) params.emplace_back(arrays[n + j].str());
      std::string conflict;
      for (std::size_t i = 0; i < t.key_columns.size(); ++i) {
        conflict += (i ? ", " : "") + conn_.quote_ident(t.key_columns[i]);
      }
      const std::string p = std::to_string(n + 1), p2 = std::to_string(n + 2),
                        p3 = std::to_string(n + 3);
      const std::string sql =
          "INSERT INTO " + conn_.quote_ident(t.target) + " AS d (" + insert_cols +
          "_version, _ordinal, _deleted) SELECT " + select_cols +
          "u.v::bigint, u.o::integer, u.x::boolean FROM unnest(" + unnest_args + "$" + p +
          "::text[], $" + p2 + "::text[], $" + p3 + "::text[]) AS u(" + alias_cols +
          "v, o, x) ON CONFLICT (" + conflict + ") DO UPDATE SET " + set +
          "_version = EXCLUDED._version, _ordinal = EXCLUDED._ordinal, _deleted = "
          "EXCLUDED._deleted WHERE (d._version, d._ordinal) < (EXCLUDED._version, "
          "EXCLUDED._ordinal)";
      auto r = conn_.exec(sql, params);
      if (!r) return r.error();
    }
    return {};
  }

  DestinationOptions options_;
  pg::Connection conn_;
  std::map<std::string, std::vector<Column>> columns_;
};

}  // namespace

Result<std::unique_ptr<Destination>> make_postgres_destination(const DestinationOptions& options) {
  return std::unique_ptr<Destination>(new PostgresDestination(options));
}

}  // namespace hi::sinks
