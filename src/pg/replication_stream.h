// A logical replication connection (libpq, replication=database) streaming pgoutput.
//
// Lifecycle: connect() -> ensure_slot() -> start() -> { read() ... confirm() } ... The stream is
// non-blocking: read() returns what has arrived without waiting, and socket() is what to poll(2)
// for more. Keepalives are answered by the caller through confirm()/send_status(): the stream
// records when the server asked for a reply (reply_requested()).
//
// Confirmation: confirm(lsn) records the position whose every change is durable downstream;
// send_status() tells the server (write = flush = apply = confirmed), which lets the slot
// advance and the server recycle WAL. Nothing else ever advances it.
//
// One thread owns a ReplicationStream.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "pg/connection.h"
#include "pg/lsn.h"

namespace hi::pg {

struct SlotInfo {
  bool exists = false;
  std::string plugin;
  Lsn confirmed_flush;
  Lsn restart_lsn;
  std::string wal_status;  // reserved | extended | unreserved | lost
  std::optional<std::int64_t> safe_wal_size;
  bool active = false;
};

// Reads pg_replication_slots over a normal connection.
Result<SlotInfo> read_slot(Connection& conn, const std::string& slot);

// One message from the server.
struct StreamEvent {
  enum class Kind { kData, kKeepalive };
  Kind kind = Kind::kData;
  Lsn wal_start;  // kData: the LSN of this message's WAL record
  Lsn wal_end;    // the server's position (end of WAL sent)
  bool reply_requested = false;
  std::string payload;  // kData: the pgoutput message
};

class ReplicationStream {
 public:
  struct Options {
    std::string conninfo;  // postgresql:// URL or key=value; replication=database is added
    std::string slot;
    std::vector<std::string> publications;
    int proto_version = 1;
    bool streaming = false;  // protocol 2 streaming of in-progress transactions
    bool messages = true;    // pg_logical_emit_message (heartbeats)
  };

  static Result<ReplicationStream> connect(Options options);
  ReplicationStream(ReplicationStream&&) noexcept = default;
  ReplicationStream& operator=(ReplicationStream&&) noexcept = default;

  // Creates the slot (pgoutput) when missing; returns true when it was created.
  Result<bool> create_slot_if_missing();
  // Protocol 2 with streaming of in-progress transactions (PostgreSQL 14 and later): large
  // transactions arrive in segments before they commit, instead of being spilled by the
  // server until commit. Call before start().
  void enable_streaming() {
    options_.proto_version = 2;
    options_.streaming = true;
  }
  bool streaming() const { return options_.streaming; }
  // START_REPLICATION from the slot's confirmed position.
  Status start();
  // Reads one message if one has arrived; nullopt when nothing is buffered (poll socket()).
  Result<std::optional<StreamEvent>> read();
  // Reads what the socket has into libpq's buffer (after poll(2) said readable).
  Status consume_input();

  void confirm(Lsn lsn) {
    if (lsn > confirmed_) confirmed_ = lsn;
  }
  Lsn confirmed() const { return confirmed_; }
  Lsn last_sent_status() const { return status_sent_; }
  // Sends a standby status update with the confirmed position.
  Status send_status(bool reply_requested = false);

  int socket() const { return conn_.socket(); }
  int server_version() const { return server_version_; }
  Connection& connection() { return conn_; }

 private:
  ReplicationStream(Connection conn, Options options)
      : conn_(std::move(conn)), options_(std::move(options)) {}

  Connection conn_;
  Options options_;
  Lsn confirmed_;
  Lsn status_sent_;
  int server_version_ = 0;
};

// The unix-epoch microseconds of now, in PostgreSQL's epoch (2000-01-01), for status messages.
std::int64_t pg_now_us();

}  // namespace hi::pg
