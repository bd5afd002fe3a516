// Streamed (pgoutput protocol 2) transactions that have not committed yet.
//
// PostgreSQL streams a large transaction in segments before it commits. Its changes are spilled
// to a temporary file as the raw pgoutput messages and published only at Stream Commit, so an
// aborted transaction publishes nothing and memory stays bounded whatever its size. The file
// disappears when the Spill is destroyed (tmpfile(3)). Single-threaded: the relay's loop.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>

#include "core/result.h"

namespace hi::cdc::internal {

// The spilled messages of one streamed transaction, in arrival order.
class Spill {
 public:
  static Result<Spill> create();

  // Appends one pgoutput message (the XLogData payload, its type byte first).
  Status append(std::span<const char> payload);
  // Changes of this subtransaction are dropped at replay (it aborted).
  void abort_subtransaction(std::uint32_t subxid) { aborted_subxacts_.insert(subxid); }
  bool aborted(std::uint32_t subxid) const { return aborted_subxacts_.contains(subxid); }
  std::uint64_t messages() const { return messages_; }

  // Reads the messages back from the start: next() fills `out` with one message and returns
  // true, or false after the last one. A short file is DataLoss.
  Status rewind();
  Result<bool> next(std::string& out);

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  explicit Spill(std::FILE* file) : file_(file) {}

  std::unique_ptr<std::FILE, FileCloser> file_;
  std::set<std::uint32_t> aborted_subxacts_;
  std::uint64_t messages_ = 0;
  std::uint64_t read_ = 0;
};

// The streamed transactions of one replication connection, by top-level xid, and the one whose
// segment is open (between Stream Start and Stream Stop).
class StreamedTransactions {
 public:
  // Stream Start: opens (or continues) the segment of `xid`.
  Status start(std::uint32_t xid);
  // Stream Stop.
  void stop() { open_.reset(); }
  // The xid whose segment is open, if any: its messages are spilled, not handled.
  std::optional<std::uint32_t> open() const { return open_; }
  Status append(std::span<const char> payload);
  // Stream Abort of the transaction (subxid == xid) or of one of its subtransactions.
  void abort(std::uint32_t xid, std::uint32_t subxid);
  // Stream Commit: hands over the transaction's spill (nullopt when nothing was spilled).
  std::optional<Spill> take(std::uint32_t xid);
  // No streamed transaction is pending (nothing can be confirmed past one that is).
  bool empty() const { return spills_.empty(); }

 private:
  std::unordered_map<std::uint32_t, Spill> spills_;
  std::optional<std::uint32_t> open_;
};

}  // namespace hi::cdc::internal
