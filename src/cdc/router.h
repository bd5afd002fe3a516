// Turning decoded changes into bus messages.
//
// OutboxRouter: an INSERT into the outbox table becomes one message. The topic comes from the
// kind's prefix (`miner.added` -> `events.miner`), unless the route table maps the prefix
// elsewhere; a prefix with no route goes to the unknown-kind topic (events.dlq by default) with a
// `reason` header. Key = user_id. Value = the JSON envelope of CONTRACTS.md, or, in Debezium
// format, the payload itself with headers `id` and `eventType` (Debezium's outbox EventRouter).
//
// Table capture: any other published table becomes a change event on `cdc.<schema>.<table>`:
// {op, types, before, after, unchanged, source{commit_lsn, ordinal, xid, commit_ts, table}}, key =
// the replica identity columns as a JSON object. `types` names every column's type as of the
// change, as format_type() prints it ({"id":"bigint","price":"numeric(12,2)"}; "oid <n>" for a
// type that is not built in), so a sink can follow schema changes. A TOASTed value an UPDATE did
// not change is never written as null: it is left out of `after` and its column named in
// `unchanged`.
//
// Pure functions of their inputs; no I/O. Thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "bus/bus.h"
#include "core/result.h"
#include "pg/lsn.h"
#include "pg/pgoutput.h"

namespace hi::cdc {

// Where in the WAL a change sits: enough for the envelope's `source` and for table-change ids
// (`commit_lsn:ordinal`).
struct ChangeSource {
  pg::Lsn commit_lsn;
  std::uint32_t xid = 0;
  std::int64_t commit_time_unix_us = 0;
  std::uint32_t ordinal = 0;  // 1-based position of the change in its transaction
};

class RouteTable {
 public:
  // spec: "prefix=topic,prefix=topic" (may be empty).
  static Result<RouteTable> parse(std::string_view spec, std::string unknown_topic);

  struct Route {
    std::string topic;
    bool known = true;  // false: no route for the prefix (goes to the unknown-kind topic)
  };
  Route route(std::string_view kind) const;

 private:
  std::map<std::string, std::string, std::less<>> overrides_;
  std::string unknown_topic_ = "events.dlq";
};

enum class Format { kEnvelope, kDebezium };

// Latest Relation message per relation id (pgoutput sends one before first use and after every
// schema change).
class RelationCache {
 public:
  void put(pg::Relation relation);
  const pg::Relation* find(std::uint32_t id) const;

 private:
  std::unordered_map<std::uint32_t, pg::Relation> relations_;
};

class OutboxRouter {
 public:
  OutboxRouter(RouteTable routes, Format format) : routes_(std::move(routes)), format_(format) {}

  // The message for one outbox row. Fails on a row the platform could not have written (missing
  // id, kind or user_id; payload not a JSON object): such a row is routed nowhere silently, the
  // relay reports the error.
  Result<bus::Message> route(const pg::Relation& relation, const pg::Tuple& row,
                             const ChangeSource& source) const;

 private:
  RouteTable routes_;
  Format format_;
};

enum class ChangeOp : char {
  kCreate = 'c',
  kUpdate = 'u',
  kDelete = 'd',
  kTruncate = 't',
  kRead = 'r',  // a row of a snapshot (`hashinsight snapshot`), not a change
};

// The change event of a captured table. `before` may be null (inserts, updates without an old
// image), `after` null for deletes and truncates.
bus::Message capture_change(ChangeOp op, const pg::Relation& relation, const pg::Tuple* before,
                            const pg::Tuple* after, const ChangeSource& source);

// A snapshot row (op "r") in two steps: snapshot_row() renders everything but the source, off
// the relay's loop; SnapshotSource::finish() appends the source once the chunk's high
// watermark position is known: the watermark's LSN, the row's 1-based index in its chunk, and
// `source.snapshot` {id, table, chunk, last}. Headers: `id` (commit_lsn:ordinal) and `op`.
struct SnapshotRef {
  std::int64_t id = 0;
  std::int64_t chunk = 0;  // 1-based
  bool last = false;       // the snapshot's final chunk
};
bus::Message snapshot_row(const pg::Relation& relation, const pg::Tuple& row);

// What the rows of one chunk share, rendered once per chunk.
class SnapshotSource {
 public:
  SnapshotSource(const pg::Relation& relation, pg::Lsn high_watermark, std::int64_t read_unix_us,
                 const SnapshotRef& snapshot);
  void finish(bus::Message& message, std::uint32_t ordinal) const;

 private:
  std::string lsn_;
  std::string head_;  // {"commit_lsn":"...","ordinal":
  std::string tail_;  // ,"xid":0,...,"snapshot":{...}}}
};

// The message of an outbox row: routed, or, when the router refuses the row (a payload that is
// not an object, a missing id or kind), parked whole on `park_topic` as a table change with a
// `reason` header, the same in CDC and poll mode: never dropped, never replaced by an error
// text, never a pipeline stop. `parked_reason`, when given, receives the reason (empty when
// routed).
bus::Message route_or_park(const OutboxRouter& router, const pg::Relation& relation,
                           const pg::Tuple& row, const ChangeSource& source,
                           const std::string& park_topic, std::string* parked_reason = nullptr);

// "public.event_outbox" -> true
bool is_table(const pg::Relation& relation, std::string_view qualified_name);

}  // namespace hi::cdc
