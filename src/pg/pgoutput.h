// Decoder for pgoutput, PostgreSQL's logical replication output plugin, protocol versions 1 and 2.
//
// The relay receives the logical replication stream as CopyData frames; each XLogData frame ('w')
// carries one pgoutput message as its payload. Decoder::decode turns that payload into a typed
// Message (a std::variant of one struct per message kind):
//
//   Begin                     a transaction starts (not streamed)
//     [Origin]                the transaction was replayed from another node
//     Relation / Type         schema of a table / a non-built-in type, sent before first use
//     Insert / Update / Delete / Truncate / LogicalMessage
//   Commit
//
//   LogicalMessage            a non-transactional pg_logical_emit_message, outside any transaction
//
// With protocol 2 and streaming on, a large transaction arrives before it commits, in segments:
//
//   StreamStart{xid}  Relation / Type / Insert / ... (each with .xid)  StreamStop
//   ... more segments, interleaved with other transactions ...
//   StreamCommit{xid}  or  StreamAbort{xid, subxid}
//
// Inside a stream (between StreamStart and StreamStop) the Relation, Type, Insert, Update, Delete,
// Truncate and LogicalMessage messages carry the xid of the (sub)transaction they belong to; the
// Decoder tracks StreamStart/StreamStop itself to know whether that field is on the wire, and fills
// the `xid` member of those structs exactly when it was present. Within a stream, a change made in
// a subtransaction carries the subtransaction's xid, not the top-level one.
//
// Wire format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html.
// Integers are big-endian on the wire and decoded to host order; LSNs are Lsn; timestamps are kept
// as on the wire (microseconds since 2000-01-01 UTC, see pg_time_to_unix_us).
//
// Lifecycle: construct one Decoder per replication connection (START_REPLICATION) and feed it every
// payload of that connection in order; a reconnect starts a new Decoder (PostgreSQL restarts the
// stream at a transaction boundary). Decoded messages own their data and do not refer to the input
// buffer, which may be reused as soon as decode() returns.
//
// Thread-safety: a Decoder is used by one thread (the thread that owns the connection). It is a
// small value (the stream state); copying it copies that state. The free functions are pure.
//
// Errors: decode() never reads outside the span and never crashes on any input. A payload that ends
// early returns kDataLoss; a malformed one (unknown message type, unknown tuple column kind,
// negative length, trailing bytes, a stream message out of place) returns kInvalidArgument. Every
// message names the kind and byte offset in the payload:
//   "pgoutput insert: truncated new tuple column 2 data at offset 17"
//   "pgoutput: unknown message type 'Z' (0x5a) at offset 0"
// On error the Decoder's state is unchanged, so the caller may log, skip or stop.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/result.h"
#include "pg/lsn.h"

namespace hi::pg {

// ---- tuple data
// ----------------------------------------------------------------------------------

// One column value of a row image.
struct Column {
  enum class Kind : std::uint8_t {
    kNull,            // 'n': SQL NULL
    kUnchangedToast,  // 'u': an out-of-line (TOAST) value the UPDATE did not change; the value is
                      // NOT sent and is NOT null: a sink must keep what it has (never write NULL)
    kText,            // 't': the value in the type's text output format
    kBinary,          // 'b': the value in the type's binary send format (option binary 'true')
  };

  Kind kind = Kind::kNull;
  std::string data;  // the bytes for kText / kBinary; empty for kNull / kUnchangedToast
};

// A row image: one Column per column of the Relation, in the Relation's column order.
struct Tuple {
  std::vector<Column> columns;
};

// ---- schema
// --------------------------------------------------------------------------------------

struct RelationColumn {
  bool key = false;  // part of the replica identity (every column for REPLICA IDENTITY FULL)
  std::string name;
  std::uint32_t type_oid = 0;
  std::int32_t type_modifier = -1;  // atttypmod, -1 when the type has none
};

// 'R': the schema of a table. Sent before the first change of a table in a session (and, inside a
// stream, in each streamed transaction), and again after its schema changed: a consumer replaces
// any cached entry with the same id.
struct Relation {
  static constexpr std::string_view kName = "relation";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  std::uint32_t id = 0;              // the table's oid; Insert/Update/... refer to it
  std::string schema;                // namespace; empty means pg_catalog
  std::string name;
  char replica_identity = 'd';  // 'd' default (primary key), 'n' nothing, 'f' full, 'i' index
  std::vector<RelationColumn> columns;
};

// 'Y': a non-built-in data type (an enum, a domain, ...) used by a Relation that follows.
struct Type {
  static constexpr std::string_view kName = "type";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  std::uint32_t id = 0;              // the type's oid, as in RelationColumn::type_oid
  std::string schema;                // namespace; empty means pg_catalog
  std::string name;
};

// ---- transaction boundaries
// ----------------------------------------------------------------------

// 'B': a (non-streamed) transaction starts.
struct Begin {
  static constexpr std::string_view kName = "begin";
  Lsn final_lsn;                    // LSN of the commit record
  std::int64_t commit_time_us = 0;  // microseconds since 2000-01-01 UTC, as on the wire
  std::uint32_t xid = 0;
};

// 'C': the transaction started by the last Begin committed.
struct Commit {
  static constexpr std::string_view kName = "commit";
  std::uint8_t flags = 0;  // currently unused (0)
  Lsn commit_lsn;          // LSN of the commit record (== Begin::final_lsn)
  Lsn end_lsn;             // end of the commit record: the position to confirm once it is durable
  std::int64_t commit_time_us = 0;
};

// 'O': the current transaction was replayed from another node (replication origin).
struct Origin {
  static constexpr std::string_view kName = "origin";
  Lsn commit_lsn;  // the commit LSN on the origin server
  std::string name;
};

// ---- changes
// -------------------------------------------------------------------------------------

// Which old row image an Update or Delete carries.
enum class OldTupleKind : char {
  kNone = 0,    // no old image (Update under REPLICA IDENTITY DEFAULT/INDEX with the key unchanged)
  kKey = 'K',   // 'K': the replica identity columns only; the other columns are kNull
  kFull = 'O',  // 'O': the whole old row (REPLICA IDENTITY FULL)
};

// 'I'
struct Insert {
  static constexpr std::string_view kName = "insert";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  std::uint32_t relation_id = 0;
  Tuple new_tuple;
};

// 'U'
struct Update {
  static constexpr std::string_view kName = "update";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  std::uint32_t relation_id = 0;
  OldTupleKind old_kind = OldTupleKind::kNone;
  Tuple old_tuple;  // empty when old_kind == kNone
  Tuple new_tuple;  // unchanged TOAST columns are Kind::kUnchangedToast
};

// 'D'
struct Delete {
  static constexpr std::string_view kName = "delete";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  std::uint32_t relation_id = 0;
  OldTupleKind old_kind = OldTupleKind::kKey;  // kKey or kFull, never kNone
  Tuple old_tuple;
};

// 'T': one TRUNCATE statement; relation_ids lists every published table it truncated (including
// the ones reached through CASCADE).
struct Truncate {
  static constexpr std::string_view kName = "truncate";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  bool cascade = false;
  bool restart_identity = false;
  std::vector<std::uint32_t> relation_ids;
};

// 'M': pg_logical_emit_message (sent with the slot option messages 'true'). A transactional message
// comes inside its transaction; a non-transactional one on its own, outside any Begin/Commit.
struct LogicalMessage {
  static constexpr std::string_view kName = "message";
  std::optional<std::uint32_t> xid;  // present inside a stream (protocol 2)
  bool transactional = false;
  Lsn lsn;  // LSN of the message record
  std::string prefix;
  std::string content;  // arbitrary bytes
};

// ---- streaming (protocol 2)
// ----------------------------------------------------------------------

// 'S': a segment of the streamed transaction xid starts.
struct StreamStart {
  static constexpr std::string_view kName = "stream_start";
  std::uint32_t xid = 0;
  bool first_segment = false;  // the first segment of this transaction
};

// 'E': the current segment ends.
struct StreamStop {
  static constexpr std::string_view kName = "stream_stop";
};

// 'c': the streamed transaction xid committed; apply its segments.
struct StreamCommit {
  static constexpr std::string_view kName = "stream_commit";
  std::uint32_t xid = 0;
  std::uint8_t flags = 0;  // currently unused (0)
  Lsn commit_lsn;
  Lsn end_lsn;  // the position to confirm once the transaction is durable
  std::int64_t commit_time_us = 0;
};

// 'A': the streamed transaction xid aborted (subxid == xid), or only its subtransaction subxid did:
// drop the changes streamed with that (sub)transaction's xid.
struct StreamAbort {
  static constexpr std::string_view kName = "stream_abort";
  std::uint32_t xid = 0;
  std::uint32_t subxid = 0;
};

// One decoded pgoutput message. Every alternative has a kName (see message_name).
using Message =
    std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate,
                 LogicalMessage, StreamStart, StreamStop, StreamCommit, StreamAbort>;

// "begin", "commit", "origin", "relation", "type", "insert", "update", "delete", "truncate",
// "message", "stream_start", "stream_stop", "stream_commit", "stream_abort" (stable: usable as a
// metric label).
std::string_view message_name(const Message& message);

// Converts a PostgreSQL timestamp (microseconds since 2000-01-01 UTC) to microseconds since the
// Unix epoch, saturating instead of overflowing.
std::int64_t pg_time_to_unix_us(std::int64_t pg_time_us);

// Decodes the pgoutput payloads of one replication connection, in order. See the file comment for
// lifecycle, thread-safety and errors.
class Decoder {
 public:
  // Decodes one XLogData payload (without the 'w' header: the first byte is the message type).
  // The result does not refer to `data`.
  Result<Message> decode(std::span<const std::uint8_t> data);

  // The xid of the streamed transaction whose segment is open (after StreamStart, before
  // StreamStop), or nullopt outside a stream segment.
  std::optional<std::uint32_t> stream_xid() const { return stream_xid_; }
  bool in_stream() const { return stream_xid_.has_value(); }

  // Continues decoding inside the segment of streamed transaction `xid`, as after its
  // StreamStart: for replaying messages that were spilled while that segment was open (they
  // carry their xid, which the decoder then expects).
  void resume_stream(std::uint32_t xid) { stream_xid_ = xid; }

 private:
  std::optional<std::uint32_t> stream_xid_;
};

}  // namespace hi::pg
