#include "sinks/clickhouse_rows.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/strings.h"

namespace hi::sinks {
namespace {

using nlohmann::json;

std::string_view unwrap_nullable(std::string_view t) {
  if (t.starts_with("Nullable(") && t.ends_with(")")) return t.substr(9, t.size() - 10);
  return t;
}

// A value as JSONEachRow reads it into a column of type `type`: booleans as 0/1, anything
// that is not a string as its JSON text where the column holds strings.
void append_for_column(std::string& out, const json& v, std::string_view type) {
  if (v.is_null()) {
    out += "null";
  } else if (v.is_string()) {
    // Valid UTF-8: parsed from the relay's JSON, or a mask of such text.
    append_json_string(out, v.get_ref<const std::string&>());
  } else if (unwrap_nullable(type) == "String") {
    append_json_string(out, v.dump());
  } else if (v.is_boolean()) {
    out += v.get<bool>() ? '1' : '0';
  } else if (v.is_number_integer()) {
    char buf[24];
    const auto r = v.is_number_unsigned()
                       ? std::to_chars(buf, buf + sizeof buf, v.get<std::uint64_t>())
                       : std::to_chars(buf, buf + sizeof buf, v.get<std::int64_t>());
    out.append(buf, r.ptr);
  } else {
    out += v.dump();
  }
}

enum class Kind { kString, kUInt8, kInt16, kInt32, kInt64, kFloat32, kFloat64, kUuid };

struct BinaryColumn {
  const std::string* name;
  Kind kind;
  bool nullable;
};

std::optional<Kind> kind_of(std::string_view type) {
  static constexpr std::pair<std::string_view, Kind> kKinds[] = {
      {"String", Kind::kString},   {"UInt8", Kind::kUInt8}, {"Int16", Kind::kInt16},
      {"Int32", Kind::kInt32},     {"Int64", Kind::kInt64}, {"Float32", Kind::kFloat32},
      {"Float64", Kind::kFloat64}, {"UUID", Kind::kUuid}};
  for (const auto& [name, kind] : kKinds) {
    if (type == name) return kind;
  }
  return std::nullopt;
}

// Little-endian, as RowBinary has every fixed-width number.
template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) std::reverse(bytes, bytes + sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_varint(std::string& out, std::uint64_t n) {
  while (n >= 0x80) {
    out += static_cast<char>((n & 0x7F) | 0x80);
    n >>= 7;
  }
  out += static_cast<char>(n);
}

void put_string(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

// The integer JSONEachRow reads from `v`'s text, if it lies in [min, max].
std::optional<std::int64_t> integer_of(const json& v, std::int64_t min, std::int64_t max) {
  std::int64_t i = 0;
  if (v.is_boolean()) {
    i = v.get<bool>() ? 1 : 0;
  } else if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return std::nullopt;
    }
    i = static_cast<std::int64_t>(u);
  } else if (v.is_number_integer()) {
    i = v.get<std::int64_t>();
  } else {
    return std::nullopt;
  }
  if (i < min || i > max) return std::nullopt;
  return i;
}

// The double JSONEachRow reads from `v`'s text: a double's JSON text is the shortest that reads
// back as the same double; an integer above 2^53 might not be one exactly.
std::optional<double> double_of(const json& v) {
  constexpr std::int64_t kExact = std::int64_t{1} << 53;
  if (v.is_number_float()) return v.get<double>();
  if (auto i = integer_of(v, -kExact, kExact)) return static_cast<double>(*i);
  return std::nullopt;
}

// ClickHouse keeps a UUID as two little-endian 64-bit halves, the first half of the text first.
bool put_uuid(std::string& out, const json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return false;
  std::string digits = s;
  std::erase(digits, '-');
  const auto b = digits.size() == 32 ? hex_decode(digits) : std::nullopt;
  if (!b) return false;
  for (int half = 0; half < 2; ++half) {
    for (int i = 7; i >= 0; --i) out += (*b)[half * 8 + i];
  }
  return true;
}

// A non-null value into a column of kind `k`.
bool put_value(std::string& out, const json& v, Kind k) {
  switch (k) {
    case Kind::kString:
      if (v.is_string()) {
        put_string(out, v.get_ref<const std::string&>());
      } else {
        put_string(out, v.dump());
      }
      return true;
    case Kind::kUInt8: {
      const auto i = integer_of(v, 0, 255);
      if (i) put(out, static_cast<std::uint8_t>(*i));
      return i.has_value();
    }
    case Kind::kInt16: {
      const auto i = integer_of(v, INT16_MIN, INT16_MAX);
      if (i) put(out, static_cast<std::int16_t>(*i));
      return i.has_value();
    }
    case Kind::kInt32: {
      const auto i = integer_of(v, INT32_MIN, INT32_MAX);
      if (i) put(out, static_cast<std::int32_t>(*i));
      return i.has_value();
    }
    case Kind::kInt64: {
      const auto i = integer_of(v, INT64_MIN, INT64_MAX);
      if (i) put(out, *i);
      return i.has_value();
    }
    case Kind::kFloat32: {
      const auto d = double_of(v);
      if (!d || std::abs(*d) > std::numeric_limits<float>::max()) return false;
      put(out, static_cast<float>(*d));
      return true;
    }
    case Kind::kFloat64: {
      const auto d = double_of(v);
      if (d) put(out, *d);
      return d.has_value();
    }
    case Kind::kUuid:
      return put_uuid(out, v);
  }
  return false;
}

}  // namespace

namespace {

// `text` between `quote`s, the quote and the backslash escaped with a backslash.
std::string quoted(std::string_view text, char quote) {
  std::string out(1, quote);
  for (char c : text) {
    if (c == quote || c == '\\') out += '\\';
    out += c;
  }
  return out + quote;
}

}  // namespace

std::string quote_clickhouse_name(std::string_view name) { return quoted(name, '`'); }

std::string quote_clickhouse_string(std::string_view text) { return quoted(text, '\''); }

std::string json_each_row(const std::vector<RowImage>& rows, const ClickHouseTypes& types) {
  std::string body;
  body.reserve(rows.size() * 160);
  for (const auto& row : rows) {
    body += '{';
    // Both are ordered by name: one pass over each.
    auto ty = types.begin();
    for (auto it = row.values.begin(); it != row.values.end(); ++it) {
      while (ty != types.end() && ty->first < it.key()) ++ty;
      if (ty == types.end() || ty->first != it.key()) continue;  // not in the destination
      append_json_string(body, it.key());
      body += ':';
      append_for_column(body, it.value(), ty->second);
      body += ',';
    }
    body += "\"_version\":";
    body += std::to_string(row.version.lsn);
    body += ",\"_ordinal\":";
    body += std::to_string(row.version.ordinal);
    body += row.deleted ? ",\"_is_deleted\":1}\n" : ",\"_is_deleted\":0}\n";
  }
  return body;
}

std::optional<std::string> row_binary(const std::vector<RowImage>& rows,
                                      const ClickHouseTypes& types) {
  if (types.empty()) return std::nullopt;
  std::vector<BinaryColumn> columns;
  columns.reserve(types.size());
  for (const auto& [name, type] : types) {
    const std::string_view base = unwrap_nullable(type);
    const auto kind = kind_of(base);
    if (!kind) return std::nullopt;
    columns.push_back({&name, *kind, base.size() != type.size()});
  }
  std::string out;
  out.reserve(rows.size() * 128);
  for (const auto& row : rows) {
    if (!row.values.is_object()) return std::nullopt;
    // Both are ordered by name: one pass over each.
    auto it = row.values.begin();
    for (const auto& c : columns) {
      while (it != row.values.end() && it.key() < *c.name) ++it;
      const json* v = it != row.values.end() && it.key() == *c.name ? &it.value() : nullptr;
      if (v == nullptr || v->is_null()) {
        if (!c.nullable) return std::nullopt;
        out += '\1';
        continue;
      }
      if (c.nullable) out += '\0';
      if (!put_value(out, *v, c.kind)) return std::nullopt;
    }
    put(out, row.version.lsn);
    put(out, row.version.ordinal);
    put(out, static_cast<std::uint8_t>(row.deleted ? 1 : 0));
  }
  return out;
}

std::string row_binary_columns(const ClickHouseTypes& types) {
  std::string out = "(";
  for (const auto& [name, type] : types) out += quote_clickhouse_name(name) + ", ";
  out += quote_clickhouse_name(kVersionColumn) + ", " + quote_clickhouse_name(kOrdinalColumn) +
         ", `_is_deleted`)";
  return out;
}

}  // namespace hi::sinks
