// The relay loop's side of a snapshot chunk (snapshot.h): the keys of the table changed since
// the chunk's window opened, its watermarks as seen in the stream, and the chunk while it is
// published. Kept across replication connections (like the ack tracker); a reconnect abandons the
// chunk in progress.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cdc/ack_tracker.h"
#include "cdc/snapshot.h"
#include "pg/lsn.h"

namespace hi::cdc::internal {

struct SnapshotWindow {
  // The table whose keys are recorded ("" while no snapshot runs) and its key columns.
  std::string table;
  std::vector<std::string> key_names;
  // The last changes of the table, (xid, key): those made just before a window opened by a
  // transaction the chunk's read could not see are excluded too.
  std::deque<std::pair<std::uint32_t, std::string>> recent;
  static constexpr std::size_t kRecent = 8192;

  // The chunk's window: open from kArm until its rows are published.
  std::uint64_t attempt = 0;  // 0: no window
  std::unordered_set<std::string> changed;
  bool truncated = false;
  bool low_seen = false;
  std::optional<pg::Lsn> high;
  std::unique_ptr<SnapshotChunk> chunk;
  // Publication.
  bool publishing = false;
  bool sent_all = false;
  std::size_t next = 0;
  std::uint64_t excluded = 0;
  AckTracker::TxId tx = 0;
  std::optional<SnapshotSource> source;  // the chunk's, rendered once

  // Closes the window (keeps the table and its recent changes).
  void close() {
    attempt = 0;
    changed.clear();
    truncated = false;
    low_seen = false;
    high.reset();
    chunk.reset();
    publishing = false;
    sent_all = false;
    next = 0;
    excluded = 0;
    source.reset();
  }
};

}  // namespace hi::cdc::internal
