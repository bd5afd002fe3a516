// The relay's replication slot and publications: checked on every connect, created on first
// start.
//
// A slot is created inside a REPEATABLE READ transaction on the replication connection
// (CREATE_REPLICATION_SLOT ... USE_SNAPSHOT), so the rows that transaction reads are exactly
// those committed before the slot's consistent point: the relay backfills them from it and the
// stream delivers everything after. A marker row (relay_settings `backfill:<slot>`) is written
// 'pending' before the slot exists and 'done' after the backfill is on the bus, so a relay that
// died in between drops the slot and redoes both.
//
// A slot found invalidated (wal_status = lost) is an error; it is recreated only when the
// operator asked for it (RelayOptions::recreate_slot).
//
// Used by the relay's loop thread for the duration of one connect; not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "cdc/relay.h"
#include "core/log.h"
#include "core/result.h"
#include "pg/lsn.h"

namespace hi::pg {
class Connection;
class ReplicationStream;
}  // namespace hi::pg

namespace hi::cdc {

// Makes the capture publication (`<publication>_capture`) publish exactly `tables`
// ("schema.table"), as the owner does it: `hashinsight migrate` and `up`, from
// RELAY_CAPTURE_TABLES, and grants hashinsight_relay SELECT on them (for their snapshots). The
// relay itself never creates or alters a publication (it does not own the tables); it checks them
// and stops with this command's name when they do not match.
Status set_capture_tables(pg::Connection& owner, const std::string& publication,
                          const std::vector<std::string>& tables);

class SlotManager {
 public:
  enum class State { kReady, kMissing };

  // `conn` is an ordinary (non-replication) connection.
  SlotManager(pg::Connection& conn, const RelayOptions& options, Logger& log)
      : conn_(conn), options_(options), log_(log) {}

  // Checks the publications, refuses an invalidated slot (or drops it when asked to), drops a
  // slot whose first backfill did not finish. kMissing: create() must run before streaming.
  Result<State> prepare();
  // Marks the backfill pending, opens the snapshot transaction on `stream`'s connection and
  // creates the slot in it; returns the consistent point. The caller backfills from the
  // snapshot, then calls finish_create().
  Result<pg::Lsn> create(pg::ReplicationStream& stream);
  // Ends the snapshot transaction and marks the backfill done.
  Status finish_create(pg::ReplicationStream& stream);
  // The slot's confirmed_flush_lsn, as text (for logs); "?" when unknown.
  std::string confirmed_position();

 private:
  Status check_publications();
  std::string marker() const { return "backfill:" + options_.slot; }

  pg::Connection& conn_;
  const RelayOptions& options_;
  Logger& log_;
};

}  // namespace hi::cdc
