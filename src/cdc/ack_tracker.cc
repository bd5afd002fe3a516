#include "cdc/ack_tracker.h"

namespace hi::cdc {

AckTracker::TxId AckTracker::begin(std::int64_t commit_time_us) {
  txs_.emplace_back();
  txs_.back().commit_time_us = commit_time_us;
  return next_++;
}

void AckTracker::commit(TxId tx, pg::Lsn end_lsn) {
  Tx& t = entry(tx);
  t.committed = true;
  t.end_lsn = end_lsn;
}

std::optional<pg::Lsn> AckTracker::release() {
  std::optional<pg::Lsn> out;
  while (!txs_.empty() && txs_.front().committed && txs_.front().outstanding == 0) {
    out = txs_.front().end_lsn;
    // A snapshot chunk has no commit time (0): it says nothing of how far behind the stream is.
    if (txs_.front().commit_time_us != 0) released_commit_time_us_ = txs_.front().commit_time_us;
    txs_.pop_front();
    ++base_;
  }
  return out;
}

}  // namespace hi::cdc
