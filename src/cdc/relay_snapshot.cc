// The relay loop's half of a snapshot (snapshot.h): windows, watermarks, and publishing a
// chunk's rows at its high watermark, a slice per loop turn so live changes keep flowing.
#include "cdc/internal/session.h"
#include "cdc/internal/snapshot_window.h"
#include "cdc/snapshot.h"
#include "core/time.h"

namespace hi::cdc {
namespace {

// Bytes of snapshot rows published per loop turn. While changes stream, a slice is small, so a
// change read in the same turn (sent ahead of it) or the next waits behind little: Redis with
// appendfsync always syncs once per read of a client's pipeline (16 kB). On a quiet stream the
// slices are large and the snapshot goes at full speed.
constexpr std::size_t kSliceBytes = 16 * 1024;
constexpr std::size_t kQuietSliceBytes = 512 * 1024;
constexpr std::int64_t kQuietAfterNs = 250'000'000;

std::vector<int> key_positions(const pg::Relation& rel, const std::vector<std::string>& names) {
  std::vector<int> out;
  for (const auto& n : names) {
    int at = -1;
    for (std::size_t i = 0; i < rel.columns.size(); ++i) {
      if (rel.columns[i].name == n) at = static_cast<int>(i);
    }
    out.push_back(at);
  }
  return out;
}

}  // namespace

void Relay::snapshot_events() {
  using Kind = SnapshotReader::Event::Kind;
  internal::SnapshotWindow& w = *snapshot_window_;
  while (auto e = snapshots_->take()) {
    switch (e->kind) {
      case Kind::kArm:
        // A chunk being published belongs to an attempt the reader gave up (it reads it again):
        // its remaining rows are dropped, what was sent stands.
        if (w.publishing && !w.sent_all) tracker_.commit(w.tx, *w.high);
        w.close();
        w.table = e->table;
        w.key_names = e->key_names;
        w.attempt = e->attempt;
        snapshots_->go(e->attempt);
        break;
      case Kind::kChunk:
        if (e->attempt == w.attempt && !w.chunk) w.chunk = std::move(e->chunk);
        break;
      case Kind::kIdle:
        if (w.publishing && !w.sent_all) tracker_.commit(w.tx, *w.high);
        w.close();
        w.table.clear();
        w.recent.clear();
        break;
    }
  }
}

void Relay::snapshot_note_change(const pg::Relation& rel, const pg::Tuple* row, std::uint32_t xid) {
  internal::SnapshotWindow& w = *snapshot_window_;
  if (w.table.empty() || row == nullptr || !is_table(rel, w.table)) return;
  std::string key = snapshot_key(*row, key_positions(rel, w.key_names));
  if (w.attempt != 0) w.changed.insert(key);
  w.recent.emplace_back(xid, std::move(key));
  if (w.recent.size() > internal::SnapshotWindow::kRecent) w.recent.pop_front();
}

void Relay::snapshot_note_truncate(const pg::Relation& rel) {
  internal::SnapshotWindow& w = *snapshot_window_;
  if (w.attempt != 0 && is_table(rel, w.table)) w.truncated = true;
}

void Relay::snapshot_watermark(const pg::LogicalMessage& m) {
  internal::SnapshotWindow& w = *snapshot_window_;
  if (w.attempt == 0) return;
  const auto colon = m.content.find(':');
  if (colon == std::string::npos || m.content.substr(colon + 1) != std::to_string(w.attempt)) {
    return;  // another attempt's (an abandoned one, or replayed after a reconnect)
  }
  if (m.content.compare(0, colon, "low") == 0) {
    w.low_seen = true;
  } else if (m.content.compare(0, colon, "high") == 0 && w.low_seen) {
    w.high = m.lsn;
  }
}

bool Relay::snapshot_rows_pending() const {
  const internal::SnapshotWindow& w = *snapshot_window_;
  return w.chunk && w.high && !w.sent_all;
}

// Publishes the next slice of the chunk once its high watermark went by, between transactions.
Status Relay::snapshot_publish_slice() {
  internal::SnapshotWindow& w = *snapshot_window_;
  if (!snapshot_rows_pending() || session_->in_tx) return {};
  SnapshotChunk& c = *w.chunk;
  if (!w.publishing) {
    // Changes the read could not see, made before the window opened, are newer than its rows.
    for (const auto& [xid, key] : w.recent) {
      if (!c.visibility.visible(xid)) w.changed.insert(key);
    }
    w.tx = tracker_.begin(0);  // no commit time: the stream's latency figures leave it out
    w.publishing = true;
  }
  if (!w.source) w.source.emplace(c.relation, *w.high, c.read_unix_us, c.ref);
  const std::size_t limit =
      mono_now_ns() - last_change_ns_ < kQuietAfterNs ? kSliceBytes : kQuietSliceBytes;
  std::size_t bytes = 0;
  for (; w.next < c.rows.size() && bytes < limit && producer_->in_flight() < options_.max_inflight;
       ++w.next) {
    // The streamed change of a key that changed in the window (or since) is newer: skip the row.
    if (w.truncated || w.changed.contains(c.keys[w.next])) {
      ++w.excluded;
      continue;
    }
    bus::Message& m = c.rows[w.next];
    w.source->finish(m, static_cast<std::uint32_t>(w.next + 1));
    bytes += m.value.size() + m.key.size();
    events_counter(m.topic).Increment();
    if (auto st = producer_->send(std::move(m), w.tx); !st) return st;
    tracker_.sent(w.tx);
    stats_.events_published.fetch_add(1, std::memory_order_relaxed);
  }
  if (w.next == c.rows.size()) {
    tracker_.commit(w.tx, *w.high);
    w.sent_all = true;
    c.rows = {};
    c.keys = {};
  }
  return {};
}

// After the tracker released: a chunk whose every row the bus acknowledged is reported, so the
// reader records its progress and reads the next one.
void Relay::snapshot_check_released() {
  if (!snapshot_window_) return;
  internal::SnapshotWindow& w = *snapshot_window_;
  if (!w.sent_all || !tracker_.released(w.tx)) return;
  snapshots_->published(w.attempt, w.excluded);
  w.close();
}

void Relay::snapshot_session_started() {
  if (!snapshots_) return;
  internal::SnapshotWindow& w = *snapshot_window_;
  // The new connection replays from the confirmed position and the tracker was reset: the chunk
  // in progress is read again under a new window.
  if (w.attempt != 0) snapshots_->abandon();
  w.close();
  w.recent.clear();
}

}  // namespace hi::cdc
