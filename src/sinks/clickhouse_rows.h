// The rows of one target table as a ClickHouse INSERT takes them (clickhouse_destination.cc).
//
// RowBinary where it is exact, JSONEachRow otherwise. ClickHouse reads RowBinary with no parsing
// at all, where JSONEachRow costs it a text parse of every field and us an escape of every
// string. RowBinary is used only when every column of the table has a type written here (the
// source's types map to them: clickhouse_column_type()) and every value is one this writes as
// the JSONEachRow text would be read:
//   String            a string as it is, any other value as its JSON text;
//   UInt8, Int16/32/64  integers in range, booleans as 0/1;
//   Float32/64        numbers (integers only up to 2^53), booleans as 0/1; the double itself,
//                     where ClickHouse's reading of text would turn a subnormal one into 0;
//   UUID              a string in the 8-4-4-4-12 hex form;
//   Nullable(T)       null, or a column the row leaves out, as NULL.
// Anything else (another type, a value out of range, a string in a numeric column) sends the
// whole batch of the table as JSONEachRow, so ClickHouse decides as before and a row it refuses
// is parked with its reason.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sinks/destination.h"

namespace hi::sinks {

// Column name -> ClickHouse type, as system.columns lists a target's columns (the sink's own
// _version, _ordinal and _is_deleted left out). Ordered by name, as a row's values are.
using ClickHouseTypes = std::map<std::string, std::string>;

// `name` quoted for ClickHouse SQL: `name`.
std::string quote_clickhouse_name(std::string_view name);
// `text` as a ClickHouse SQL string literal: 'text'.
std::string quote_clickhouse_string(std::string_view text);

// One JSONEachRow line per row: its values of the columns in `types` (others left out), then
// _version, _ordinal and _is_deleted.
std::string json_each_row(const std::vector<RowImage>& rows, const ClickHouseTypes& types);

// The same rows as RowBinary for `INSERT INTO t <row_binary_columns(types)> FORMAT RowBinary`;
// nullopt when a type or a value is not one written exactly (above).
std::optional<std::string> row_binary(const std::vector<RowImage>& rows,
                                      const ClickHouseTypes& types);

// "(`a`, `b`, `_version`, `_ordinal`, `_is_deleted`)": the columns, in row_binary()'s order.
std::string row_binary_columns(const ClickHouseTypes& types);

}  // namespace hi::sinks
