// Incremental snapshots of captured tables, by DBLog's method (watermarks through the WAL), run
// by the relay while it streams.
//
// A request is a row of relay_snapshots, inserted by the owner (`hashinsight snapshot start`).
// The table is in the relay's outbox publication, so the relay sees the insert in its stream and
// pokes the SnapshotReader; the reader also looks for unfinished requests when it starts, so a
// request survives restarts. One snapshot runs at a time, in id order.
//
// Chunk by chunk, in primary-key order (keyset pagination, any key type, composite included):
//
//   reader                                   relay loop
//   ------                                   ----------
//   kArm(attempt) ------------------------>  opens the window: records the key of every change
//                                            of the table from now on
//                 <------------------------  go(attempt)
//   low watermark (pg_logical_emit_message)
//   read the chunk (REPEATABLE READ, with its pg_current_snapshot())
//   high watermark
//   kChunk(rows) ------------------------->  at the high watermark in the stream: publishes the
//                                            rows whose key did not change in the window (the
//                                            streamed change is newer), as op "r" events
//                 <------------------------  published(attempt) once the bus acknowledged them
//   stores last_key, rows_done (progress)
//
// The window opens before the low watermark, and keys of changes made before it by transactions
// the read could not see (committed in the WAL, not yet visible: their xid is in the read's
// snapshot) are excluded too, so a row is never overwritten by an older copy of itself and a
// deleted row never comes back. Progress is stored only after the bus acknowledged the chunk: a
// crash at any step re-reads that chunk (duplicates, never a gap). Rows changed after the high
// watermark but before their chunk row is published are left to the stream as well.
//
// Thread-safe: the reader runs on its own thread with its own connection; the relay's loop
// talks to it through take()/go()/published()/abandon() and waits on wake_fd().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "bus/bus.h"
#include "cdc/router.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "core/unique_fd.h"
#include "pg/lsn.h"
#include "pg/pgoutput.h"

namespace hi::pg {
class Connection;
}

namespace hi::cdc {

inline constexpr std::string_view kSnapshotPrefix = "hi_snapshot";  // watermark messages
inline constexpr std::string_view kSnapshotTable = "public.relay_snapshots";

// What a read's snapshot (pg_current_snapshot()) sees, for pgoutput's 32-bit xids.
struct ReadVisibility {
  std::uint64_t xmin = 0;
  std::uint64_t xmax = 0;
  std::vector<std::uint64_t> in_progress;

  // "xmin:xmax:xip,xip,..."
  static Result<ReadVisibility> parse(std::string_view text);
  // Whether the changes of transaction `xid` (32 bits, as in the stream) are in the read.
  bool visible(std::uint32_t xid) const;
};

// One chunk, read and rendered, waiting for its high watermark in the stream.
struct SnapshotChunk {
  std::uint64_t attempt = 0;
  SnapshotRef ref;
  pg::Relation relation;  // the columns read (names, types), the key columns marked
  pg::Lsn low;
  pg::Lsn high;
  std::int64_t read_unix_us = 0;
  ReadVisibility visibility;
  std::vector<std::string> keys;   // the primary key of each row (snapshot_key())
  std::vector<bus::Message> rows;  // snapshot_row() of each row; the source comes at publication
};

// The primary key of a row as one string: the text values of `key_columns`, in order, each
// prefixed by its length ("3:abc1:7"). Equal for the same key from the stream and from a read
// (both are the types' text output).
std::string snapshot_key(const pg::Tuple& row, const std::vector<int>& key_columns);

struct SnapshotOptions {
  std::string database_url;
  std::vector<std::string> capture_tables;  // "schema.table"
  std::chrono::milliseconds pause{0};       // between chunks (RELAY_SNAPSHOT_PAUSE_MS)
};

class SnapshotReader {
 public:
  struct Event {
    enum class Kind {
      kArm,    // a chunk is about to be read: open the window, then go(attempt)
      kChunk,  // the chunk, read: publish it at its high watermark
      kIdle,   // no snapshot runs: stop recording the table's keys
    };
    Kind kind = Kind::kIdle;
    std::uint64_t attempt = 0;
    std::string table;                     // kArm
    std::vector<std::string> key_names;    // kArm: the primary key columns, in key order
    std::unique_ptr<SnapshotChunk> chunk;  // kChunk
  };

  SnapshotReader(SnapshotOptions options, Metrics& metrics, Logger log);
  ~SnapshotReader();  // stops the thread
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;

  // Readable when take() has something.
  int wake_fd() const { return wake_.get(); }
  std::optional<Event> take();

  // A request row was inserted (seen in the stream).
  void poke(std::int64_t id);
  // The loop opened the window of `attempt`.
  void go(std::uint64_t attempt);
  // The bus acknowledged every row of `attempt`'s chunk; `excluded` rows were left to the stream.
  void published(std::uint64_t attempt, std::uint64_t excluded);
  // The loop lost its replication connection: the chunk in progress is read again.
  void abandon();

 private:
  struct Request;
  void run(std::stop_token stop);
  Status work(std::stop_token stop);
  Status run_snapshot(Request& request, std::stop_token stop);
  Status mark_failed(std::int64_t id, const std::string& error);
  Result<pg::Lsn> emit(const std::string& content);
  void post(Event event);
  // Waits for go(attempt) / published(attempt); false when abandoned or stopping.
  bool wait_for(std::stop_token stop, std::uint64_t attempt, bool for_published);

  SnapshotOptions options_;
  Metrics& metrics_;
  Logger log_;
  UniqueFd wake_;
  std::unique_ptr<pg::Connection> conn_;
  std::uint64_t next_attempt_;

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Event> out_;
  std::atomic<bool> pending_{false};  // out_ is not empty (read by take() without the lock)
  std::int64_t poked_id_ = 0;
  bool poked_ = false;
  std::uint64_t go_attempt_ = 0;
  std::uint64_t published_attempt_ = 0;
  std::uint64_t excluded_ = 0;
  bool abandoned_ = false;

  prometheus::Counter& rows_total_;
  prometheus::Counter& excluded_total_;
  prometheus::Counter& chunks_total_;
  prometheus::Gauge& rows_done_;
  prometheus::Gauge& rows_estimated_;
  std::jthread thread_;  // last: starts after everything it uses
};

}  // namespace hi::cdc
