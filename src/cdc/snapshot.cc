// The snapshot reader: requests, chunks, watermarks, progress (see snapshot.h).
#include "cdc/snapshot.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <random>

#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "pg/connection.h"

namespace hi::cdc {
namespace {

constexpr std::int64_t kWrap = std::int64_t{1} << 32;

std::string quoted_table(pg::Connection& conn, const std::string& table) {
  const auto dot = table.find('.');
  return conn.quote_ident(table.substr(0, dot)) + "." + conn.quote_ident(table.substr(dot + 1));
}

}  // namespace

struct SnapshotReader::Request {
  std::int64_t id = 0;
  std::string table;
  int chunk_size = 10000;
  std::string where;
  std::string last_key;  // JSON object or empty
  std::int64_t rows_done = 0;
  std::int64_t chunks_done = 0;
};

Result<ReadVisibility> ReadVisibility::parse(std::string_view text) {
  ReadVisibility v;
  auto number = [](std::string_view s, std::uint64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  const auto a = text.find(':');
  const auto b = a == std::string_view::npos ? a : text.find(':', a + 1);
  if (b == std::string_view::npos || !number(text.substr(0, a), v.xmin) ||
      !number(text.substr(a + 1, b - a - 1), v.xmax)) {
    return invalid_argument("not a snapshot: " + std::string(text));
  }
  std::string_view rest = text.substr(b + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::uint64_t x = 0;
    if (!number(rest.substr(0, comma), x))
      return invalid_argument("not a snapshot: " + std::string(text));
    v.in_progress.push_back(x);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return v;
}

bool ReadVisibility::visible(std::uint32_t xid) const {
  // Widen to 64 bits in xmax's epoch: a 32-bit xid is at most 2^31 transactions from it.
  std::int64_t full = static_cast<std::int64_t>((xmax & ~std::uint64_t{0xffffffff}) | xid);
  if (full > static_cast<std::int64_t>(xmax) + (kWrap / 2)) full -= kWrap;
  if (full < static_cast<std::int64_t>(xmax) - (kWrap / 2)) full += kWrap;
  if (full < 0) return true;
  const auto x = static_cast<std::uint64_t>(full);
  if (x < xmin) return true;
  if (x >= xmax) return false;
  for (auto p : in_progress) {
    if (p == x) return false;
  }
  return true;
}

std::string snapshot_key(const pg::Tuple& row, const std::vector<int>& key_columns) {
  std::string k;
  for (int c : key_columns) {
    if (c < 0 || static_cast<std::size_t>(c) >= row.columns.size()) {
      k += "?:";
      continue;
    }
    const auto& v = row.columns[static_cast<std::size_t>(c)].data;
    k += std::to_string(v.size());
    k += ':';
    k += v;
  }
  return k;
}

SnapshotReader::SnapshotReader(SnapshotOptions options, Metrics& metrics, Logger log)
    : options_(std::move(options)),
      metrics_(metrics),
      log_(std::move(log)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      // Attempts name watermarks in the WAL: a new range per process, so a watermark replayed
      // from before a restart never matches.
      next_attempt_(static_cast<std::uint64_t>(std::random_device()()) << 20),
      rows_total_(
          metrics.counter("hashinsight_snapshot_rows_total", "Snapshot rows published (op r)")),
      excluded_total_(metrics.counter("hashinsight_snapshot_keys_excluded_total",
                                      "Snapshot rows left to the stream: their key changed while "
                                      "their chunk was read")),
      chunks_total_(metrics.counter("hashinsight_snapshot_chunks_total",
                                    "Snapshot chunks published and recorded")),
      rows_done_(
          metrics.gauge("hashinsight_snapshot_rows_done", "Rows done by the running snapshot")),
      rows_estimated_(metrics.gauge("hashinsight_snapshot_rows_estimated",
                                    "Rows estimated for the running snapshot")),
      thread_([this](std::stop_token st) { run(st); }) {}

SnapshotReader::~SnapshotReader() {
  thread_.request_stop();
  cv_.notify_all();
}

std::optional<SnapshotReader::Event> SnapshotReader::take() {
  if (!pending_.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(mu_);
  std::uint64_t drained;
  (void)!::read(wake_.get(), &drained, sizeof drained);
  if (out_.empty()) {
    pending_.store(false, std::memory_order_release);
    return std::nullopt;
  }
  Event e = std::move(out_.front());
  out_.pop_front();
  pending_.store(!out_.empty(), std::memory_order_release);
  return e;
}

void SnapshotReader::post(Event event) {
  {
    std::lock_guard lock(mu_);
    out_.push_back(std::move(event));
    pending_.store(true, std::memory_order_release);
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void SnapshotReader::poke(std::int64_t id) {
  {
    std::lock_guard lock(mu_);
    poked_ = true;
    poked_id_ = std::max(poked_id_, id);
  }
  cv_.notify_all();
}

void SnapshotReader::go(std::uint64_t attempt) {
  {
    std::lock_guard lock(mu_);
    go_attempt_ = attempt;
  }
  cv_.notify_all();
}

void SnapshotReader::published(std::uint64_t attempt, std::uint64_t excluded) {
  {
    std::lock_guard lock(mu_);
    published_attempt_ = attempt;
    excluded_ = excluded;
  }
  cv_.notify_all();
}

void SnapshotReader::abandon() {
  {
    std::lock_guard lock(mu_);
    abandoned_ = true;
    out_.clear();
    pending_.store(false, std::memory_order_release);
  }
  cv_.notify_all();
}

bool SnapshotReader::wait_for(std::stop_token stop, std::uint64_t attempt, bool for_published) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, stop, [&] {
    return abandoned_ || (for_published ? published_attempt_ == attempt : go_attempt_ == attempt);
  });
  if (stop.stop_requested() || abandoned_) {
    abandoned_ = false;
    return false;
  }
  return true;
}

Result<pg::Lsn> SnapshotReader::emit(const std::string& content) {
  // Transactional, in a transaction of its own: its commit flushes the WAL, so the walsender
  // sends the watermark at once (a non-transactional message waits in the WAL buffers for the
  // next flush, up to wal_writer_delay on an idle server).
  auto r = conn_->exec("SELECT pg_logical_emit_message(true, $1, $2)::text",
                       {std::string(kSnapshotPrefix), content});
  if (!r) return r.error().wrap("snapshot watermark");
  return pg::Lsn::parse(r->text(0, 0));
}

void SnapshotReader::run(std::stop_token stop) {
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  bool look = true;  // at start and after an error: look for unfinished requests
  while (!stop.stop_requested()) {
    if (!look) {
      std::unique_lock lock(mu_);
      cv_.wait(lock, stop, [&] { return poked_; });
      if (stop.stop_requested()) break;
    }
    {
      std::lock_guard lock(mu_);
      poked_ = false;
    }
    Status st = work(stop);
    if (stop.stop_requested()) break;
    if (!st) {
      const auto delay = backoff.next();
      log_.warn("snapshot interrupted; resuming from its last recorded chunk",
                {{"error", st.error().message}, {"backoff_ms", delay.count()}});
      conn_.reset();
      look = true;
      if (!sleep_for(stop, delay)) break;
      continue;
    }
    backoff.reset();
    look = false;
  }
}

Status SnapshotReader::mark_failed(std::int64_t id, const std::string& error) {
  log_.error("snapshot failed", {{"id", id}, {"error", error}});
  auto r = conn_->exec(
      "UPDATE relay_snapshots SET state = 'failed', error = $2, finished_at = now(), "
      "updated_at = now() WHERE id = $1 AND state IN ('requested', 'running')",
      {std::to_string(id), error});
  return r ? Status() : Status(r.error());
}

Status SnapshotReader::work(std::stop_token stop) {
  if (!conn_ || !conn_->healthy()) {
    auto c = pg::Connection::connect(options_.database_url);
    if (!c) return c.error();
    conn_ = std::make_unique<pg::Connection>(std::move(*c));
  }
  std::int64_t waited_for = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!stop.stop_requested()) {
    auto r = conn_->exec(
        "SELECT id, table_name, chunk_size, coalesce(where_clause, ''), "
        "coalesce(last_key::text, ''), rows_done, chunks_done FROM relay_snapshots "
        "WHERE state IN ('requested', 'running') ORDER BY id LIMIT 1");
    if (!r) return r.error().wrap("snapshot requests");
    if (r->empty()) {
      // A request seen in the stream may not be visible yet (its commit is in the WAL, its
      // transaction not yet ended): look again for a moment.
      std::int64_t poked = 0;
      {
        std::lock_guard lock(mu_);
        poked = poked_id_;
      }
      if (poked > waited_for) {
        auto seen =
            conn_->exec("SELECT 1 FROM relay_snapshots WHERE id = $1", {std::to_string(poked)});
        if (!seen) return seen.error();
        if (!seen->empty()) {
          waited_for = poked;  // visible now (perhaps only since the first query): look again
          continue;
        }
        if (std::chrono::steady_clock::now() < give_up) {
          if (!sleep_for(stop, std::chrono::milliseconds(20))) return {};
          continue;
        }
      }
      waited_for = poked;
      post(Event{});  // kIdle
      return {};
    }
    Request req;
    req.id = r->int64(0, 0);
    req.table = std::string(r->text(0, 1));
    req.chunk_size = static_cast<int>(r->int64(0, 2));
    req.where = std::string(r->text(0, 3));
    req.last_key = std::string(r->text(0, 4));
    req.rows_done = r->int64(0, 5);
    req.chunks_done = r->int64(0, 6);
    Status st = run_snapshot(req, stop);
    if (!st && (st.error().code == Code::kInvalidArgument ||
                st.error().code == Code::kFailedPrecondition)) {
      if (auto m = mark_failed(req.id, st.error().message); !m) return m;
      post(Event{});  // kIdle
      continue;
    }
    if (!st) return st;
  }
  return {};
}

Status SnapshotReader::run_snapshot(Request& req, std::stop_token stop) {
  pg::Connection& conn = *conn_;
  if (req.table.find('.') == std::string::npos) req.table = "public." + req.table;
  if (std::find(options_.capture_tables.begin(), options_.capture_tables.end(), req.table) ==
      options_.capture_tables.end()) {
    return failed_precondition("table " + req.table +
                               " is not captured by this relay (RELAY_CAPTURE_TABLES)");
  }
  const std::string qualified = quoted_table(conn, req.table);
  // Columns and primary key, in the table's order and the key's order.
  auto cols = conn.exec(
      "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::bigint, a.atttypmod, "
      "coalesce((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY k(att, n) "
      "WHERE k.att = a.attnum), 0) "
      "FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
      "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
      "ORDER BY a.attnum",
      {qualified});
  if (!cols) return cols.error().wrap("snapshot of " + req.table);
  pg::Relation rel;
  const auto dot = req.table.find('.');
  rel.schema = req.table.substr(0, dot);
  rel.name = req.table.substr(dot + 1);
  std::vector<std::pair<int, int>> key_order;  // (position in the key, column index)
  std::vector<std::string> key_types;
  for (int i = 0; i < cols->rows(); ++i) {
    pg::RelationColumn c;
    c.name = std::string(cols->text(i, 0));
    c.type_oid = static_cast<std::uint32_t>(cols->int64(i, 2));
    c.type_modifier = static_cast<std::int32_t>(cols->int64(i, 3));
    c.key = cols->int64(i, 4) > 0;
    if (c.key) key_order.emplace_back(static_cast<int>(cols->int64(i, 4)), i);
    rel.columns.push_back(std::move(c));
  }
  if (key_order.empty()) {
    return invalid_argument("table " + req.table +
                            " has no primary key: a snapshot reads it in primary-key order "
                            "(add one, or capture it without a snapshot)");
  }
  std::sort(key_order.begin(), key_order.end());
  std::vector<int> key_columns;
  std::vector<std::string> key_names;
  std::string key_list, key_params;
  for (std::size_t k = 0; k < key_order.size(); ++k) {
    const int i = key_order[k].second;
    key_columns.push_back(i);
    key_names.push_back(rel.columns[static_cast<std::size_t>(i)].name);
    key_list += (k ? ", " : "") + conn.quote_ident(key_names.back());
    key_params += (k ? ", $" : "$") + std::to_string(k + 1) + "::" + std::string(cols->text(i, 1));
  }
  std::string select_list;
  for (const auto& c : rel.columns) {
    select_list += (select_list.empty() ? "" : ", ") + conn.quote_ident(c.name);
  }
  const std::string where = req.where.empty() ? "" : "(" + req.where + ")";
  const std::string limit =
      " ORDER BY " + key_list + " LIMIT " + std::to_string(req.chunk_size + 1);
  const std::string first_sql = "SELECT " + select_list + " FROM " + qualified +
                                (where.empty() ? "" : " WHERE " + where) + limit;
  const std::string next_sql = "SELECT " + select_list + " FROM " + qualified + " WHERE (" +
                               key_list + ") > (" + key_params + ")" +
                               (where.empty() ? "" : " AND " + where) + limit;

  // Rows estimated: the planner's count, or a count when the table was never analysed.
  auto est = conn.exec("SELECT reltuples::bigint, relpages FROM pg_class WHERE oid = $1::regclass",
                       {qualified});
  if (!est) return est.error();
  std::int64_t estimated = est->int64(0, 0);
  if (estimated < 0 || (estimated == 0 && est->int64(0, 1) == 0)) {
    auto n = conn.exec("SELECT count(*) FROM " + qualified);
    if (!n) return n.error();
    estimated = n->int64(0, 0);
  }
  auto mark = conn.exec(
      "UPDATE relay_snapshots SET state = 'running', started_at = coalesce(started_at, now()), "
      "rows_estimated = $2, updated_at = now() WHERE id = $1 AND state IN ('requested', 'running')",
      {std::to_string(req.id), std::to_string(estimated)});
  if (!mark) return mark.error();
  if (mark->affected() == 0) return {};  // cancelled meanwhile
  log_.info(req.rows_done > 0 ? "snapshot resumed" : "snapshot started",
            {{"id", req.id},
             {"table", req.table},
             {"chunk_size", req.chunk_size},
             {"rows_done", req.rows_done},
             {"rows_estimated", estimated}});
  rows_estimated_.Set(static_cast<double>(estimated));
  rows_done_.Set(static_cast<double>(req.rows_done));

  pg::Params last;
  if (!req.last_key.empty()) {
    auto j = nlohmann::json::parse(req.last_key, nullptr, false);
    for (const auto& name : key_names) {
      if (!j.is_object() || !j.contains(name) || !j[name].is_string()) {
        return invalid_argument("relay_snapshots " + std::to_string(req.id) +
                                ": last_key lacks key column " + name);
      }
      last.emplace_back(j[name].get<std::string>());
    }
  }

  for (;;) {
    if (stop.stop_requested()) return {};
    auto state =
        conn.exec("SELECT state FROM relay_snapshots WHERE id = $1", {std::to_string(req.id)});
    if (!state) return state.error();
    if (state->empty() || state->text(0, 0) != "running") {
      log_.info("snapshot stopped",
                {{"id", req.id}, {"state", state->empty() ? "deleted" : state->text(0, 0)}});
      post(Event{});  // kIdle
      return {};
    }
    const std::int64_t t_start = mono_now_ns();
    const std::uint64_t attempt = ++next_attempt_;
    post({Event::Kind::kArm, attempt, req.table, key_names, nullptr});
    if (!wait_for(stop, attempt, false)) continue;  // abandoned (or stopping): arm again

    const std::int64_t t_go = mono_now_ns();
    auto low = emit("low:" + std::to_string(attempt));
    if (!low) return low.error();
    if (auto f = failpoint("snapshot.after_low_watermark"); !f) return f;

    auto chunk = std::make_unique<SnapshotChunk>();
    chunk->attempt = attempt;
    chunk->low = *low;
    chunk->relation = rel;
    if (auto b = conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !b) {
      return b.error();
    }
    auto vis = conn.exec("SELECT pg_current_snapshot()::text");
    auto rows = vis ? (last.empty() ? conn.exec(first_sql) : conn.exec(next_sql, last))
                    : Result<pg::QueryResult>(vis.error());
    (void)conn.exec(rows ? "COMMIT" : "ROLLBACK");
    if (!rows) return rows.error().wrap("snapshot chunk of " + req.table);
    auto v = ReadVisibility::parse(vis->text(0, 0));
    if (!v) return v.error();
    chunk->visibility = std::move(*v);
    chunk->read_unix_us = unix_now_us();

    const int n = std::min(rows->rows(), req.chunk_size);
    chunk->ref = {req.id, req.chunks_done + 1, rows->rows() <= req.chunk_size};
    chunk->rows.reserve(static_cast<std::size_t>(n));
    chunk->keys.reserve(static_cast<std::size_t>(n));
    pg::Tuple t;
    t.columns.resize(rel.columns.size());
    for (int i = 0; i < n; ++i) {
      for (std::size_t c = 0; c < rel.columns.size(); ++c) {
        auto& col = t.columns[c];
        if (rows->is_null(i, static_cast<int>(c))) {
          col.kind = pg::Column::Kind::kNull;
          col.data.clear();
        } else {
          col.kind = pg::Column::Kind::kText;
          col.data.assign(rows->text(i, static_cast<int>(c)));
        }
      }
      chunk->keys.push_back(snapshot_key(t, key_columns));
      chunk->rows.push_back(snapshot_row(rel, t));
    }
    nlohmann::json last_key = nlohmann::json::object();
    pg::Params next_last;
    if (n > 0) {
      for (std::size_t k = 0; k < key_columns.size(); ++k) {
        std::string v(rows->text(n - 1, key_columns[k]));
        last_key[key_names[k]] = v;
        next_last.emplace_back(std::move(v));
      }
    }
    const std::int64_t t_read = mono_now_ns();
    if (auto f = failpoint("snapshot.after_read"); !f) return f;

    auto high = emit("high:" + std::to_string(attempt));
    if (!high) return high.error();
    chunk->high = *high;
    const SnapshotRef ref = chunk->ref;
    post({Event::Kind::kChunk, attempt, {}, {}, std::move(chunk)});
    const std::int64_t t_posted = mono_now_ns();
    if (!wait_for(stop, attempt, true)) continue;  // the loop reconnected: read it again
    const std::int64_t t_published = mono_now_ns();
    std::uint64_t excluded = 0;
    {
      std::lock_guard lock(mu_);
      excluded = excluded_;
    }
    if (auto f = failpoint("snapshot.after_publish"); !f) return f;

    auto progress = conn.exec(
        "UPDATE relay_snapshots SET last_key = CASE WHEN $2 = '{}' THEN last_key ELSE $2::jsonb "
        "END, rows_done = rows_done + $3, chunks_done = $4, keys_excluded = keys_excluded + $5, "
        "state = CASE WHEN $6 THEN 'done' ELSE state END, "
        "finished_at = CASE WHEN $6 THEN now() END, updated_at = now() "
        "WHERE id = $1 AND state = 'running'",
        {std::to_string(req.id), last_key.dump(), std::to_string(n), std::to_string(ref.chunk),
         std::to_string(excluded), ref.last ? "true" : "false"});
    if (!progress) return progress.error().wrap("snapshot progress");
    log_.debug("snapshot chunk",
               {{"id", req.id},
                {"chunk", ref.chunk},
                {"rows", n},
                {"excluded", excluded},
                {"read_ms", static_cast<double>(t_read - t_go) / 1e6},
                {"publish_ms", static_cast<double>(t_published - t_posted) / 1e6},
                {"total_ms", static_cast<double>(mono_now_ns() - t_start) / 1e6}});
    req.chunks_done = ref.chunk;
    req.rows_done += n;
    if (!next_last.empty()) last = std::move(next_last);
    rows_total_.Increment(static_cast<double>(n) - static_cast<double>(excluded));
    excluded_total_.Increment(static_cast<double>(excluded));
    chunks_total_.Increment();
    rows_done_.Set(static_cast<double>(req.rows_done));
    if (ref.last || progress->affected() == 0) {
      log_.info(ref.last ? "snapshot done" : "snapshot stopped", {{"id", req.id},
                                                                  {"table", req.table},
                                                                  {"rows", req.rows_done},
                                                                  {"chunks", req.chunks_done}});
      post(Event{});  // kIdle
      return {};
    }
    if (options_.pause.count() > 0 && !sleep_for(stop, options_.pause)) return {};
  }
}

}  // namespace hi::cdc
