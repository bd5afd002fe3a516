#include "cdc/relay.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include "bus/redis_streams.h"
#include "cdc/ack_tracker.h"
#include "cdc/poller.h"
#include "core/time.h"
#include "pg/connection.h"
#include "pg/pgoutput.h"
#include "pg/replication_stream.h"
#include "redis/client.h"

namespace hi::cdc {
namespace {

constexpr std::string_view kHeartbeatPrefix = "hashinsight.heartbeat";
// Decoded messages handled per loop turn before the producer is flushed: opportunistic
// batching without letting one large backlog starve acknowledgements.
constexpr int kMessagesPerTurn = 4096;

bool is_fatal(const Error& e) {
  return e.code == Code::kFailedPrecondition || e.code == Code::kDataLoss ||
         e.code == Code::kInvalidArgument || e.code == Code::kInternal;
}

std::string qualified(const pg::Relation& r) {
  return (r.schema.empty() ? std::string("public") : r.schema) + "." + r.name;
}

}  // namespace

class Relay::Impl {
 public:
  Impl(RelayOptions options, Metrics& metrics, Logger log, RelayStats& stats)
      : options_(std::move(options)),
        metrics_(metrics),
        log_(std::move(log)),
        stats_(stats),
        router_(RouteTable(), Format::kEnvelope),
        commit_to_ack_(metrics.histogram(
            "hashinsight_relay_commit_to_ack_seconds", "Commit timestamp to bus acknowledgement",
            {},
            // Fine below 5 ms, where the targets are.
            {0.0001, 0.0002, 0.0003, 0.0004, 0.0005, 0.0006, 0.0008, 0.001, 0.0012,
             0.0015, 0.002,  0.0025, 0.003,  0.004,  0.005,  0.0075, 0.01,  0.025,
             0.05,   0.1,    0.25,   0.5,    1,      2.5,    10})),
        lag_bytes_(metrics.gauge("hashinsight_relay_slot_lag_bytes",
                                 "WAL retained by the slot beyond its confirmed position")),
        wal_status_(metrics.gauge("hashinsight_relay_wal_status",
                                  "Slot wal_status: 0 reserved, 1 extended, 2 unreserved, 3 lost")),
        confirmed_gauge_(metrics.gauge("hashinsight_relay_confirmed_lsn",
                                       "Last LSN confirmed to PostgreSQL (as a number)")),
        in_flight_gauge_(metrics.gauge("hashinsight_relay_in_flight_events",
                                       "Events sent to the bus and not yet acknowledged")),
        reconnects_(
            metrics.counter("hashinsight_relay_reconnects_total", "Replication reconnects")) {
    for (const auto& t : options_.capture_tables) capture_.insert(t);
  }

  Status run(std::stop_token stop);

 private:
  Status setup(pg::Connection& conn);
  Status ensure_publications(pg::Connection& conn);
  Status stream(std::stop_token stop);
  Status handle(const pg::StreamEvent& ev);
  Status handle_change(const pg::Message& msg);
  Status replay_stream(const pg::StreamCommit& commit);
  Status publish(bus::Message message);
  Status backfill(pg::ReplicationStream& rs, std::stop_token stop);
  Status pump(std::chrono::milliseconds timeout);
  void drain(std::stop_token stop);
  void maybe_send_status(pg::ReplicationStream& rs, bool force);
  void status_loop(std::stop_token stop);
  prometheus::Counter& events_counter(const std::string& topic);

  RelayOptions options_;
  Metrics& metrics_;
  Logger log_;
  RelayStats& stats_;
  OutboxRouter router_;
  std::unordered_set<std::string> capture_;
  RelationCache relations_;
  pg::Decoder decoder_;
  AckTracker tracker_;
  std::unique_ptr<bus::Producer> producer_;
  std::optional<Error> fatal_;

  // Streamed (protocol 2) transactions not yet committed: their changes are spilled to a
  // temporary file as raw pgoutput messages and published only at Stream Commit, so an
  // aborted transaction publishes nothing and memory stays bounded.
  struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  struct Spill {
    std::unique_ptr<std::FILE, FileCloser> file;
    std::set<std::uint32_t> aborted_subxacts;
    std::uint64_t messages = 0;
  };
  std::unordered_map<std::uint32_t, Spill> streams_;
  std::optional<std::uint32_t> open_stream_;

  // Per transaction being decoded.
  bool in_tx_ = false;
  AckTracker::TxId tx_ = 0;
  ChangeSource source_;

  pg::ReplicationStream* rs_ = nullptr;
  std::chrono::steady_clock::time_point last_status_{};
  std::map<std::string, prometheus::Counter*, std::less<>> topic_counters_;
  prometheus::Histogram& commit_to_ack_;
  prometheus::Gauge& lag_bytes_;
  prometheus::Gauge& wal_status_;
  prometheus::Gauge& confirmed_gauge_;
  prometheus::Gauge& in_flight_gauge_;
  prometheus::Counter& reconnects_;
};

prometheus::Counter& Relay::Impl::events_counter(const std::string& topic) {
  auto it = topic_counters_.find(topic);
  if (it != topic_counters_.end()) return *it->second;
  auto& c = metrics_.counter("hashinsight_relay_events_total", "Events published, by topic",
                             {{"topic", topic}});
  topic_counters_.emplace(topic, &c);
  return c;
}

Status Relay::Impl::ensure_publications(pg::Connection& conn) {
  auto have = conn.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {options_.publication});
  if (!have) return have.error();
  if (have->empty()) {
    auto r = conn.exec("CREATE PUBLICATION " + conn.quote_ident(options_.publication) +
                       " FOR TABLE " + options_.outbox_table + " WITH (publish = 'insert')");
    if (!r) {
      return failed_precondition("publication " + options_.publication +
                                 " is missing and cannot be created (run `hashinsight migrate` "
                                 "as the owner): " +
                                 r.error().message);
    }
    log_.info("publication created", {{"publication", options_.publication}});
  }
  if (capture_.empty()) return {};
  const std::string cap = options_.publication + "_capture";
  std::string tables;
  for (const auto& t : options_.capture_tables) {
    if (!tables.empty()) tables += ", ";
    const auto dot = t.find('.');
    tables += dot == std::string::npos
                  ? conn.quote_ident(t)
                  : conn.quote_ident(t.substr(0, dot)) + "." + conn.quote_ident(t.substr(dot + 1));
  }
  auto exists = conn.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {cap});
  if (!exists) return exists.error();
  auto r = exists->empty()
               ? conn.exec("CREATE PUBLICATION " + conn.quote_ident(cap) + " FOR TABLE " + tables)
               : conn.exec("ALTER PUBLICATION " + conn.quote_ident(cap) + " SET TABLE " + tables);
  if (!r) return failed_precondition("capture publication " + cap + ": " + r.error().message);
  return {};
}

Status Relay::Impl::setup(pg::Connection& conn) {
  if (auto s = ensure_publications(conn); !s) return s;
  auto slot = pg::read_slot(conn, options_.slot);
  if (!slot) return slot.error();
  if (slot->exists && (slot->wal_status == "lost" || slot->restart_lsn.value == 0)) {
    if (!options_.recreate_slot) {
      return failed_precondition(
          "replication slot " + options_.slot + " is invalidated (wal_status=" + slot->wal_status +
          "): the WAL it needed was removed (max_slot_wal_keep_size), so changes since " +
          slot->confirmed_flush.to_string() +
          " cannot be streamed. Nothing was recreated. Run `hashinsight relay --recreate-slot` "
          "to recreate it and republish the outbox rows from a snapshot");
    }
    log_.warn("dropping invalidated slot as requested", {{"slot", options_.slot}});
    auto d = conn.exec("SELECT pg_drop_replication_slot($1)", {options_.slot});
    if (!d) return d.error();
  }
  return {};
}

Status Relay::Impl::publish(bus::Message message) {
  events_counter(message.topic).Increment();
  if (auto s = producer_->send(std::move(message), tx_); !s) return s;
  tracker_.sent(tx_);
  stats_.events_published.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Status Relay::Impl::handle_change(const pg::Message& msg) {
  return std::visit(
      [&](const auto& m) -> Status {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, pg::Begin>) {
          in_tx_ = true;
          source_.commit_lsn = m.final_lsn;
          source_.xid = m.xid;
          source_.commit_time_unix_us = pg::pg_time_to_unix_us(m.commit_time_us);
          source_.ordinal = 0;
          tx_ = tracker_.begin(source_.commit_time_unix_us);
        } else if constexpr (std::is_same_v<T, pg::Commit>) {
          tracker_.commit(tx_, m.end_lsn);
          in_tx_ = false;
          stats_.transactions.fetch_add(1, std::memory_order_relaxed);
        } else if constexpr (std::is_same_v<T, pg::Relation>) {
          relations_.put(m);
        } else if constexpr (std::is_same_v<T, pg::Insert>) {
          ++source_.ordinal;
          const pg::Relation* rel = relations_.find(m.relation_id);
          if (rel == nullptr)
            return data_loss("insert for unknown relation " + std::to_string(m.relation_id));
          const std::string name = qualified(*rel);
          if (name == options_.outbox_table) {
            auto routed = router_.route(*rel, m.new_tuple, source_);
            if (routed) return publish(std::move(*routed));
            // A row the router cannot route is parked, not dropped and not a pipeline stop:
            // the whole row goes to the unknown-kind topic with the reason.
            log_.warn("unroutable outbox row parked",
                      {{"error", routed.error().message}, {"topic", options_.unknown_topic}});
            bus::Message parked =
                capture_change(ChangeOp::kCreate, *rel, nullptr, &m.new_tuple, source_);
            parked.topic = options_.unknown_topic;
            parked.headers.emplace_back("reason", routed.error().message);
            return publish(std::move(parked));
          }
          if (capture_.contains(name)) {
            return publish(capture_change(ChangeOp::kCreate, *rel, nullptr, &m.new_tuple, source_));
          }
        } else if constexpr (std::is_same_v<T, pg::Update>) {
          ++source_.ordinal;
          const pg::Relation* rel = relations_.find(m.relation_id);
          if (rel == nullptr) return data_loss("update for unknown relation");
          if (capture_.contains(qualified(*rel))) {
            const pg::Tuple* before =
                m.old_kind == pg::OldTupleKind::kNone ? nullptr : &m.old_tuple;
            return publish(capture_change(ChangeOp::kUpdate, *rel, before, &m.new_tuple, source_));
          }
          // Updates of outbox rows publish nothing.
        } else if constexpr (std::is_same_v<T, pg::Delete>) {
          ++source_.ordinal;
          const pg::Relation* rel = relations_.find(m.relation_id);
          if (rel == nullptr) return data_loss("delete for unknown relation");
          if (capture_.contains(qualified(*rel))) {
            return publish(capture_change(ChangeOp::kDelete, *rel, &m.old_tuple, nullptr, source_));
          }
        } else if constexpr (std::is_same_v<T, pg::Truncate>) {
          for (auto id : m.relation_ids) {
            ++source_.ordinal;
            const pg::Relation* rel = relations_.find(id);
            if (rel != nullptr && capture_.contains(qualified(*rel))) {
              if (auto s =
                      publish(capture_change(ChangeOp::kTruncate, *rel, nullptr, nullptr, source_));
                  !s) {
                return s;
              }
            }
          }
        } else if constexpr (std::is_same_v<T, pg::LogicalMessage>) {
          // A heartbeat outside any transaction with nothing in flight: everything before it
          // is durable, so its position may be confirmed (the slot advances on idle tables).
          if (!m.transactional && !in_tx_ && tracker_.idle() && streams_.empty() &&
              m.prefix == kHeartbeatPrefix && rs_ != nullptr) {
            rs_->confirm(m.lsn);
          }
        }
        return {};
      },
      msg);
}

Status Relay::Impl::handle(const pg::StreamEvent& ev) {
  if (ev.kind == pg::StreamEvent::Kind::kKeepalive) {
    // Nothing in flight and between transactions: the server has sent everything up to
    // wal_end, so it can be confirmed (keeps the slot moving when our tables are idle).
    if (!in_tx_ && tracker_.idle() && streams_.empty()) rs_->confirm(ev.wal_end);
    if (ev.reply_requested) maybe_send_status(*rs_, true);
    return {};
  }
  auto msg = decoder_.decode(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(ev.payload.data()), ev.payload.size()));
  if (!msg) return msg.error().wrap("decode at " + ev.wal_start.to_string());
  stats_.last_event_unix_us.store(unix_now_us(), std::memory_order_relaxed);
  if (const auto* start = std::get_if<pg::StreamStart>(&*msg)) {
    open_stream_ = start->xid;
    Spill& spill = streams_[start->xid];
    if (!spill.file) {
      spill.file.reset(std::tmpfile());
      if (!spill.file)
        return unavailable("relay: cannot create a spill file for a streamed transaction");
    }
    return {};
  }
  if (std::holds_alternative<pg::StreamStop>(*msg)) {
    open_stream_.reset();
    return {};
  }
  if (const auto* commit = std::get_if<pg::StreamCommit>(&*msg)) return replay_stream(*commit);
  if (const auto* abort = std::get_if<pg::StreamAbort>(&*msg)) {
    if (abort->subxid == abort->xid) {
      streams_.erase(abort->xid);
    } else if (auto it = streams_.find(abort->xid); it != streams_.end()) {
      it->second.aborted_subxacts.insert(abort->subxid);
    }
    return {};
  }
  if (open_stream_) {
    if (const auto* rel = std::get_if<pg::Relation>(&*msg)) relations_.put(*rel);
    Spill& spill = streams_[*open_stream_];
    const auto len = static_cast<std::uint32_t>(ev.payload.size());
    if (std::fwrite(&len, sizeof len, 1, spill.file.get()) != 1 ||
        std::fwrite(ev.payload.data(), 1, len, spill.file.get()) != len) {
      return unavailable("relay: writing the spill file failed (disk full?)");
    }
    ++spill.messages;
    return {};
  }
  return handle_change(*msg);
}

namespace {
std::optional<std::uint32_t> message_xid(const pg::Message& m) {
  return std::visit(
      [](const auto& x) -> std::optional<std::uint32_t> {
        if constexpr (requires { x.xid; }) {
          return std::optional<std::uint32_t>(x.xid);
        } else {
          return std::nullopt;
        }
      },
      m);
}
}  // namespace

// A streamed transaction committed: publish its spilled changes in order, as one transaction.
Status Relay::Impl::replay_stream(const pg::StreamCommit& commit) {
  auto it = streams_.find(commit.xid);
  if (it == streams_.end()) {
    // Nothing was spilled (every change was in tables we do not publish): still a transaction.
    tx_ = tracker_.begin(pg::pg_time_to_unix_us(commit.commit_time_us));
    tracker_.commit(tx_, commit.end_lsn);
    return {};
  }
  Spill spill = std::move(it->second);
  streams_.erase(it);
  std::rewind(spill.file.get());
  pg::Decoder replay;
  // The spilled messages carry their xid as inside a stream segment; open one for the decoder.
  const std::uint8_t start[] = {'S',
                                static_cast<std::uint8_t>(commit.xid >> 24),
                                static_cast<std::uint8_t>(commit.xid >> 16),
                                static_cast<std::uint8_t>(commit.xid >> 8),
                                static_cast<std::uint8_t>(commit.xid),
                                1};
  if (auto r = replay.decode(start); !r) return r.error();
  source_ = ChangeSource{};
  source_.commit_lsn = commit.commit_lsn;
  source_.xid = commit.xid;
  source_.commit_time_unix_us = pg::pg_time_to_unix_us(commit.commit_time_us);
  tx_ = tracker_.begin(source_.commit_time_unix_us);
  in_tx_ = true;
  std::string buf;
  for (std::uint64_t i = 0; i < spill.messages; ++i) {
    std::uint32_t len = 0;
    if (std::fread(&len, sizeof len, 1, spill.file.get()) != 1)
      return data_loss("relay: spill file truncated");
    buf.resize(len);
    if (std::fread(buf.data(), 1, len, spill.file.get()) != len)
      return data_loss("relay: spill file truncated");
    auto m = replay.decode(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(buf.data()), len));
    if (!m) return m.error().wrap("replay of streamed transaction " + std::to_string(commit.xid));
    if (auto x = message_xid(*m); x && spill.aborted_subxacts.contains(*x)) continue;
    if (auto s = handle_change(*m); !s) return s;
    // Bounded memory however large the transaction: wait for acknowledgements.
    while (producer_->in_flight() >= options_.max_inflight) {
      if (auto s = pump(std::chrono::milliseconds(100)); !s) return s;
    }
    if (i % 4096 == 4095) {
      if (auto s = pump(std::chrono::milliseconds(0)); !s) return s;
    }
  }
  tracker_.commit(tx_, commit.end_lsn);
  in_tx_ = false;
  stats_.transactions.fetch_add(1, std::memory_order_relaxed);
  stats_.streamed_transactions.fetch_add(1, std::memory_order_relaxed);
  return {};
}

// Transmits and collects acknowledgements; releases what may be confirmed.
Status Relay::Impl::pump(std::chrono::milliseconds timeout) {
  producer_->poll(timeout);
  if (fatal_) return *fatal_;
  if (auto lsn = tracker_.release()) {
    if (rs_ != nullptr) rs_->confirm(*lsn);
    stats_.confirmed_commit_unix_us.store(tracker_.released_commit_time_us(),
                                          std::memory_order_relaxed);
  }
  stats_.in_flight.store(producer_->in_flight(), std::memory_order_relaxed);
  stats_.bus_degraded.store(producer_->degraded(), std::memory_order_relaxed);
  return {};
}

void Relay::Impl::maybe_send_status(pg::ReplicationStream& rs, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const bool advanced = rs.confirmed() > rs.last_sent_status();
  if (!force && !(advanced && now - last_status_ >= std::chrono::milliseconds(5)) &&
      now - last_status_ < std::chrono::seconds(10)) {
    return;
  }
  if (auto s = rs.send_status(); !s) return;  // the read path reports the broken connection
  last_status_ = now;
  stats_.confirmed_lsn.store(rs.confirmed().value, std::memory_order_relaxed);
  confirmed_gauge_.Set(static_cast<double>(rs.confirmed().value));
}

// Waits until every message sent is acknowledged (before a reconnect resets the tracker).
void Relay::Impl::drain(std::stop_token stop) {
  while (producer_->in_flight() > 0 && !stop.stop_requested() && !fatal_) {
    producer_->poll(std::chrono::milliseconds(100));
  }
}

Status Relay::Impl::backfill(pg::ReplicationStream& rs, std::stop_token stop) {
  auto& conn = rs.connection();
  auto cur = conn.exec("DECLARE hi_backfill NO SCROLL CURSOR FOR SELECT * FROM " +
                       options_.outbox_table + " ORDER BY id");
  if (!cur) return cur.error().wrap("backfill");
  std::uint64_t rows = 0;
  source_ = ChangeSource{};
  source_.commit_time_unix_us = unix_now_us();
  tx_ = tracker_.begin(source_.commit_time_unix_us);
  for (;;) {
    auto batch = conn.exec("FETCH 2000 FROM hi_backfill");
    if (!batch) return batch.error().wrap("backfill");
    if (batch->empty()) break;
    for (int r = 0; r < batch->rows(); ++r) {
      ++source_.ordinal;
      auto routed = route_outbox_row(router_, *batch, r, source_);
      if (!routed) return routed.error().wrap("backfill");
      if (auto s = publish(std::move(*routed)); !s) return s;
      ++rows;
    }
    while (producer_->in_flight() >= options_.max_inflight && !stop.stop_requested()) {
      if (auto s = pump(std::chrono::milliseconds(100)); !s) return s;
    }
    if (auto s = pump(std::chrono::milliseconds(0)); !s) return s;
  }
  drain(stop);
  if (fatal_) return *fatal_;
  tracker_.commit(tx_, rs.confirmed());
  (void)tracker_.release();
  log_.info("backfill published the outbox rows present at slot creation", {{"rows", rows}});
  return {};
}

Status Relay::Impl::stream(std::stop_token stop) {
  auto conn = pg::Connection::connect(options_.database_url);
  if (!conn) return conn.error();
  if (auto s = setup(*conn); !s) return s;

  // A slot whose first backfill did not finish is redone from scratch (the marker is written
  // before the slot is created and cleared only after the backfill is on the bus).
  const std::string marker = "backfill:" + options_.slot;
  auto pending = conn->exec("SELECT value FROM relay_settings WHERE name = $1", {marker});
  if (!pending) return pending.error();
  auto slot = pg::read_slot(*conn, options_.slot);
  if (!slot) return slot.error();
  if (slot->exists && !pending->empty() && pending->text(0, 0) == "pending") {
    log_.warn("previous slot creation did not finish its backfill; redoing it",
              {{"slot", options_.slot}});
    if (auto d = conn->exec("SELECT pg_drop_replication_slot($1)", {options_.slot}); !d) {
      return d.error();
    }
    slot->exists = false;
  }

  pg::ReplicationStream::Options opts{
      options_.replication_url, options_.slot, {options_.publication}, 1, false, true};
  if (!capture_.empty()) opts.publications.push_back(options_.publication + "_capture");
  auto rs = pg::ReplicationStream::connect(opts);
  if (!rs) return rs.error();
  rs_ = &*rs;
  struct ClearStream {
    pg::ReplicationStream** p;
    ~ClearStream() { *p = nullptr; }
  } clear{&rs_};

  if (!slot->exists) {
    auto m = conn->exec(
        "INSERT INTO relay_settings (name, value) VALUES ($1, 'pending') "
        "ON CONFLICT (name) DO UPDATE SET value = 'pending'",
        {marker});
    if (!m) return m.error().wrap("relay_settings");
    auto& rc = rs->connection();
    if (auto b = rc.exec("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"); !b) return b.error();
    auto created = rc.exec("CREATE_REPLICATION_SLOT " + rc.quote_ident(options_.slot) +
                           " LOGICAL pgoutput USE_SNAPSHOT");
    if (!created) return created.error().wrap("create slot " + options_.slot);
    auto point = pg::Lsn::parse(created->text(0, 1));
    if (!point) return point.error();
    rs->confirm(*point);
    log_.info("slot created", {{"slot", options_.slot}, {"consistent_point", point->to_string()}});
    if (auto s = backfill(*rs, stop); !s) return s;
    if (auto c = rc.exec("COMMIT"); !c) return c.error();
    auto done = conn->exec("UPDATE relay_settings SET value = 'done' WHERE name = $1", {marker});
    if (!done) return done.error();
  }

  if (rs->server_version() >= 140000) rs->enable_streaming();
  if (rs->server_version() >= 140000) rs->enable_streaming();
  if (auto s = rs->start(); !s) return s;
  auto info = pg::read_slot(*conn, options_.slot);
  log_.info("streaming",
            {{"slot", options_.slot},
             {"publications", opts.publications},
             {"start_lsn", info ? info->confirmed_flush.to_string() : "?"},
             {"bus", producer_->name()},
             {"protocol", rs->streaming() ? "pgoutput v2 streaming" : "pgoutput v1"},
             {"format", options_.format == Format::kDebezium ? "debezium" : "envelope"}});
  stats_.streaming.store(true);
  conn = pg::Connection();  // the status thread has its own

  // Wakes poll(2) when a stop is requested.
  const int stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct CloseFd {
    int fd;
    ~CloseFd() { ::close(fd); }
  } close_stop{stop_fd};
  std::stop_callback on_stop(stop, [stop_fd] {
    const std::uint64_t one = 1;
    (void)!::write(stop_fd, &one, sizeof one);
  });

  if (auto s = rs->consume_input(); !s) return s;
  while (!stop.stop_requested()) {
    int handled = 0;
    while (handled < kMessagesPerTurn && producer_->in_flight() < options_.max_inflight) {
      auto ev = rs->read();
      if (!ev) return ev.error();
      if (!ev->has_value()) break;
      if (auto s = handle(**ev); !s) return s;
      ++handled;
    }
    if (auto s = pump(std::chrono::milliseconds(0)); !s) return s;
    maybe_send_status(*rs, false);
    if (handled == kMessagesPerTurn) continue;  // more is buffered: keep going

    // Idle or back-pressured: confirm what is done, then wait for input, acks or a stop.
    if (rs->confirmed() > rs->last_sent_status()) maybe_send_status(*rs, true);
    const bool want_wal = producer_->in_flight() < options_.max_inflight;
    pollfd fds[3];
    nfds_t n = 0;
    fds[n++] = {rs->socket(), static_cast<short>(want_wal ? POLLIN : 0), 0};
    fds[n++] = {stop_fd, POLLIN, 0};
    if (producer_->wake_fd() >= 0) fds[n++] = {producer_->wake_fd(), POLLIN, 0};
    int timeout_ms = 1000;
    if (producer_->in_flight() > 0 && producer_->wake_fd() < 0) timeout_ms = 20;
    const int ready = ::poll(fds, n, timeout_ms);
    if (ready < 0 && errno != EINTR) return unavailable("relay: poll failed");
    if (ready > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) {
      if (auto s = rs->consume_input(); !s) return s;
    }
    maybe_send_status(*rs, false);
  }
  // Stopping: give in-flight messages a moment, confirm what they completed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (producer_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    if (auto s = pump(std::chrono::milliseconds(50)); !s) break;
  }
  (void)pump(std::chrono::milliseconds(0));
  maybe_send_status(*rs, true);
  return {};
}

void Relay::Impl::status_loop(std::stop_token stop) {
  Logger log("relay.status");
  std::optional<pg::Connection> conn;
  std::optional<redis::Client> redis;
  std::mutex mu;
  std::condition_variable_any cv;
  auto last_heartbeat = std::chrono::steady_clock::now();
  auto last_retention = std::chrono::steady_clock::time_point{};
  auto last_trim = std::chrono::steady_clock::now();
  auto last_lag_warning = std::chrono::steady_clock::time_point{};
  const std::string pid = std::to_string(::getpid());
  while (!stop.stop_requested()) {
    const auto now = std::chrono::steady_clock::now();
    if (!conn || !conn->healthy()) {
      auto c = pg::Connection::connect(options_.database_url);
      if (c) conn = std::move(*c);
    }
    std::int64_t lag = -1;
    std::string wal_status = "unknown", safe = "";
    if (conn && conn->healthy()) {
      auto r = conn->exec(
          "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, "
          "safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
          {options_.slot});
      if (r && !r->empty()) {
        lag = r->is_null(0, 0) ? -1 : r->int64(0, 0);
        wal_status = std::string(r->text(0, 1));
        safe = std::string(r->text(0, 2));
        lag_bytes_.Set(static_cast<double>(std::max<std::int64_t>(lag, 0)));
        wal_status_.Set(wal_status == "reserved"     ? 0
                        : wal_status == "extended"   ? 1
                        : wal_status == "unreserved" ? 2
                                                     : 3);
        if (lag > options_.lag_warn_bytes && now - last_lag_warning > std::chrono::minutes(1)) {
          last_lag_warning = now;
          log.warn("slot retains much WAL", {{"slot", options_.slot},
                                             {"lag_bytes", lag},
                                             {"wal_status", wal_status},
                                             {"safe_wal_size", safe}});
        }
        if (wal_status == "lost" || wal_status == "unreserved") {
          log.error("slot is losing its WAL",
                    {{"slot", options_.slot}, {"wal_status", wal_status}});
        }
      }
      // Heartbeat: when nothing was decoded for a while, a non-transactional logical message
      // gives the stream something to confirm, so the slot advances while the tables we
      // capture are idle and the rest of the database is busy.
      const auto idle_us = unix_now_us() - stats_.last_event_unix_us.load();
      if (options_.heartbeat.count() > 0 && stats_.streaming.load() &&
          idle_us > options_.heartbeat.count() * 1000 &&
          now - last_heartbeat >= options_.heartbeat) {
        last_heartbeat = now;
        (void)conn->exec("SELECT pg_logical_emit_message(false, $1, now()::text)",
                         {std::string(kHeartbeatPrefix)});
      }
      // Retention: relayed outbox rows older than the limit, in small batches.
      // Deleting a row never loses its event: the relay reads inserts from the WAL, which the
      // slot retains until they are confirmed.
      const std::int64_t confirmed_us = stats_.confirmed_commit_unix_us.load();
      if (options_.retention_hours > 0 && confirmed_us > 0 &&
          now - last_retention >= std::chrono::minutes(1)) {
        last_retention = now;
        {
          const std::string cutoff = format_rfc3339_us(std::min(
              confirmed_us, unix_now_us() - std::int64_t{options_.retention_hours} * 3600'000'000));
          std::int64_t removed = 0;
          for (int i = 0; i < 100; ++i) {
            auto d = conn->exec("DELETE FROM " + options_.outbox_table +
                                    " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " +
                                    options_.outbox_table + " WHERE created_at < $1 LIMIT 1000))",
                                {cutoff});
            if (!d) break;
            removed += d->affected();
            if (d->affected() < 1000) break;
          }
          if (removed > 0) log.info("outbox retention", {{"deleted", removed}, {"before", cutoff}});
        }
      }
    }
    if (!options_.redis_url.empty()) {
      if (!redis) {
        auto c = redis::Client::connect(options_.redis_url, std::chrono::milliseconds(1000));
        if (c) redis = std::move(*c);
      }
      // Stream retention (Redis bus), once a minute.
      if (redis && options_.bus.kind == "redis" && now - last_trim >= std::chrono::minutes(1)) {
        last_trim = now;
        std::vector<std::string> streams = bus::standard_topics();
        for (const auto& t : options_.capture_tables) streams.push_back("cdc." + t);
        std::int64_t trimmed = 0;
        for (const auto& s : streams) {
          auto n = bus::trim_stream(*redis, s, options_.stream_keep);
          if (n) trimmed += *n;
        }
        if (trimmed > 0) log.info("stream retention", {{"trimmed", trimmed}});
      }
      if (!redis) {
        auto c = redis::Client::connect(options_.redis_url, std::chrono::milliseconds(1000));
        if (c) redis = std::move(*c);
      }
      if (redis) {
        const std::int64_t last_ack = stats_.last_ack_unix_us.load();
        std::vector<std::string> hset = {"HSET",
                                         "hi:status:relay",
                                         "mode",
                                         "cdc",
                                         "bus",
                                         options_.bus.kind,
                                         "slot",
                                         options_.slot,
                                         "confirmed_lsn",
                                         pg::Lsn{stats_.confirmed_lsn.load()}.to_string(),
                                         "lag_bytes",
                                         std::to_string(lag),
                                         "wal_status",
                                         wal_status,
                                         "safe_wal_size",
                                         safe,
                                         "in_flight",
                                         std::to_string(stats_.in_flight.load()),
                                         "events_published",
                                         std::to_string(stats_.events_published.load()),
                                         "events_acked",
                                         std::to_string(stats_.events_acked.load()),
                                         "last_ack_at",
                                         last_ack > 0 ? format_rfc3339_us(last_ack) : "",
                                         "bus_degraded",
                                         stats_.bus_degraded.load() ? "1" : "0",
                                         "streaming",
                                         stats_.streaming.load() ? "1" : "0",
                                         "reconnects",
                                         std::to_string(stats_.reconnects.load()),
                                         "streamed_transactions",
                                         std::to_string(stats_.streamed_transactions.load()),
                                         "updated_at",
                                         format_rfc3339_us(unix_now_us()),
                                         "pid",
                                         pid};
        redis->append(hset);
        redis->append(std::vector<std::string>{"PEXPIRE", "hi:status:relay", "5000"});
        redis->append(
            std::vector<std::string>{"SET", "hi:metrics:relay", metrics_.render(), "PX", "5000"});
        if (!redis->flush()) redis.reset();
      }
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
  }
}

Status Relay::Impl::run(std::stop_token stop) {
  auto routes = RouteTable::parse(options_.routes, options_.unknown_topic);
  if (!routes) return routes.error();
  router_ = OutboxRouter(std::move(*routes), options_.format);

  auto on_delivery = [this](std::uint64_t tag, const Status& status) {
    if (!status) {
      if (!fatal_) fatal_ = status.error().wrap("bus refused an event permanently");
      return;
    }
    const std::int64_t commit_us = tracker_.acked(tag);
    const std::int64_t now = unix_now_us();
    commit_to_ack_.Observe(static_cast<double>(now - commit_us) / 1e6);
    stats_.events_acked.fetch_add(1, std::memory_order_relaxed);
    stats_.last_ack_unix_us.store(now, std::memory_order_relaxed);
  };
  std::chrono::milliseconds backoff{100};
  std::mutex mu;
  std::condition_variable_any cv;
  auto sleep = [&](std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, d, [] { return false; });
  };
  while (!producer_) {
    auto p = bus::make_producer(options_.bus, on_delivery);
    if (p) {
      producer_ = std::move(*p);
      break;
    }
    log_.warn("bus unreachable; retrying", {{"error", p.error().message}});
    sleep(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    if (stop.stop_requested()) return {};
  }
  std::vector<std::string> topics = bus::standard_topics();
  for (const auto& t : options_.capture_tables) topics.push_back("cdc." + t);
  if (auto s = producer_->ensure_topics(topics); !s) {
    log_.warn("could not ensure topics", {{"error", s.error().message}});
  }
  std::jthread status([this](std::stop_token st) { status_loop(st); });

  backoff = std::chrono::milliseconds(100);
  while (!stop.stop_requested()) {
    const auto started = std::chrono::steady_clock::now();
    Status s = stream(stop);
    stats_.streaming.store(false);
    if (stop.stop_requested()) break;
    if (!s && is_fatal(s.error())) {
      log_.error("relay stopped", {{"error", s.error().message}});
      drain(stop);
      return s;
    }
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(30)) {
      backoff = std::chrono::milliseconds(100);
    }
    log_.warn("replication connection lost; reconnecting",
              {{"error", s ? std::string("stream ended") : s.error().message},
               {"backoff_ms", backoff.count()}});
    stats_.reconnects.fetch_add(1);
    reconnects_.Increment();
    drain(stop);
    tracker_.reset();
    in_tx_ = false;
    decoder_ = pg::Decoder();
    relations_ = RelationCache();
    streams_.clear();
    open_stream_.reset();
    sleep(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
  return {};
}

Relay::Relay(RelayOptions options, Metrics& metrics, Logger log)
    : impl_(std::make_unique<Impl>(std::move(options), metrics, std::move(log), stats_)) {}
Relay::~Relay() = default;
Status Relay::run(std::stop_token stop) { return impl_->run(stop); }

}  // namespace hi::cdc
