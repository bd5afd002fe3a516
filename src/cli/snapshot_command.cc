// `hashinsight snapshot start --table schema.table [--chunk N] [--where SQL]`,
// `snapshot status [ID] [--follow]` and `snapshot cancel ID`: requests for the relay's
// incremental snapshots (cdc/snapshot.h), made by the owner as rows of relay_snapshots.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/common.h"
#include "pg/connection.h"

namespace hi::cli {
namespace {

struct StartFlags {
  std::string table;
  int chunk = 10000;
  std::string where;
};

struct StatusFlags {
  std::int64_t id = 0;
  bool follow = false;
};

std::string qualified_name(const std::string& table) {
  return table.find('.') == std::string::npos ? "public." + table : table;
}

// Refuses what the relay would refuse, with the reason, before a request is written.
void check_request(pg::Connection& owner, const Config& cfg, const std::string& table,
                   const std::string& where) {
  auto rel = owner.exec("SELECT to_regclass($1)::text", {table});
  if (!rel || rel->is_null(0, 0)) fail(kExitUsage, "snapshot: no table " + table);
  auto captured = owner.exec(
      "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname || '.' || "
      "tablename = $2",
      {cfg.str("RELAY_PUBLICATION") + "_capture", table});
  if (!captured) fail(kExitFailure, captured.error().message);
  if (captured->empty()) {
    fail(kExitUsage, "snapshot: " + table +
                         " is not a captured table: add it to RELAY_CAPTURE_TABLES and run "
                         "`hashinsight migrate` (the relay snapshots what it captures)");
  }
  auto pk =
      owner.exec("SELECT 1 FROM pg_index WHERE indrelid = $1::regclass AND indisprimary", {table});
  if (!pk) fail(kExitFailure, pk.error().message);
  if (pk->empty()) {
    fail(kExitUsage, "snapshot: " + table +
                         " has no primary key: a snapshot reads a table in primary-key order");
  }
  if (where.empty()) return;
  // The condition runs in the relay's read-only transactions, with its rights: try it so.
  (void)owner.exec("BEGIN READ ONLY");
  (void)owner.exec("SET LOCAL ROLE hashinsight_relay");
  auto probe = owner.exec("SELECT 1 FROM " + table + " WHERE (" + where + ") LIMIT 0", {});
  (void)owner.exec("ROLLBACK");
  if (!probe) fail(kExitUsage, "snapshot: --where: " + probe.error().message);
}

nlohmann::json row_json(const pg::QueryResult& r, int i) {
  nlohmann::json j = nlohmann::json::parse(r.text(i, 0));
  return j;
}

// Rows done, estimated, rate and ETA of one relay_snapshots row, for a terminal.
std::string progress_line(const nlohmann::json& s) {
  const double done = s.value("rows_done", 0.0);
  const double est = s["rows_estimated"].is_number() ? s["rows_estimated"].get<double>() : 0.0;
  const double secs = s["elapsed_s"].is_number() ? s["elapsed_s"].get<double>() : 0.0;
  const double rate = secs > 0 ? done / secs : 0.0;
  char buf[512];
  std::string eta = "-";
  if (s["state"] == "running" && rate > 0 && est > done) {
    eta = std::to_string(static_cast<long long>((est - done) / rate)) + " s";
  }
  std::snprintf(buf, sizeof buf,
                "snapshot %lld %s %-9s rows %.0f/%.0f (%.0f%%) chunks %lld excluded %lld "
                "%.0f rows/s eta %s",
                static_cast<long long>(s.value("id", 0)), s.value("table_name", "").c_str(),
                s.value("state", "").c_str(), done, est, est > 0 ? 100.0 * done / est : 0.0,
                static_cast<long long>(s.value("chunks_done", 0)),
                static_cast<long long>(s.value("keys_excluded", 0)), rate, eta.c_str());
  std::string line = buf;
  if (s["error"].is_string()) line += " error: " + s["error"].get<std::string>();
  return line;
}

constexpr const char* kStatusSql =
    "SELECT json_build_object('id', id, 'table_name', table_name, 'chunk_size', chunk_size, "
    "'where_clause', where_clause, 'state', state, 'last_key', last_key, 'rows_done', rows_done, "
    "'rows_estimated', rows_estimated, 'chunks_done', chunks_done, 'keys_excluded', "
    "keys_excluded, 'requested_at', requested_at, 'started_at', started_at, 'finished_at', "
    "finished_at, 'error', error, 'elapsed_s', extract(epoch FROM coalesce(finished_at, "
    "updated_at, now()) - started_at))::text FROM relay_snapshots ";

}  // namespace

void add_snapshot_command(CLI::App& app, Flags& flags) {
  auto* snap =
      app.add_subcommand("snapshot", "snapshots of captured tables: start, status, cancel");
  snap->require_subcommand(1);

  auto sf = std::make_shared<StartFlags>();
  auto* start = snap->add_subcommand(
      "start", "ask the relay to publish a captured table's rows as op \"r\" events, in chunks");
  start->add_option("--table", sf->table, "schema.table (captured: RELAY_CAPTURE_TABLES)")
      ->required();
  start->add_option("--chunk", sf->chunk, "rows per chunk")->check(CLI::Range(1, 1000000));
  start->add_option("--where", sf->where, "only rows matching this SQL condition");
  start->callback([&flags, sf] {
    const Config cfg = load_config(flags);
    auto owner = connect_owner(cfg);
    const std::string table = qualified_name(sf->table);
    check_request(owner, cfg, table, sf->where);
    auto r = owner.exec(
        "INSERT INTO relay_snapshots (table_name, chunk_size, where_clause) VALUES ($1, $2, $3) "
        "RETURNING id",
        {table, std::to_string(sf->chunk), sf->where.empty() ? pg::Param() : pg::Param(sf->where)});
    if (!r) fail(kExitFailure, "snapshot start: " + r.error().message);
    std::printf("%s\n", nlohmann::json{{"id", r->int64(0, 0)}, {"table", table}}.dump().c_str());
    if (::isatty(STDERR_FILENO)) {
      std::fprintf(stderr,
                   "requested snapshot %lld of %s; follow it with `hashinsight snapshot "
                   "status %lld --follow`\n",
                   static_cast<long long>(r->int64(0, 0)), table.c_str(),
                   static_cast<long long>(r->int64(0, 0)));
    }
  });

  auto tf = std::make_shared<StatusFlags>();
  auto* status = snap->add_subcommand(
      "status", "snapshots (JSON): state, rows done and estimated; --follow shows progress");
  status->add_option("id", tf->id, "one snapshot (default: the latest 20)");
  status->add_flag("--follow", tf->follow,
                   "print progress until the snapshot ends (the latest one without ID)");
  status->callback([&flags, tf] {
    const Config cfg = load_config(flags);
    auto owner = connect_owner(cfg);
    if (!tf->follow) {
      auto r = tf->id > 0
                   ? owner.exec(std::string(kStatusSql) + "WHERE id = $1", {std::to_string(tf->id)})
                   : owner.exec(std::string(kStatusSql) + "ORDER BY id DESC LIMIT 20");
      if (!r) fail(kExitFailure, "snapshot status: " + r.error().message);
      if (tf->id > 0 && r->empty())
        fail(kExitUsage, "snapshot status: no snapshot " + std::to_string(tf->id));
      nlohmann::json out = nlohmann::json::array();
      for (int i = 0; i < r->rows(); ++i) out.push_back(row_json(*r, i));
      std::printf("%s\n", (tf->id > 0 ? out[0] : out).dump().c_str());
      return;
    }
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    std::string last;
    for (;;) {
      auto r = tf->id > 0
                   ? owner.exec(std::string(kStatusSql) + "WHERE id = $1", {std::to_string(tf->id)})
                   : owner.exec(std::string(kStatusSql) + "ORDER BY id DESC LIMIT 1");
      if (!r) fail(kExitFailure, "snapshot status: " + r.error().message);
      if (r->empty()) fail(kExitUsage, "snapshot status: no snapshot");
      const nlohmann::json s = row_json(*r, 0);
      const std::string line = progress_line(s);
      if (tty) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
      } else if (line != last) {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
      std::fflush(stderr);
      last = line;
      const std::string state = s.value("state", "");
      if (state != "requested" && state != "running") {
        if (tty) std::fprintf(stderr, "\n");
        std::printf("%s\n", s.dump().c_str());
        if (state != "done") throw Exit{kExitFailure};
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });

  auto cancel_id = std::make_shared<std::int64_t>(0);
  auto* cancel = snap->add_subcommand("cancel", "stop a snapshot after its current chunk");
  cancel->add_option("id", *cancel_id, "the snapshot")->required();
  cancel->callback([&flags, cancel_id] {
    const Config cfg = load_config(flags);
    auto owner = connect_owner(cfg);
    auto r = owner.exec(
        "UPDATE relay_snapshots SET state = 'cancelled', finished_at = now(), updated_at = now() "
        "WHERE id = $1 AND state IN ('requested', 'running') RETURNING table_name",
        {std::to_string(*cancel_id)});
    if (!r) fail(kExitFailure, "snapshot cancel: " + r.error().message);
    if (r->empty()) {
      fail(kExitUsage, "snapshot cancel: snapshot " + std::to_string(*cancel_id) +
                           " is not requested or running");
    }
    std::printf("%s\n", nlohmann::json{{"id", *cancel_id}, {"state", "cancelled"}}.dump().c_str());
  });
}

}  // namespace hi::cli
