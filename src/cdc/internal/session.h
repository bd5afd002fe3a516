// The state of one replication connection of the relay (shared by relay.cc, the event loop,
// and relay_changes.cc, what each decoded message does).
#pragma once

#include <chrono>

#include "cdc/ack_tracker.h"
#include "cdc/internal/spill.h"
#include "cdc/relay.h"
#include "cdc/router.h"
#include "pg/pgoutput.h"
#include "pg/replication_stream.h"

namespace hi::cdc {

// What belongs to one replication connection. Built on every (re)connect and dropped with it,
// so nothing of a broken stream (a half-decoded transaction, spill files, relation ids) leaks
// into the next one, which restarts from the confirmed LSN.
struct Relay::Session {
  explicit Session(pg::ReplicationStream stream) : rs(std::move(stream)) {}

  pg::ReplicationStream rs;
  pg::Decoder decoder;
  RelationCache relations;
  internal::StreamedTransactions streams;
  bool in_tx = false;  // between Begin and Commit (or inside a replayed streamed transaction)
  AckTracker::TxId tx = 0;
  ChangeSource source;
  std::chrono::steady_clock::time_point last_status{};
  // Longest time between two standby status messages (a quarter of wal_sender_timeout).
  std::chrono::milliseconds status_interval{10000};

  // Nothing in flight and between transactions: a position the server sent may be confirmed.
  bool quiescent(const AckTracker& tracker) const {
    return !in_tx && tracker.idle() && streams.empty();
  }
};

}  // namespace hi::cdc
