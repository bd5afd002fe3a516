// What the relay does with each decoded pgoutput message: route outbox inserts, capture table
// changes, track transactions for the ack tracker, spill and replay streamed transactions.
#include "cdc/internal/session.h"
#include "cdc/maintenance.h"
#include "cdc/snapshot.h"
#include "core/failpoint.h"
#include "core/time.h"

namespace hi::cdc {
namespace {

std::string qualified(const pg::Relation& r) {
  return (r.schema.empty() ? std::string("public") : r.schema) + "." + r.name;
}

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

// The id of a relay_snapshots row (0 when absent).
std::int64_t request_id(const pg::Relation& rel, const pg::Tuple& row) {
  for (std::size_t i = 0; i < rel.columns.size() && i < row.columns.size(); ++i) {
    if (rel.columns[i].name == "id") return std::atoll(row.columns[i].data.c_str());
  }
  return 0;
}

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

prometheus::Counter& Relay::events_counter(const std::string& topic) {
  auto it = topic_counters_.find(topic);
  if (it != topic_counters_.end()) return *it->second;
  auto& c = metrics_.counter("hashinsight_relay_events_total", "Events published, by topic",
                             {{"topic", topic}});
  topic_counters_.emplace(topic, &c);
  return c;
}

Status Relay::publish(bus::Message message) {
  events_counter(message.topic).Increment();
  if (auto s = producer_->send(std::move(message), session_->tx); !s) return s;
  tracker_.sent(session_->tx);
  stats_.events_published.fetch_add(1, std::memory_order_relaxed);
  last_change_ns_ = mono_now_ns();
  return {};
}

Status Relay::publish_outbox_row(const pg::Relation& rel, const pg::Tuple& row) {
  std::string parked;
  bus::Message m =
      route_or_park(router_, rel, row, session_->source, options_.unknown_topic, &parked);
  if (!parked.empty()) {
    log_.warn("unroutable outbox row parked",
              {{"error", parked}, {"topic", options_.unknown_topic}});
  }
  return publish(std::move(m));
}

Status Relay::put_relation(pg::Relation relation) {
  if (relation.replica_identity == 'f' && capture_.contains(qualified(relation))) {
    // The catalog as it is now, not as of this WAL position: a primary key that changed while
    // the relay was behind keys the older changes by the new one (rare; only partitions move).
    auto conn = pg::Connection::connect(options_.database_url);
    if (!conn) return conn.error().wrap("primary key of " + qualified(relation));
    auto pk = conn->exec(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND i.indisprimary",
        {std::to_string(relation.id)});
    if (!pk) return pk.error().wrap("primary key of " + qualified(relation));
    if (!pk->empty()) {  // without one, every column stays the key
      std::unordered_set<std::string_view> names;
      for (int i = 0; i < pk->rows(); ++i) names.insert(pk->text(i, 0));
      for (auto& c : relation.columns) c.key = names.contains(c.name);
    }
  }
  session_->relations.put(std::move(relation));
  return {};
}

Status Relay::handle_change(const pg::Message& msg) {
  Session& s = *session_;
  // The relation of a row change, when we publish its table (nullptr: skip the change).
  auto captured = [&](std::uint32_t id) -> Result<const pg::Relation*> {
    ++s.source.ordinal;
    const pg::Relation* rel = s.relations.find(id);
    if (rel == nullptr) return data_loss("change for unknown relation " + std::to_string(id));
    return capture_.contains(qualified(*rel)) ? rel : nullptr;
  };
  return std::visit(
      [&](const auto& m) -> Status {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, pg::Begin>) {
          s.in_tx = true;
          s.source = ChangeSource{};
          s.source.commit_lsn = m.final_lsn;
          s.source.xid = m.xid;
          s.source.commit_time_unix_us = pg::pg_time_to_unix_us(m.commit_time_us);
          s.tx = tracker_.begin(s.source.commit_time_unix_us);
        } else if constexpr (std::is_same_v<T, pg::Commit>) {
          tracker_.commit(s.tx, m.end_lsn);
          s.in_tx = false;
          stats_.transactions.fetch_add(1, std::memory_order_relaxed);
        } else if constexpr (std::is_same_v<T, pg::Relation>) {
          return put_relation(m);
        } else if constexpr (std::is_same_v<T, pg::Insert>) {
          const pg::Relation* rel = s.relations.find(m.relation_id);
          if (rel != nullptr && qualified(*rel) == options_.outbox_table) {
            ++s.source.ordinal;
            return publish_outbox_row(*rel, m.new_tuple);
          }
          if (rel != nullptr && is_table(*rel, kSnapshotTable)) {
            // A snapshot request (`hashinsight snapshot start`); published nowhere.
            if (snapshots_) snapshots_->poke(request_id(*rel, m.new_tuple));
            return {};
          }
          auto c = captured(m.relation_id);
          if (!c) return c.error();
          if (*c) {
            if (snapshots_) snapshot_note_change(**c, &m.new_tuple, s.source.xid);
            return publish(capture_change(ChangeOp::kCreate, **c, nullptr, &m.new_tuple, s.source));
          }
        } else if constexpr (std::is_same_v<T, pg::Update>) {
          // Updates of outbox rows publish nothing.
          auto c = captured(m.relation_id);
          if (!c) return c.error();
          const pg::Tuple* before = m.old_kind == pg::OldTupleKind::kNone ? nullptr : &m.old_tuple;
          if (*c) {
            if (snapshots_) {
              snapshot_note_change(**c, before, s.source.xid);  // a key that changed
              snapshot_note_change(**c, &m.new_tuple, s.source.xid);
            }
            return publish(capture_change(ChangeOp::kUpdate, **c, before, &m.new_tuple, s.source));
          }
        } else if constexpr (std::is_same_v<T, pg::Delete>) {
          auto c = captured(m.relation_id);
          if (!c) return c.error();
          if (*c) {
            if (snapshots_) snapshot_note_change(**c, &m.old_tuple, s.source.xid);
            return publish(capture_change(ChangeOp::kDelete, **c, &m.old_tuple, nullptr, s.source));
          }
        } else if constexpr (std::is_same_v<T, pg::Truncate>) {
          for (auto id : m.relation_ids) {
            ++s.source.ordinal;
            const pg::Relation* rel = s.relations.find(id);
            if (rel == nullptr || !capture_.contains(qualified(*rel))) continue;
            if (snapshots_) snapshot_note_truncate(*rel);
            if (auto st =
                    publish(capture_change(ChangeOp::kTruncate, *rel, nullptr, nullptr, s.source));
                !st) {
              return st;
            }
          }
        } else if constexpr (std::is_same_v<T, pg::LogicalMessage>) {
          // A heartbeat outside any transaction with nothing in flight: everything before it
          // is durable, so its position may be confirmed (the slot advances on idle tables).
          if (!m.transactional && m.prefix == kHeartbeatPrefix && s.quiescent(tracker_)) {
            s.rs.confirm(m.lsn);
          }
          if (m.prefix == kSnapshotPrefix && snapshots_) snapshot_watermark(m);
        }
        return {};
      },
      msg);
}

Status Relay::handle(const pg::StreamEvent& ev) {
  Session& s = *session_;
  if (ev.kind == pg::StreamEvent::Kind::kKeepalive) {
    // The server has sent everything up to wal_end: with nothing in flight it can be confirmed
    // (keeps the slot moving when our tables are idle).
    if (s.quiescent(tracker_)) s.rs.confirm(ev.wal_end);
    if (ev.reply_requested) send_status(true);
    return {};
  }
  auto msg = s.decoder.decode(bytes(ev.payload));
  if (!msg) return msg.error().wrap("decode at " + ev.wal_start.to_string());
  stats_.last_event_unix_us.store(unix_now_us(), std::memory_order_relaxed);
  if (const auto* start = std::get_if<pg::StreamStart>(&*msg)) return s.streams.start(start->xid);
  if (std::holds_alternative<pg::StreamStop>(*msg)) {
    s.streams.stop();
    return {};
  }
  if (const auto* commit = std::get_if<pg::StreamCommit>(&*msg)) return replay_stream(*commit);
  if (const auto* abort = std::get_if<pg::StreamAbort>(&*msg)) {
    s.streams.abort(abort->xid, abort->subxid);
    return {};
  }
  if (const auto* lm = std::get_if<pg::LogicalMessage>(&*msg); lm && !lm->transactional) {
    return handle_change(*msg);  // outside any transaction, streamed or not (heartbeats)
  }
  if (s.streams.open()) {
    // Relations are needed when the spill is replayed; everything else waits for the commit.
    if (const auto* rel = std::get_if<pg::Relation>(&*msg)) {
      if (auto st = put_relation(*rel); !st) return st;
    }
    return s.streams.append(std::span<const char>(ev.payload.data(), ev.payload.size()));
  }
  return handle_change(*msg);
}

// A streamed transaction committed: publish its spilled changes in order, as one transaction.
Status Relay::replay_stream(const pg::StreamCommit& commit) {
  Session& s = *session_;
  s.source = ChangeSource{};
  s.source.commit_lsn = commit.commit_lsn;
  s.source.xid = commit.xid;
  s.source.commit_time_unix_us = pg::pg_time_to_unix_us(commit.commit_time_us);
  s.tx = tracker_.begin(s.source.commit_time_unix_us);
  // Nothing spilled (every change was in tables we do not publish): still a transaction.
  if (auto spill = s.streams.take(commit.xid)) {
    if (auto st = spill->rewind(); !st) return st;
    pg::Decoder replay;
    replay.resume_stream(commit.xid);
    s.in_tx = true;
    std::string buf;
    for (std::uint64_t i = 0;; ++i) {
      auto more = spill->next(buf);
      if (!more) return more.error();
      if (!*more) break;
      auto m = replay.decode(bytes(buf));
      if (!m) return m.error().wrap("replay of streamed transaction " + std::to_string(commit.xid));
      if (auto x = message_xid(*m); x && spill->aborted(*x)) continue;
      if (auto st = handle_change(*m); !st) return st;
      // Bounded memory however large the transaction: wait for acknowledgements.
      while (producer_->in_flight() >= options_.max_inflight) {
        if (auto st = pump(std::chrono::milliseconds(100)); !st) return st;
        send_status(false);
      }
      if (i % 4096 == 4095) {
        // The pump writes what is queued to the bus, which on a loaded machine can take a good
        // part of wal_sender_timeout: tell the server we are alive before what follows adds to it.
        if (auto st = pump(std::chrono::milliseconds(0)); !st) return st;
        send_status(false);
        if (auto st = failpoint("relay.mid_stream_replay"); !st) return st;
      }
      // A long replay reads nothing from the server: keep telling it we are alive, or the
      // walsender times out (wal_sender_timeout) and the whole transaction comes again. Checked
      // after every change (a clock read; it sends only every status_interval): checked every
      // 256, a slow stretch on a loaded machine outlasted a 2 s timeout between two checks.
      send_status(false);
    }
    stats_.streamed_transactions.fetch_add(1, std::memory_order_relaxed);
  }
  tracker_.commit(s.tx, commit.end_lsn);
  s.in_tx = false;
  stats_.transactions.fetch_add(1, std::memory_order_relaxed);
  return {};
}

// Transmits and collects acknowledgements; releases what may be confirmed.
}  // namespace hi::cdc
