// A sink's destination: where masked rows land, exactly once.
//
// The sink (sink.h) hands a destination one Batch at a time: for each target table the last
// image of every key the batch touched (already masked, older than nothing else in the batch),
// the highest TRUNCATE of the batch, and the bus positions the batch reaches. The destination
// applies it so that a replay changes nothing:
//   - a row is written only when its version (commit LSN, ordinal) is above the stored one;
//   - a delete is a tombstone carrying its version, so an older change replayed after it does
//     not bring the row back;
//   - a TRUNCATE stores a version floor per table: rows below it are removed and never written
//     again.
// and stores the positions with the rows (PostgreSQL: in the same transaction; ClickHouse,
// which has none: after the rows, whose replay is harmless by the rules above).
//
// Errors: kUnavailable = the destination is unreachable or busy, retry the same batch later;
// anything else = the batch's data is at fault, and the sink retries its rows one by one and
// parks the ones that fail.
//
// Not thread-safe: one sink thread drives one destination.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "sinks/change.h"
#include "sinks/config.h"

namespace hi::sinks {

// The columns every target table carries besides the source's.
inline constexpr std::string_view kVersionColumn = "_version";
inline constexpr std::string_view kOrdinalColumn = "_ordinal";

// One key's last state in a batch.
struct RowImage {
  nlohmann::json values;  // masked columns to write (object), key columns included
  Version version;
  bool deleted = false;
  std::string change_id;  // for dead letters and logs
  std::string source_table;
  std::size_t origin = 0;  // the sink's index of the change, for a dead letter
};

// A destination column: its name and its type in the destination's own terms.
struct Column {
  std::string name;
  std::string type;
  bool operator==(const Column&) const = default;
};

struct TableWork {
  std::string source;  // "public.customers"
  std::string target;
  std::vector<std::string> key_columns;  // primary key of the target
  std::optional<Version> truncate;       // the batch's highest TRUNCATE
  std::vector<RowImage> rows;            // one per key, in key order of first appearance
};

using PositionKey = std::pair<std::string, std::int32_t>;  // (topic, partition)
using Positions = std::map<PositionKey, std::string>;

struct Batch {
  std::vector<TableWork> tables;
  Positions positions;  // the highest position of each (topic, partition) in the batch
};

struct DeadLetter {
  std::string source_table;
  std::string target;
  std::string change_id;
  nlohmann::json key;     // masked
  nlohmann::json change;  // masked change (op, after/before as masked), or null when unreadable
  std::string reason;
};

// A dead letter as a destination stored it.
struct ParkedLetter {
  std::string source_table;
  std::string target;
  std::string change_id;
  std::string key;     // JSON text of the masked key; "" when none
  std::string change;  // JSON text of the masked change; "" when it was unreadable
  std::string reason;
  std::string parked_at;  // RFC 3339, UTC
};

// What a destination says about one of its tables.
struct TableState {
  bool exists = false;
  std::vector<Column> columns;      // the source's columns (without the sink's own)
  std::optional<Version> truncate;  // the stored floor
  // The version of the change whose columns the table took last (stored with each schema
  // change): an older change, replayed after a restart, does not undo that change.
  std::optional<Version> schema;
};

class Destination {
 public:
  virtual ~Destination() = default;

  virtual std::string_view kind() const = 0;  // "postgres" | "clickhouse"
  // Connects (again after a loss) and creates the sink's own tables when missing.
  virtual Status connect() = 0;
  virtual Result<Positions> load_positions() = 0;
  virtual Result<TableState> table_state(const std::string& target) = 0;

  // The destination type of a source column (`pg_type` as format_type() prints it); `masked`
  // columns hold text; `key` columns may not be null.
  virtual std::string column_type(std::string_view pg_type, bool masked, bool key) const = 0;
  // Whether a column of type `from` can take `to` (both destination types) by an ALTER.
  virtual TypeChange classify(std::string_view from, std::string_view to) const = 0;

  // Schema changes, each idempotent.
  virtual Status create_table(const std::string& target, const std::vector<Column>& columns,
                              const std::vector<std::string>& key_columns) = 0;
  virtual Status add_column(const std::string& target, const Column& column) = 0;
  virtual Status drop_column(const std::string& target, const std::string& column) = 0;
  virtual Status alter_column(const std::string& target, const Column& column) = 0;
  // Stores the version of the change whose columns `target` follows now (TableState::schema).
  virtual Status save_schema_version(const std::string& target, const Version& version) = 0;

  virtual Status apply(const Batch& batch) = 0;
  virtual Status park(const std::vector<DeadLetter>& letters) = 0;
  // Rows parked so far (status, tests).
  virtual Result<std::int64_t> parked_count() = 0;
  // The last `limit` parked changes, newest first (`hashinsight sink dead-letters`).
  virtual Result<std::vector<ParkedLetter>> parked(std::int64_t limit) = 0;
};

struct DestinationOptions {
  std::string name;  // the destination's name in sinks.yaml (rows of the sink's own tables)
  std::string url;
  TlsSpec tls;
};

Result<std::unique_ptr<Destination>> make_postgres_destination(const DestinationOptions& options);
Result<std::unique_ptr<Destination>> make_clickhouse_destination(const DestinationOptions& options);

}  // namespace hi::sinks
