// The relay's event loop: connect, stream, publish, confirm (see relay.h). What each decoded
// message does is in relay_changes.cc; the slot in slot.cc; the side thread in maintenance.cc.
#include "cdc/relay.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "cdc/internal/session.h"
#include "cdc/internal/snapshot_window.h"
#include "cdc/maintenance.h"
#include "cdc/poller.h"
#include "cdc/slot.h"
#include "cdc/snapshot.h"
#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "core/unique_fd.h"
#include "pg/connection.h"

namespace hi::cdc {
namespace {

// Decoded messages handled per loop turn before the producer is flushed: opportunistic
// batching without letting one large backlog starve acknowledgements.
constexpr int kMessagesPerTurn = 4096;

bool is_fatal(const Error& e) {
  return e.code == Code::kFailedPrecondition || e.code == Code::kDataLoss ||
         e.code == Code::kInvalidArgument || e.code == Code::kInternal;
}

}  // namespace

Relay::Relay(RelayOptions options, Metrics& metrics, Logger log)
    : options_(std::move(options)),
      metrics_(metrics),
      log_(std::move(log)),
      router_(RouteTable(), Format::kEnvelope),
      commit_to_ack_(metrics.histogram("hashinsight_relay_commit_to_ack_seconds",
                                       "Commit timestamp to bus acknowledgement", {},
                                       Metrics::fine_latency_buckets())),
      confirmed_gauge_(metrics.gauge("hashinsight_relay_confirmed_lsn",
                                     "Last LSN confirmed to PostgreSQL (as a number)")),
      reconnects_(metrics.counter("hashinsight_relay_reconnects_total", "Replication reconnects")) {
  for (const auto& t : options_.capture_tables) capture_.insert(t);
}

Relay::~Relay() = default;

Status Relay::pump(std::chrono::milliseconds timeout) {
  producer_->poll(timeout);
  if (!fatal_) fatal_ = producer_->fatal_error();
  if (fatal_) return *fatal_;
  if (auto lsn = tracker_.release()) {
    // Everything up to `lsn` is on the bus; a crash before the confirm replays it (duplicates,
    // never a loss).
    if (auto s = failpoint("relay.after_bus_ack"); !s) return s;
    if (session_) session_->rs.confirm(*lsn);
    stats_.confirmed_commit_unix_us.store(tracker_.released_commit_time_us(),
                                          std::memory_order_relaxed);
    snapshot_check_released();
  }
  stats_.in_flight.store(producer_->in_flight(), std::memory_order_relaxed);
  stats_.bus_degraded.store(producer_->degraded(), std::memory_order_relaxed);
  return {};
}

// Sends the confirmed position to the server: at once when it advanced (at most every 5 ms), or
// as a keepalive every status_interval, or when `force`d.
void Relay::send_status(bool force) {
  Session& s = *session_;
  const auto now = std::chrono::steady_clock::now();
  const bool advanced = s.rs.confirmed() > s.rs.last_sent_status();
  if (!force && !(advanced && now - s.last_status >= std::chrono::milliseconds(5)) &&
      now - s.last_status < s.status_interval) {
    return;
  }
  if (auto st = s.rs.send_status(); !st) return;  // the read path reports the broken connection
  s.last_status = now;
  stats_.confirmed_lsn.store(s.rs.confirmed().value, std::memory_order_relaxed);
  confirmed_gauge_.Set(static_cast<double>(s.rs.confirmed().value));
}

// Waits until every message sent is acknowledged (before a reconnect resets the tracker).
void Relay::drain(std::stop_token stop) {
  while (producer_->in_flight() > 0 && !stop.stop_requested() && !fatal_) {
    producer_->poll(std::chrono::milliseconds(100));
  }
}

// First start: the outbox rows that exist at the slot's consistent point, read in the slot's
// snapshot, are published as one transaction confirmed at that point.
Status Relay::backfill(std::stop_token stop) {
  Session& s = *session_;
  auto& conn = s.rs.connection();
  auto cur = conn.exec("DECLARE hi_backfill NO SCROLL CURSOR FOR SELECT * FROM " +
                       options_.outbox_table + " ORDER BY id");
  if (!cur) return cur.error().wrap("backfill");
  std::uint64_t rows = 0;
  s.source = ChangeSource{};
  s.source.commit_time_unix_us = unix_now_us();
  s.tx = tracker_.begin(s.source.commit_time_unix_us);
  for (;;) {
    // A stop during the backfill ends it unfinished: the slot's marker stays pending, so the
    // next start drops the slot and backfills again rather than skip what was not yet sent.
    if (stop.stop_requested()) return cancelled("relay: stopped during the first backfill");
    auto batch = conn.exec("FETCH 2000 FROM hi_backfill");
    if (!batch) return batch.error().wrap("backfill");
    if (batch->empty()) break;
    for (int r = 0; r < batch->rows(); ++r) {
      ++s.source.ordinal;
      if (auto st = publish(route_outbox_row(router_, *batch, r, s.source, options_.unknown_topic));
          !st) {
        return st;
      }
      ++rows;
    }
    while (producer_->in_flight() >= options_.max_inflight && !stop.stop_requested()) {
      if (auto st = pump(std::chrono::milliseconds(100)); !st) return st;
    }
    if (auto st = pump(std::chrono::milliseconds(0)); !st) return st;
    if (auto st = failpoint("relay.mid_backfill"); !st) return st;
  }
  drain(stop);
  if (fatal_) return *fatal_;
  if (producer_->in_flight() > 0) return cancelled("relay: stopped during the first backfill");
  tracker_.commit(s.tx, s.rs.confirmed());
  (void)tracker_.release();
  log_.info("backfill published the outbox rows present at slot creation", {{"rows", rows}});
  return {};
}

// Connects, prepares the slot (creating it with a backfill on first start) and starts streaming.
Status Relay::open_session(std::stop_token stop) {
  auto conn = pg::Connection::connect(options_.database_url);
  if (!conn) return conn.error();
  SlotManager slots(*conn, options_, log_);
  auto state = slots.prepare();
  if (!state) return state.error();

  pg::ReplicationStream::Options opts{
      options_.replication_url, options_.slot, {options_.publication}, 1, false, true};
  if (!capture_.empty()) opts.publications.push_back(options_.publication + "_capture");
  auto rs = pg::ReplicationStream::connect(opts);
  if (!rs) return rs.error();
  session_ = std::make_unique<Session>(std::move(*rs));
  pg::ReplicationStream& stream = session_->rs;
  snapshot_session_started();

  if (*state == SlotManager::State::kMissing) {
    if (auto st = failpoint("relay.before_slot_created"); !st) return st;
    auto point = slots.create(stream);
    if (!point) return point.error();
    stream.confirm(*point);
    if (auto st = backfill(stop); !st) return st;
    if (auto st = slots.finish_create(stream); !st) return st;
  }

  // Standby status goes out well within the server's wal_sender_timeout, also while a long
  // streamed transaction is replayed and nothing is read from the connection. Asked of the
  // walsender itself: another backend, started just before a configuration reload reached the
  // server, may still report the old value (a relay that believed 60 s sent its status every
  // 10 s to a walsender that gave up after 2 s).
  if (auto t = stream.connection().exec(
          "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'");
      t && !t->empty() && t->int64(0, 0) > 0) {
    session_->status_interval = std::min<std::chrono::milliseconds>(
        session_->status_interval, std::chrono::milliseconds(t->int64(0, 0) / 4));
  }
  if (stream.server_version() >= 140000) stream.enable_streaming();
  if (auto st = stream.start(); !st) return st;
  log_.info("streaming",
            {{"slot", options_.slot},
             {"publications", opts.publications},
             {"start_lsn", slots.confirmed_position()},
             {"bus", producer_->name()},
             {"protocol", stream.streaming() ? "pgoutput v2 streaming" : "pgoutput v1"},
             {"format", options_.format == Format::kDebezium ? "debezium" : "envelope"}});
  stats_.streaming.store(true);
  // A request committed after the reader first looked but before this stream's start (the slot
  // was being made) is in neither: look again now that everything later reaches the stream.
  if (snapshots_) snapshots_->poke(0);
  return stream.consume_input();
}

// The event loop of one connection: decode and publish what is ready, confirm what the bus
// acknowledged, and otherwise wait in poll(2) for WAL, acknowledgements or a stop.
Status Relay::stream(std::stop_token stop) {
  struct EndSession {
    Relay* relay;
    ~EndSession() {
      relay->session_.reset();
      relay->stats_.streaming.store(false);
    }
  } end_session{this};
  if (auto st = open_session(stop); !st) return st;
  pg::ReplicationStream& rs = session_->rs;

  UniqueFd stop_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  std::stop_callback on_stop(stop, [fd = stop_fd.get()] {
    const std::uint64_t one = 1;
    (void)!::write(fd, &one, sizeof one);
  });

  while (!stop.stop_requested()) {
    if (snapshots_) snapshot_events();
    int handled = 0;
    while (handled < kMessagesPerTurn && producer_->in_flight() < options_.max_inflight) {
      auto ev = rs.read();
      if (!ev) return ev.error();
      if (!ev->has_value()) break;
      if (auto st = handle(**ev); !st) return st;
      ++handled;
    }
    // A slice of a snapshot chunk goes after the changes read this turn: live changes first.
    if (snapshots_) {
      if (auto st = snapshot_publish_slice(); !st) return st;
    }
    if (auto st = pump(std::chrono::milliseconds(0)); !st) return st;
    send_status(false);
    if (handled == kMessagesPerTurn) continue;  // more is buffered: keep going

    // Idle or back-pressured: confirm what is done, then wait for input, acks or a stop.
    if (rs.confirmed() > rs.last_sent_status()) send_status(true);
    const bool want_wal = producer_->in_flight() < options_.max_inflight;
    pollfd fds[4];
    nfds_t n = 0;
    fds[n++] = {rs.socket(), static_cast<short>(want_wal ? POLLIN : 0), 0};
    fds[n++] = {stop_fd.get(), POLLIN, 0};
    if (producer_->wake_fd() >= 0) fds[n++] = {producer_->wake_fd(), POLLIN, 0};
    if (snapshots_) fds[n++] = {snapshots_->wake_fd(), POLLIN, 0};
    int timeout_ms = 1000;
    if (producer_->in_flight() > 0 && producer_->wake_fd() < 0) timeout_ms = 20;
    // Rows of a snapshot chunk wait to be published: do not sleep.
    if (snapshots_ && snapshot_rows_pending() && !session_->in_tx && want_wal) timeout_ms = 0;
    const int ready = ::poll(fds, n, timeout_ms);
    if (ready < 0 && errno != EINTR) return unavailable("relay: poll failed");
    if (ready > 0 && (fds[0].revents & (POLLIN | POLLERR | POLLHUP))) {
      if (auto st = rs.consume_input(); !st) return st;
    }
    send_status(false);
  }
  // Stopping: give in-flight messages a moment, confirm what they completed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (producer_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    if (auto st = pump(std::chrono::milliseconds(50)); !st) break;
  }
  (void)pump(std::chrono::milliseconds(0));
  send_status(true);
  return {};
}

Status Relay::connect_bus(std::stop_token stop) {
  auto on_delivery = [this](std::uint64_t tag, const Status& status) {
    if (!status) {
      if (!fatal_) fatal_ = status.error().wrap("bus refused an event permanently");
      return;
    }
    const std::int64_t commit_us = tracker_.acked(tag);
    const std::int64_t now = unix_now_us();
    if (commit_us != 0) commit_to_ack_.Observe(static_cast<double>(now - commit_us) / 1e6);
    stats_.events_acked.fetch_add(1, std::memory_order_relaxed);
    stats_.last_ack_unix_us.store(now, std::memory_order_relaxed);
  };
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  for (;;) {
    auto p = bus::make_producer(options_.bus, on_delivery);
    if (p) {
      producer_ = std::move(*p);
      break;
    }
    log_.warn("bus unreachable; retrying", {{"error", p.error().message}});
    if (!sleep_for(stop, backoff.next())) return cancelled("relay: stopped");
  }
  std::vector<std::string> topics = bus::standard_topics();
  for (const auto& t : options_.capture_tables) topics.push_back("cdc." + t);
  if (auto s = producer_->ensure_topics(topics); !s) {
    log_.warn("could not ensure topics", {{"error", s.error().message}});
  }
  return {};
}

Status Relay::run(std::stop_token stop) {
  auto routes = RouteTable::parse(options_.routes, options_.unknown_topic);
  if (!routes) return routes.error();
  router_ = OutboxRouter(std::move(*routes), options_.format);
  if (auto s = connect_bus(stop); !s) {
    return s.error().code == Code::kCancelled ? Status() : s;
  }
  // Snapshots of captured tables (`hashinsight snapshot`): a reader thread of their own.
  if (!capture_.empty()) {
    snapshot_window_ = std::make_unique<internal::SnapshotWindow>();
    snapshots_ = std::make_unique<SnapshotReader>(
        SnapshotOptions{options_.database_url, options_.capture_tables, options_.snapshot_pause},
        metrics_, log_);
  }
  struct StopSnapshots {
    Relay* relay;
    ~StopSnapshots() { relay->snapshots_.reset(); }
  } stop_snapshots{this};
  RelayMaintenance maintenance(options_, stats_, metrics_);
  std::jthread maintenance_thread([&maintenance](std::stop_token st) { maintenance.run(st); });

  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  while (!stop.stop_requested()) {
    const auto started = std::chrono::steady_clock::now();
    Status s = stream(stop);
    if (stop.stop_requested()) break;
    // A permanent refusal by the bus (unknown topic, no permission, a fatal producer error) is
    // not cured by reconnecting: stop with one clear error and let the supervisor decide.
    if (fatal_) s = failed_precondition(fatal_->message);
    if (!s && is_fatal(s.error())) {
      log_.error("relay stopped", {{"error", s.error().message}});
      drain(stop);
      return s;
    }
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(30)) backoff.reset();
    const auto delay = backoff.next();
    log_.warn("replication connection lost; reconnecting",
              {{"error", s ? std::string("stream ended") : s.error().message},
               {"backoff_ms", delay.count()}});
    stats_.reconnects.fetch_add(1);
    reconnects_.Increment();
    // The next connection starts from the confirmed LSN: forget what is in flight only once the
    // bus has reported all of it, so no late report lands on a transaction of the new one.
    drain(stop);
    if (producer_->in_flight() > 0) break;  // stopping
    tracker_.reset();
    if (!sleep_for(stop, delay)) break;
  }
  return {};
}

}  // namespace hi::cdc
