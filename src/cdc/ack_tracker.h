// Which WAL position may be confirmed to PostgreSQL.
//
// The relay publishes a transaction's events as it decodes them, and the bus acknowledges them
// in any order (Kafka partitions complete independently). A transaction's end LSN may be
// confirmed only when every event of it AND of every earlier transaction is acknowledged; so
// the tracker keeps transactions in commit order with a count of unacknowledged events and
// releases the longest fully acknowledged prefix.
//
// Memory: one small entry per transaction in flight, not per event. Single-threaded.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

#include "pg/lsn.h"

namespace hi::cdc {

class AckTracker {
 public:
  using TxId = std::uint64_t;  // the tag bus messages carry

  // A transaction starts (Begin); its commit time is known from the Begin message. 0 for what
  // is no transaction of the stream (a snapshot chunk): no latency is measured from it.
  TxId begin(std::int64_t commit_time_us);
  // One more event of the open transaction was sent to the bus.
  void sent(TxId tx) { entry(tx).outstanding += 1; }
  // The bus acknowledged one event of `tx`; returns the transaction's commit time. A report for
  // a transaction the tracker no longer holds (from before a reset()) is ignored: returns 0, as
  // for a transaction begun without a commit time.
  std::int64_t acked(TxId tx) {
    if (tx < base_ || tx >= base_ + txs_.size()) return 0;
    Tx& t = entry(tx);
    t.outstanding -= 1;
    return t.commit_time_us;
  }
  // The transaction's Commit arrived; `end_lsn` is what to confirm once it is acknowledged.
  void commit(TxId tx, pg::Lsn end_lsn);

  // Pops every fully acknowledged committed transaction at the front; returns the highest end
  // LSN released (nullopt when nothing was).
  std::optional<pg::Lsn> release();

  // Nothing in flight: no open transaction and nothing unacknowledged.
  bool idle() const { return txs_.empty(); }
  std::size_t transactions() const { return txs_.size(); }
  // Whether `tx` was released (fully acknowledged, it and everything before it). Meaningless for
  // a transaction begun before a reset().
  bool released(TxId tx) const { return tx < base_; }
  // Commit time of the newest released transaction (unix µs), 0 before the first.
  std::int64_t released_commit_time_us() const { return released_commit_time_us_; }
  // Forgets everything in flight (after a reconnect the server resends from the confirmed LSN).
  void reset() {
    txs_.clear();
    base_ = next_;
  }

 private:
  struct Tx {
    std::int64_t outstanding = 0;
    bool committed = false;
    pg::Lsn end_lsn;
    std::int64_t commit_time_us = 0;
  };
  Tx& entry(TxId tx) { return txs_[static_cast<std::size_t>(tx - base_)]; }

  std::deque<Tx> txs_;  // txs_[i] is TxId base_ + i
  TxId base_ = 0;
  TxId next_ = 0;
  std::int64_t released_commit_time_us_ = 0;
};

}  // namespace hi::cdc
