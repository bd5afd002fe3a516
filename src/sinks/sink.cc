#include "sinks/sink.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stop_token>
#include <thread>
#include <unordered_map>

#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "pg/connection.h"
#include "redis/client.h"
#include "sinks/change.h"
#include "sinks/destination.h"

namespace hi::sinks {

std::string sink_group(const std::string& destination) { return "sink-" + destination; }

namespace {

// A batch of at least this many changes is parsed and masked by two threads (Sink::Impl::prepare).
constexpr std::size_t kSplitAtChanges = 512;

// What the sink knows of one target table.
struct TableInfo {
  const TableSpec* spec = nullptr;
  std::unique_ptr<Masker> masker;
  bool exists = false;
  std::vector<Column> columns;  // destination columns (source ones only)
  std::vector<std::string> key_columns;
  std::optional<Version> truncate;
  Version schema_version;  // of the newest change whose schema the destination follows
  bool replica_identity_full = false;
  bool source_known = false;  // primary key and identity read from the source catalog
  // Columns whose source type narrowed: the type the destination refused to take.
  std::map<std::string, std::string> refused;

  const Column* column(std::string_view name) const {
    for (const auto& c : columns) {
      if (c.name == name) return &c;
    }
    return nullptr;
  }
};

// Frees what a batch leaves behind (its deliveries, parsed changes and rows: about a million
// small allocations per 5,000 changes) on a thread of its own, so the next batch does not wait
// for it. At most two batches wait; beyond that the caller frees its own.
class Reaper {
 public:
  Reaper() : thread_([this](std::stop_token stop) { loop(stop); }) {}
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  void dispose(std::shared_ptr<void> garbage) {
    std::unique_lock lock(mu_);
    if (queue_.size() >= 2) {
      lock.unlock();
      garbage.reset();
      return;
    }
    queue_.push_back(std::move(garbage));
    cv_.notify_one();
  }

 private:
  void loop(std::stop_token stop) {
    std::unique_lock lock(mu_);
    while (cv_.wait(lock, stop, [&] { return !queue_.empty(); })) {
      std::shared_ptr<void> garbage = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      garbage.reset();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<std::shared_ptr<void>> queue_;
  std::jthread thread_;  // last: stopped and joined before the queue goes
};

// A change of a batch, masked, with the table it belongs to.
struct Parsed {
  Change change;
  TableInfo* info;
  // The key's primary key columns (all of them when the primary key is unknown), masked:
  // computed on first use, as most changes carry their key in `after`.
  std::optional<nlohmann::json> masked_key;

  const nlohmann::json& key() {
    if (!masked_key) {
      nlohmann::json k = change.key();
      if (k.is_object() && !info->key_columns.empty()) {
        nlohmann::json only = nlohmann::json::object();
        for (const auto& col : info->key_columns) {
          if (auto it = k.find(col); it != k.end()) only[col] = std::move(*it);
        }
        k = std::move(only);
      }
      masked_key = info->masker->mask_row(k);
    }
    return *masked_key;
  }
};

// A polled batch, parsed and masked (the sink's thread), then applied (its applier thread).
struct Prepared {
  std::vector<bus::Delivery> deliveries;  // acknowledged once the batch is applied
  std::vector<Parsed> parsed;             // in commit order
  std::vector<DeadLetter> parked;         // unreadable changes
  Positions positions;                    // the highest position of each (topic, partition)
};

std::string key_text(const nlohmann::json& values, const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) {
    const auto it = values.find(k);
    out += it == values.end() ? "~" : it->dump();
    out += '\x1f';
  }
  return out;
}

}  // namespace

class Sink::Impl {
 public:
  Impl(SinkOptions o, Metrics& metrics, Logger log, SinkStats& stats)
      : o_(std::move(o)), metrics_(metrics), log_(std::move(log)), stats_(stats) {
    const MetricLabels dest = {{"destination", o_.destination.name}};
    lag_ = &metrics_.gauge("cdc_replication_lag_seconds",
                           "Seconds between the source commit of the last applied change and now "
                           "(0 when nothing waits)",
                           dest);
    backlog_ = &metrics_.gauge("cdc_backlog_depth", "Changes on the bus not yet applied", dest);
  }

  Status run(std::stop_token stop);

 private:
  prometheus::Counter& processed(const std::string& table) {
    auto it = processed_.find(table);
    if (it == processed_.end()) {
      it = processed_
               .emplace(table,
                        &metrics_.counter("cdc_events_processed_total",
                                          "Changes handled (applied or parked)",
                                          {{"destination", o_.destination.name}, {"table", table}}))
               .first;
    }
    return *it->second;
  }
  void count_error(const std::string& type, double n = 1) {
    metrics_
        .counter("cdc_errors_total", "Errors by kind",
                 {{"destination", o_.destination.name}, {"error_type", type}})
        .Increment(n);
  }

  Status connect_destination(std::stop_token stop);
  Status read_source_catalog();
  Status prepare_tables(std::stop_token stop);
  Status create_from_source(TableInfo& info);
  // A polled batch parsed and masked.
  std::unique_ptr<Prepared> prepare(std::vector<bus::Delivery> deliveries);
  // Acknowledges the applied batches on the bus, then frees them.
  void acknowledge(std::vector<std::unique_ptr<Prepared>> done);
  // What prepare() makes of a part of a batch.
  struct Slice {
    std::vector<Parsed> parsed;
    std::vector<DeadLetter> parked;  // the unreadable changes
  };
  // Parses and masks deliveries[i] for each i of `picked`. Reads tables_ only: two run at once.
  void prepare_slice(const std::vector<bus::Delivery>& deliveries,
                     std::span<const std::size_t> picked, TypesCache& types, Slice& out);
  // Schema changes, then the rows and dead letters of a prepared batch, in the destination.
  Status apply_prepared(Prepared& prepared, std::stop_token stop);
  Status evolve(TableInfo& info, const Change& newest, std::vector<DeadLetter>& parked);
  std::optional<std::string> narrowing(const TableInfo& info, const Change& c) const;
  void request_snapshot_for_default(const TableInfo& info, const std::string& column);
  Status apply_with_fallback(
      Batch& batch, std::vector<DeadLetter>& parked,
      const std::function<nlohmann::json(std::size_t, const nlohmann::json*)>& change_of,
      std::stop_token stop);
  void publish_status(bool force);

  SinkOptions o_;
  Metrics& metrics_;
  Logger log_;
  SinkStats& stats_;
  std::unique_ptr<Destination> dest_;
  std::unique_ptr<bus::Consumer> consumer_;
  std::map<std::string, TableInfo> tables_;  // by source "public.customers"
  TypesCache types_;                         // the latest `types` of each topic
  TypesCache helper_types_;                  // the same, for prepare()'s helper thread
  Reaper reaper_;
  std::mutex positions_mu_;  // positions_: read by prepare(), written by apply_prepared()
  Positions positions_;
  std::map<std::string, prometheus::Counter*> processed_;
  prometheus::Gauge* lag_ = nullptr;
  prometheus::Gauge* backlog_ = nullptr;
  std::optional<redis::Client> status_;
  std::int64_t last_status_ms_ = 0;
  std::int64_t last_lag_check_ms_ = 0;
};

Sink::Sink(SinkOptions options, Metrics& metrics, Logger log)
    : impl_(std::make_unique<Impl>(std::move(options), metrics, std::move(log), stats_)) {}
Sink::~Sink() = default;
Status Sink::run(std::stop_token stop) { return impl_->run(stop); }

Status Sink::Impl::connect_destination(std::stop_token stop) {
  Backoff backoff(o_.backoff_base, o_.backoff_max);
  while (!stop.stop_requested()) {
    Status s = dest_->connect();
    if (s) return {};
    if (s.error().code != Code::kUnavailable) return s;
    count_error("unavailable");
    log_.warn("destination unreachable, retrying",
              {{"destination", o_.destination.name}, {"error", s.error().message}});
    if (!sleep_for(stop, backoff.next())) break;
  }
  return cancelled("stopped");
}

Status Sink::Impl::read_source_catalog() {
  if (o_.source_database_url.empty()) return {};
  auto conn = pg::Connection::connect(o_.source_database_url);
  if (!conn) return conn.error().wrap("source database");
  for (auto& [source, info] : tables_) {
    auto r = conn->exec(
        "SELECT c.relreplident::text, coalesce((SELECT array_agg(a.attname ORDER BY k.n)::text "
        "FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(att, n), pg_attribute a "
        "WHERE i.indrelid = c.oid AND i.indisprimary AND a.attrelid = c.oid "
        "AND a.attnum = k.att), '{}') FROM pg_class c WHERE c.oid = to_regclass($1)",
        {source});
    if (!r) return r.error().wrap("source catalog of " + source);
    if (r->empty()) {
      log_.warn("source table does not exist (yet)", {{"table", source}});
      continue;
    }
    info.source_known = true;
    info.replica_identity_full = r->text(0, 0) == "f";
    std::string keys(r->text(0, 1));
    info.key_columns.clear();
    // {a,b} or {"a b"}: names are plain identifiers in practice; strip quotes.
    std::string cur;
    for (char ch : keys.substr(1, keys.size() >= 2 ? keys.size() - 2 : 0)) {
      if (ch == ',') {
        info.key_columns.push_back(cur);
        cur.clear();
      } else if (ch != '"') {
        cur += ch;
      }
    }
    if (!cur.empty()) info.key_columns.push_back(cur);
    if (o_.destination.type == DestinationType::kClickHouse && !info.replica_identity_full) {
      log_.error(
          "source table needs REPLICA IDENTITY FULL for ClickHouse: updates that leave a TOASTed "
          "value unchanged cannot be written whole and will be parked",
          {{"table", source}, {"fix", "ALTER TABLE " + source + " REPLICA IDENTITY FULL"}});
    }
  }
  return {};
}

Status Sink::Impl::create_from_source(TableInfo& info) {
  auto conn = pg::Connection::connect(o_.source_database_url);
  if (!conn) return conn.error().wrap("source database");
  // With the source's WAL position: the columns read are those of every change committed
  // before it, and of none older than a schema change after it.
  auto r = conn->exec(
      "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
      "(pg_current_wal_lsn() - '0/0')::bigint FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
      "ORDER BY a.attnum",
      {info.spec->source});
  if (!r) return r.error();
  if (r->empty() || info.key_columns.empty()) return {};  // created from its first change
  std::vector<Column> cols;
  for (int i = 0; i < r->rows(); ++i) {
    const std::string name(r->text(i, 0));
    if (!info.masker->sends(name)) continue;
    const bool key =
        std::find(info.key_columns.begin(), info.key_columns.end(), name) != info.key_columns.end();
    cols.push_back({name, dest_->column_type(r->text(i, 1), !info.masker->keeps_type(name), key)});
  }
  if (auto s = dest_->create_table(info.spec->target, cols, info.key_columns); !s) return s;
  info.exists = true;
  info.columns = cols;
  // The table follows the catalog as of that position: the changes still queued from before
  // it (older schemas) must not change its columns back.
  const Version as_of{static_cast<std::uint64_t>(r->int64(0, 2)), 0};
  if (auto s = dest_->save_schema_version(info.spec->target, as_of); !s) return s;
  info.schema_version = as_of;
  log_.info("destination table created",
            {{"table", info.spec->source}, {"target", info.spec->target}});
  if (o_.request_snapshots) {
    auto q = conn->exec("INSERT INTO relay_snapshots (table_name) VALUES ($1) RETURNING id",
                        {info.spec->source});
    if (!q) {
      log_.warn("could not request a snapshot of the source table",
                {{"table", info.spec->source}, {"error", q.error().message}});
    } else {
      log_.info("snapshot requested", {{"table", info.spec->source}, {"snapshot", q->int64(0, 0)}});
    }
  }
  return {};
}

Status Sink::Impl::prepare_tables(std::stop_token stop) {
  for (auto& [source, info] : tables_) {
    if (stop.stop_requested()) return cancelled("stopped");
    auto st = dest_->table_state(info.spec->target);
    if (!st) return st.error();
    info.exists = st->exists;
    info.columns = st->columns;
    info.truncate = st->truncate;
    // A table dropped by hand is created again by the next change, whatever its version.
    if (info.exists && st->schema) info.schema_version = *st->schema;
    if (!info.exists && info.source_known) {
      if (auto s = create_from_source(info); !s) return s;
    }
  }
  return {};
}

std::optional<std::string> Sink::Impl::narrowing(const TableInfo& info, const Change& c) const {
  if (!c.types) return std::nullopt;
  for (auto t = c.types->begin(); t != c.types->end(); ++t) {
    const std::string& name = t.key();
    const std::string& pg_type = t.value().get_ref<const std::string&>();
    if (!info.masker->keeps_type(name)) continue;  // masked columns hold text whatever the type
    const Column* cur = info.column(name);
    if (cur == nullptr) continue;
    const bool key =
        std::find(info.key_columns.begin(), info.key_columns.end(), name) != info.key_columns.end();
    const std::string want = dest_->column_type(pg_type, false, key);
    if (want == cur->type) continue;
    if (const auto r = info.refused.find(name); r != info.refused.end() && r->second == want) {
      return "narrowing type change of column " + name + ": the destination holds " + cur->type +
             ", the source now has " + want;
    }
    // A change from before a widening fits the wider column; anything else does not.
    if (dest_->classify(want, cur->type) == TypeChange::kNarrow) {
      return "the type of column " + name + " (" + want + ") does not fit the destination's " +
             cur->type;
    }
  }
  return std::nullopt;
}

// ADD COLUMN ... DEFAULT gives every existing row the value in the source without a single
// change event: a snapshot of the table brings those rows to the destination whole.
void Sink::Impl::request_snapshot_for_default(const TableInfo& info, const std::string& column) {
  if (o_.source_database_url.empty() || !o_.request_snapshots) return;
  auto conn = pg::Connection::connect(o_.source_database_url);
  if (!conn) return;
  auto r = conn->exec(
      "SELECT a.atthasmissing FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND "
      "a.attname = $2",
      {info.spec->source, column});
  if (!r || r->empty() || !r->boolean(0, 0)) return;
  auto q = conn->exec("INSERT INTO relay_snapshots (table_name) VALUES ($1) RETURNING id",
                      {info.spec->source});
  if (q) {
    log_.info("snapshot requested: the new column has a default the existing rows took",
              {{"table", info.spec->source}, {"column", column}, {"snapshot", q->int64(0, 0)}});
  } else {
    log_.warn("could not request a snapshot for a column default",
              {{"table", info.spec->source}, {"error", q.error().message}});
  }
}

Status Sink::Impl::evolve(TableInfo& info, const Change& newest, std::vector<DeadLetter>&) {
  if (!newest.types || newest.types->empty() || newest.version <= info.schema_version) return {};
  const std::string& target = info.spec->target;
  if (info.key_columns.empty()) {
    const nlohmann::json key = newest.key();
    if (key.is_object()) {
      for (auto it = key.begin(); it != key.end(); ++it) info.key_columns.push_back(it.key());
    }
  }
  std::vector<Column> want;
  for (auto t = newest.types->begin(); t != newest.types->end(); ++t) {
    const std::string& name = t.key();
    const std::string& pg_type = t.value().get_ref<const std::string&>();
    if (!info.masker->sends(name)) continue;
    const bool key =
        std::find(info.key_columns.begin(), info.key_columns.end(), name) != info.key_columns.end();
    want.push_back({name, dest_->column_type(pg_type, !info.masker->keeps_type(name), key)});
  }
  bool changed = false;
  if (!info.exists) {
    if (auto s = dest_->create_table(target, want, info.key_columns); !s) return s;
    log_.info("destination table created", {{"table", info.spec->source}, {"target", target}});
    changed = true;
  } else {
    for (const auto& w : want) {
      const Column* cur = info.column(w.name);
      if (cur == nullptr) {
        if (auto s = dest_->add_column(target, w); !s) return s;
        log_.info("column added", {{"target", target}, {"column", w.name}, {"type", w.type}});
        changed = true;
        request_snapshot_for_default(info, w.name);
      } else if (cur->type != w.type) {
        if (dest_->classify(cur->type, w.type) == TypeChange::kWiden) {
          if (auto s = dest_->alter_column(target, w); !s) return s;
          log_.info("column widened",
                    {{"target", target}, {"column", w.name}, {"from", cur->type}, {"to", w.type}});
          info.refused.erase(w.name);
          changed = true;
        } else if (info.refused[w.name] != w.type) {
          // The destination keeps its type; changes carrying the new one are parked.
          info.refused[w.name] = w.type;
          log_.warn("narrowing type change not applied; its changes are parked",
                    {{"target", target}, {"column", w.name}, {"from", cur->type}, {"to", w.type}});
          count_error("schema");
        }
      } else {
        info.refused.erase(w.name);
      }
    }
    for (const auto& c : info.columns) {
      const bool kept =
          std::any_of(want.begin(), want.end(), [&](const Column& w) { return w.name == c.name; });
      const bool key = std::find(info.key_columns.begin(), info.key_columns.end(), c.name) !=
                       info.key_columns.end();
      if (!kept && !key) {
        if (auto s = dest_->drop_column(target, c.name); !s) return s;
        log_.info("column dropped", {{"target", target}, {"column", c.name}});
        changed = true;
      }
    }
  }
  info.schema_version = newest.version;
  if (changed) {
    // Before the batch's rows: a change older than this one, replayed after a restart (from a
    // partition that lagged behind), must not bring back what this one dropped.
    if (auto s = dest_->save_schema_version(target, newest.version); !s) return s;
  }
  if (changed || !info.exists) {
    auto st = dest_->table_state(target);
    if (!st) return st.error();
    info.exists = st->exists;
    info.columns = st->columns;
  }
  return {};
}

std::unique_ptr<Prepared> Sink::Impl::prepare(std::vector<bus::Delivery> deliveries) {
  auto out = std::make_unique<Prepared>();
  out->deliveries = std::move(deliveries);
  const bool kafka = o_.bus.kind == bus::BusKind::kKafka;
  // Which deliveries to parse: positions and skips first, in order (cheap).
  std::vector<std::size_t> picked;
  picked.reserve(out->deliveries.size());
  {
    std::lock_guard positions_lock(positions_mu_);
    for (std::size_t i = 0; i < out->deliveries.size(); ++i) {
      const auto& d = out->deliveries[i];
      const PositionKey where{d.topic, d.partition};
      auto& top = out->positions[where];
      if (top.empty() || parse_position(top) < parse_position(d.position)) top = d.position;
      // Kafka delivers a partition in offset order, so what lies at or below the stored offset
      // was applied. (The Redis consumer resumes after the stored positions itself.)
      if (const auto stored = positions_.find(where); kafka && stored != positions_.end()) {
        if (parse_position(d.position) <= parse_position(stored->second)) {
          stats_.skipped.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
      }
      picked.push_back(i);
    }
  }
  // Parsing and masking is most of a batch's time here: a large batch is cut in two, the second
  // half prepared on a helper thread (with its own types cache) while this one does the first.
  const std::span<const std::size_t> all(picked);
  const std::size_t half = all.size() >= kSplitAtChanges ? all.size() / 2 : all.size();
  Slice second;
  std::future<void> helper;
  if (half < all.size()) {
    helper = std::async(std::launch::async, [&] {
      prepare_slice(out->deliveries, all.subspan(half), helper_types_, second);
    });
  }
  Slice first;
  prepare_slice(out->deliveries, all.first(half), types_, first);
  if (helper.valid()) helper.get();
  out->parsed = std::move(first.parsed);
  out->parked = std::move(first.parked);
  std::move(second.parsed.begin(), second.parsed.end(), std::back_inserter(out->parsed));
  std::move(second.parked.begin(), second.parked.end(), std::back_inserter(out->parked));
  if (!out->parked.empty()) count_error("unreadable", static_cast<double>(out->parked.size()));
  // Commit order: a batch may hold a dead sink's pending entries beside newer ones. Usually it
  // is in order already, and a sort would still move every change.
  const auto by_version = [](const Parsed& a, const Parsed& b) {
    return a.change.version < b.change.version;
  };
  if (!std::is_sorted(out->parsed.begin(), out->parsed.end(), by_version)) {
    std::stable_sort(out->parsed.begin(), out->parsed.end(), by_version);
  }
  return out;
}

void Sink::Impl::prepare_slice(const std::vector<bus::Delivery>& deliveries,
                               std::span<const std::size_t> picked, TypesCache& types, Slice& out) {
  out.parsed.reserve(picked.size());
  for (const std::size_t i : picked) {
    const bus::Delivery& d = deliveries[i];
    auto c = parse_change(d, &types);
    if (!c) {
      // Unreadable: nothing of it can be masked, so nothing of it is kept but where it was.
      const std::string source = d.topic.starts_with("cdc.") ? d.topic.substr(4) : d.topic;
      out.parked.push_back({source, "", d.topic + "@" + d.position, nullptr, nullptr,
                            "unreadable change: " + c.error().message});
      continue;
    }
    auto t = tables_.find(c->table);
    if (t == tables_.end()) continue;  // a topic shared with tables this destination skips
    Parsed p{std::move(*c), &t->second, {}};
    p.info->masker->mask_in_place(p.change.after);  // masked from here on
    out.parsed.push_back(std::move(p));
  }
}

Status Sink::Impl::apply_prepared(Prepared& prepared, std::stop_token stop) {
  std::vector<Parsed>& parsed = prepared.parsed;
  std::vector<DeadLetter> parked = std::move(prepared.parked);
  Batch batch;
  batch.positions = prepared.positions;
  // A change as a dead letter keeps it: masked, built only for the few that are parked.
  // `values`: the row's image once it left the change (its masked `after`, completed).
  const auto change_of = [&parsed](std::size_t i, const nlohmann::json* values) {
    const Parsed& p = parsed[i];
    const Masker& m = *p.info->masker;
    return nlohmann::json{{"op", std::string(1, p.change.op)},
                          {"id", p.change.id},
                          {"after", values != nullptr ? *values : p.change.after},
                          {"before", m.mask_row(p.change.before)}};
  };
  // Schema: per table, the newest change of the batch that names its types.
  std::map<TableInfo*, const Change*> newest;
  for (const auto& p : parsed) {
    if (!p.change.types) continue;
    auto& n = newest[p.info];
    if (n == nullptr || n->version < p.change.version) n = &p.change;
  }
  for (auto& [info, change] : newest) {
    Backoff backoff(o_.backoff_base, o_.backoff_max);
    for (;;) {
      Status s = evolve(*info, *change, parked);
      if (s) break;
      count_error(s.error().code == Code::kUnavailable ? "unavailable" : "schema");
      log_.warn("schema change not applied yet",
                {{"target", info->spec->target}, {"error", s.error().message}});
      if (s.error().code == Code::kUnavailable) (void)connect_destination(stop);
      if (!sleep_for(stop, backoff.next())) return cancelled("stopped");
      if (s.error().code != Code::kUnavailable && backoff.retries() > 3) break;
    }
  }
  // Rows: each key's last image per table.
  std::map<TableInfo*, TableWork> works;
  std::map<std::pair<const TableInfo*, const nlohmann::json*>, std::optional<std::string>> verdicts;
  std::map<TableInfo*, std::unordered_map<std::string, std::size_t>> index;
  for (auto& p : parsed) {
    TableInfo& info = *p.info;
    TableWork& w = works[&info];
    if (w.target.empty()) {
      w.source = info.spec->source;
      w.target = info.spec->target;
      w.key_columns = info.key_columns;
    }
    processed(info.spec->source).Increment();
    const Change& c = p.change;
    const std::size_t origin = static_cast<std::size_t>(&p - parsed.data());
    auto park = [&](std::string reason, const nlohmann::json* values = nullptr) {
      parked.push_back({info.spec->source, info.spec->target, c.id, p.key(),
                        change_of(origin, values), std::move(reason)});
    };
    if (c.op == 't') {
      if (!w.truncate || *w.truncate < c.version) w.truncate = c.version;
      if (!info.truncate || *info.truncate < c.version) info.truncate = c.version;
      continue;
    }
    if (info.truncate && c.version < *info.truncate) continue;  // removed by a later TRUNCATE
    if (!info.exists) {
      park("the destination table does not exist and the change names no column types");
      continue;
    }
    // Changes sharing their types (TypesCache) share the verdict.
    const auto verdict_key = std::make_pair(&info, c.types.get());
    auto verdict = verdicts.find(verdict_key);
    if (verdict == verdicts.end()) {
      verdict = verdicts.emplace(verdict_key, narrowing(info, c)).first;
    }
    if (const auto& why = verdict->second) {
      park(*why);
      continue;
    }
    RowImage row;
    row.version = c.version;
    row.change_id = c.id;
    row.source_table = info.spec->source;
    row.deleted = c.op == 'd';
    const bool whole_rows = dest_->kind() == "clickhouse";
    // The old image is masked only where it is used: ClickHouse writes whole rows, and an
    // update's unchanged TOAST values come from it.
    nlohmann::json masked_before;
    if (c.before.is_object() && ((whole_rows && row.deleted) || !c.unchanged.empty())) {
      masked_before = info.masker->mask_row(c.before);
    }
    if (row.deleted) {
      row.values = masked_before.is_object() ? std::move(masked_before) : nlohmann::json::object();
    } else {
      row.values = std::move(p.change.after);
    }
    // The message key is the replica identity: with REPLICA IDENTITY FULL every column, an
    // unchanged TOASTed one included (as ""). Only the primary key's columns come from it.
    for (const auto& k : info.key_columns) {
      if (row.values.contains(k)) continue;
      const nlohmann::json& key = p.key();
      if (const auto it = key.find(k); it != key.end()) row.values[k] = *it;
    }
    bool missing_key = false;
    for (const auto& k : info.key_columns) {
      if (!row.values.contains(k)) missing_key = true;
    }
    if (missing_key) {
      park("a primary key column is not sent (dropped by its mask, or missing from the change)",
           &row.values);
      continue;
    }
    const std::string key = key_text(row.values, info.key_columns);
    auto& slot = index[&info];
    auto found = slot.find(key);
    const RowImage* older = found == slot.end() ? nullptr : &w.rows[found->second];
    if (older != nullptr && c.version < older->version) continue;  // already newer in the batch
    if (!row.deleted && !c.unchanged.empty()) {
      for (const auto& col : c.unchanged) {
        if (!info.masker->sends(col)) continue;
        if (older != nullptr && !older->deleted && older->values.contains(col)) {
          row.values[col] = older->values[col];
        } else if (masked_before.is_object() && masked_before.contains(col)) {
          // The old image (REPLICA IDENTITY FULL) holds the unchanged value: written, it also
          // completes a row the destination never had whole (a snapshot excludes the keys
          // changed in its window, and such a change may be this update).
          row.values[col] = masked_before[col];
        } else if (whole_rows) {
          missing_key = true;
        }
      }
      if (missing_key) {
        park(
            "an unchanged TOASTed value is not in the change and ClickHouse replaces whole "
            "rows: set REPLICA IDENTITY FULL on " +
                info.spec->source,
            &row.values);
        continue;
      }
    }
    row.origin = origin;
    if (older != nullptr) {
      w.rows[found->second] = std::move(row);
    } else {
      slot.emplace(key, w.rows.size());
      w.rows.push_back(std::move(row));
    }
  }
  for (auto& [info, w] : works) {
    if (w.truncate) {
      // Rows of the batch older than its TRUNCATE are gone with it.
      const Version truncated = *w.truncate;
      std::erase_if(w.rows, [truncated](const RowImage& r) { return r.version < truncated; });
    }
    batch.tables.push_back(std::move(w));
  }
  std::size_t rows = 0;
  for (const auto& t : batch.tables) rows += t.rows.size();
  if (Status s = apply_with_fallback(batch, parked, change_of, stop); !s) return s;
  if (!parked.empty()) {
    Backoff backoff(o_.backoff_base, o_.backoff_max);
    for (;;) {
      Status s = dest_->park(parked);
      if (s) break;
      log_.warn("dead letters not written yet", {{"error", s.error().message}});
      if (s.error().code == Code::kUnavailable) (void)connect_destination(stop);
      if (!sleep_for(stop, backoff.next())) return cancelled("stopped");
    }
    for (const auto& l : parked) {
      log_.warn("change parked",
                {{"table", l.source_table}, {"change", l.change_id}, {"reason", l.reason}});
    }
    stats_.parked.fetch_add(parked.size(), std::memory_order_relaxed);
    count_error("parked", static_cast<double>(parked.size()));
  }
  {
    std::lock_guard lock(positions_mu_);
    for (const auto& [where, position] : batch.positions) positions_[where] = position;
  }
  std::int64_t newest_commit = 0;
  for (const auto& p : parsed) newest_commit = std::max(newest_commit, p.change.commit_unix_us);
  if (newest_commit > 0) stats_.last_commit_unix_us.store(newest_commit);
  stats_.applied.fetch_add(rows, std::memory_order_relaxed);
  reaper_.dispose(std::make_shared<Batch>(std::move(batch)));
  return {};
}

Status Sink::Impl::apply_with_fallback(
    Batch& batch, std::vector<DeadLetter>& parked,
    const std::function<nlohmann::json(std::size_t, const nlohmann::json*)>& change_of,
    std::stop_token stop) {
  Backoff backoff(o_.backoff_base, o_.backoff_max);
  for (;;) {
    Status s = dest_->apply(batch);
    if (s) return {};
    if (s.error().code == Code::kUnavailable) {
      count_error("unavailable");
      log_.warn("destination unavailable, retrying the batch", {{"error", s.error().message}});
      if (!sleep_for(stop, backoff.next())) return cancelled("stopped");
      if (auto c = connect_destination(stop); !c) return c;
      continue;
    }
    break;
  }
  // The batch's data is at fault: each row on its own, the failing ones parked.
  count_error("apply");
  log_.warn("batch refused, applying its rows one by one");
  for (auto& t : batch.tables) {
    if (t.truncate) {
      Batch one;
      TableWork w{t.source, t.target, t.key_columns, t.truncate, {}};
      one.tables.push_back(std::move(w));
      if (Status s = dest_->apply(one); !s) return s;
      t.truncate.reset();
    }
    for (auto& row : t.rows) {
      for (;;) {
        Batch one;
        TableWork w{t.source, t.target, t.key_columns, std::nullopt, {row}};
        one.tables.push_back(std::move(w));
        Status s = dest_->apply(one);
        if (s) break;
        if (s.error().code == Code::kUnavailable) {
          if (!sleep_for(stop, backoff.next())) return cancelled("stopped");
          if (auto c = connect_destination(stop); !c) return c;
          continue;
        }
        parked.push_back({t.source, t.target, row.change_id, nullptr,
                          change_of(row.origin, &row.values), s.error().message});
        break;
      }
    }
    t.rows.clear();
  }
  for (;;) {
    Batch positions_only;
    positions_only.positions = batch.positions;
    Status s = dest_->apply(positions_only);
    if (s) return {};
    if (s.error().code != Code::kUnavailable) return s;
    if (!sleep_for(stop, backoff.next())) return cancelled("stopped");
    if (auto c = connect_destination(stop); !c) return c;
  }
}

void Sink::Impl::publish_status(bool force) {
  const std::int64_t now_ms = unix_now_us() / 1000;
  if (now_ms - last_lag_check_ms_ >= 1000 || force) {
    last_lag_check_ms_ = now_ms;
    if (auto lag = consumer_->lag()) {
      stats_.backlog.store(*lag);
      backlog_->Set(static_cast<double>(*lag));
    }
  }
  const std::int64_t backlog = stats_.backlog.load();
  const std::int64_t last = stats_.last_commit_unix_us.load();
  const double lag_s =
      backlog > 0 && last > 0 ? static_cast<double>(unix_now_us() - last) / 1e6 : 0.0;
  lag_->Set(lag_s);
  if (o_.status_redis_url.empty() || (!force && now_ms - last_status_ms_ < 1000)) return;
  last_status_ms_ = now_ms;
  if (!status_) {
    auto c = redis::Client::connect(o_.status_redis_url);
    if (!c) return;
    status_ = std::move(*c);
  }
  const std::string key = "hi:status:sink:" + o_.destination.name;
  auto r = status_->command(std::vector<std::string>{
      "HSET", key, "destination", o_.destination.name, "type",
      std::string(to_string(o_.destination.type)), "lag_seconds", std::to_string(lag_s), "backlog",
      std::to_string(backlog), "applied", std::to_string(stats_.applied.load()), "parked",
      std::to_string(stats_.parked.load()), "updated_at_ms", std::to_string(now_ms)});
  if (!r) status_.reset();
}

void Sink::Impl::acknowledge(std::vector<std::unique_ptr<Prepared>> done) {
  for (auto& batch : done) {
    if (Status c = consumer_->commit(batch->deliveries); !c) {
      log_.warn("offset commit failed (the batch will be replayed and skipped)",
                {{"error", c.error().message}});
    }
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    reaper_.dispose(std::shared_ptr<Prepared>(std::move(batch)));
  }
}

Status Sink::Impl::run(std::stop_token stop) {
  for (const auto& t : o_.destination.tables) {
    TableInfo info;
    info.spec = &t;
    info.masker = std::make_unique<Masker>(t, o_.keys);
    tables_.emplace(t.source, std::move(info));
  }
  DestinationOptions d{o_.destination.name, o_.destination.url, o_.destination.tls};
  auto dest = o_.destination.type == DestinationType::kPostgres ? make_postgres_destination(d)
                                                                : make_clickhouse_destination(d);
  if (!dest) return dest.error();
  dest_ = std::move(*dest);
  {
    Backoff backoff(o_.backoff_base, o_.backoff_max);
    for (;;) {
      Status s = read_source_catalog();
      if (s) break;
      log_.warn("source catalog not readable yet", {{"error", s.error().message}});
      if (!sleep_for(stop, backoff.next())) return {};
    }
  }
  if (Status s = connect_destination(stop); !s) {
    return s.error().code == Code::kCancelled ? Status{} : s;
  }
  {
    Backoff backoff(o_.backoff_base, o_.backoff_max);
    for (;;) {
      auto p = dest_->load_positions();
      Status s = p ? prepare_tables(stop) : Status(p.error());
      if (s) {
        positions_ = std::move(*p);
        break;
      }
      if (s.error().code == Code::kCancelled) return {};
      if (s.error().code != Code::kUnavailable) return s;
      if (!sleep_for(stop, backoff.next())) return {};
      if (Status c = connect_destination(stop); !c) return {};
    }
  }
  bus::ConsumerOptions co;
  co.group = sink_group(o_.destination.name);
  co.consumer_name = o_.consumer_name;
  for (const auto& t : o_.destination.tables) co.topics.push_back("cdc." + t.source);
  if (o_.bus.kind == bus::BusKind::kRedis) {
    // The positions stored with the rows say what was applied: the bus need not keep a pending
    // entry per change for us (Destination: PostgreSQL stores them in the rows' transaction,
    // ClickHouse after the rows).
    co.resume_from.emplace();
    for (const auto& topic : co.topics) {
      if (const auto p = positions_.find({topic, 0}); p != positions_.end()) {
        (*co.resume_from)[topic] = p->second;
      }
    }
  }
  auto consumer = bus::make_consumer(o_.bus, co);
  if (!consumer) return consumer.error();
  consumer_ = std::move(*consumer);
  log_.info("sink started", {{"destination", o_.destination.name},
                             {"type", std::string(to_string(o_.destination.type))},
                             {"group", co.group},
                             {"tables", o_.destination.tables.size()}});
  // Three batches move at once: one is read from the bus by a reader task, the one before it is
  // parsed and masked here, and the one before that applied on an applier thread. A batch's
  // deliveries are acknowledged only once it is applied (then its failpoint), by the next reader
  // task or, when the bus has nothing more, here. The consumer is used by one thread at a time:
  // the reader task while one runs, else this one.
  std::vector<std::unique_ptr<Prepared>> applied_batches;  // not yet acknowledged
  std::unique_ptr<Prepared> applying;
  std::future<Status> applied;  // declared after `applying`: destroyed (waited for) first
  std::future<Result<std::vector<bus::Delivery>>> reading;
  const auto read = [&](std::chrono::milliseconds timeout) {
    reading = std::async(std::launch::async,
                         [this, timeout, done = std::move(applied_batches)]() mutable {
                           acknowledge(std::move(done));
                           publish_status(false);
                           return consumer_->poll(o_.batch_size, timeout);
                         });
    applied_batches.clear();
  };
  // Waits for the batch being applied; it is acknowledged with the next read.
  const auto finish = [&]() -> Status {
    if (!applying) return {};
    Status s = applied.get();
    std::unique_ptr<Prepared> done = std::move(applying);
    if (!s) return s;
    if (Status f = failpoint("sink.after_destination_commit"); !f) return f;
    applied_batches.push_back(std::move(done));
    return {};
  };
  Status result;
  Backoff poll_backoff(o_.backoff_base, o_.backoff_max);
  read(o_.poll_timeout);
  while (!stop.stop_requested()) {
    auto batch = reading.get();  // the consumer is this thread's until the next read()
    if (!batch || batch->empty()) {
      if (result = finish(); !result) break;
      acknowledge(std::move(applied_batches));
      applied_batches.clear();
      publish_status(false);
      if (!batch) {
        if (batch.error().code != Code::kUnavailable) {
          result = batch.error();
          break;
        }
        log_.warn("bus unavailable", {{"error", batch.error().message}});
        if (!sleep_for(stop, poll_backoff.next())) break;
      } else {
        poll_backoff.reset();
      }
      read(o_.poll_timeout);  // nothing in flight: the read may wait for the bus
      continue;
    }
    poll_backoff.reset();
    stats_.deliveries.fetch_add(batch->size(), std::memory_order_relaxed);
    // With batches in flight the read does not wait: acknowledging them comes first.
    read(std::chrono::milliseconds(1));
    std::unique_ptr<Prepared> next = prepare(std::move(*batch));
    if (result = finish(); !result) break;
    applying = std::move(next);
    applied = std::async(std::launch::async,
                         [this, p = applying.get(), stop] { return apply_prepared(*p, stop); });
  }
  // A read in flight is let go: its deliveries stay pending and come back at the next start.
  if (reading.valid()) reading.wait();
  if (result) result = finish();
  acknowledge(std::move(applied_batches));
  publish_status(true);
  if (!result && result.error().code == Code::kCancelled) return {};
  return result;
}

}  // namespace hi::sinks
