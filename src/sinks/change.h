// What a sink reads from the bus: a table change event of the relay (cdc/router.h), parsed,
// with its version, and the rules that decide how a destination column follows its source.
//
// Version: (commit LSN, ordinal). Every change of a row carries a higher version than the one
// before it (a snapshot row carries its chunk's high watermark, above every change it may have
// read), so "apply only when newer" makes any replay, in any order, converge to the last state.
//
// Pure functions; thread-safe.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bus/bus.h"
#include "core/result.h"

namespace hi::sinks {

struct Version {
  std::uint64_t lsn = 0;
  std::uint32_t ordinal = 0;
  auto operator<=>(const Version&) const = default;
};

// Every column of a table as of a change: name -> PostgreSQL type as format_type() prints it (an
// object of strings). Shared by the changes that carry the same text (TypesCache).
using Types = std::shared_ptr<const nlohmann::json>;

struct Change {
  char op = 'c';      // c u d t r
  std::string table;  // source "public.customers"
  Version version;
  std::string id;  // "commit_lsn:ordinal" (logs, dead letters)
  std::int64_t commit_unix_us = 0;
  // The replica identity columns as the message key's JSON text (an object; empty for a
  // truncate), parsed by key() only where a change needs it: with REPLICA IDENTITY FULL it is
  // the whole row again.
  std::string key_text;
  nlohmann::json after;                // the new row (object), null for d and t
  nlohmann::json before;               // the old image, when the table has one
  std::vector<std::string> unchanged;  // columns whose unchanged TOAST value is not in `after`
  Types types;                         // null for events of a relay that did not send types

  nlohmann::json key() const;  // null when key_text is not a JSON object
};

// The types of each topic's latest change, as text and parsed: a table's changes repeat the same
// `types` until its schema changes, so a batch parses them once (and each change holds a pointer,
// not a copy). Not thread-safe: one per sink.
class TypesCache {
 public:
  // The parsed object for `text`, parsed now only when it differs from the topic's last one.
  Result<Types> intern(const std::string& topic, std::string_view text);

 private:
  struct Entry {
    std::string text;
    Types types;
  };
  std::map<std::string, Entry, std::less<>> topics_;
};

// kInvalidArgument for anything the relay does not write (then the change is dead-lettered).
// With a cache, `types` is shared with earlier changes of the topic that carried the same text.
// Read with simdjson; what that reading does not take whole goes to parse_change_reference().
Result<Change> parse_change(const bus::Delivery& delivery, TypesCache* cache = nullptr);

// The same reading with nlohmann's parser over the whole text: slower. parse_change() gives the
// same result for every input (its tests and fuzz target compare the two).
Result<Change> parse_change_reference(const bus::Delivery& delivery, TypesCache* cache = nullptr);

// A bus position, comparable within one (topic, partition): Redis entry ids "ms-seq" by their
// two numbers, Kafka offsets as numbers.
struct Position {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  auto operator<=>(const Position&) const = default;
};
std::optional<Position> parse_position(std::string_view text);

// ---- column types

// The base of a PostgreSQL type name: "character varying(40)" -> "character varying".
std::string_view base_type(std::string_view pg_type);

// How a destination column of type `from` takes values of the source's new type `to`:
//   kSame     nothing to do
//   kWiden    the destination can be altered to `to` without losing a value
//             (smallint < integer < bigint < numeric; real < double precision;
//              varchar(n) < varchar(m > n) < text; character(n) -> text; any type -> text)
//   kNarrow   anything else: the destination keeps its type, the change is parked
enum class TypeChange { kSame, kWiden, kNarrow };
TypeChange classify_type_change(std::string_view from, std::string_view to);

// The PostgreSQL type a destination column gets for a source type: the type itself when it is
// built in, else text ("oid 16384" -> "text").
std::string postgres_column_type(std::string_view pg_type);

// The ClickHouse (18.16) type for a source type, Nullable unless `key`. Booleans UInt8; integers
// Int16/32/64; real/double Float32/64; uuid UUID; everything else (numeric, text, dates,
// timestamps with their microseconds, json, bytea, intervals, ...) String, the declared
// fallback (18.16's JSONEachRow reads a Nullable(Date) from text as 0000-00-00).
std::string clickhouse_column_type(std::string_view pg_type, bool key);

}  // namespace hi::sinks
