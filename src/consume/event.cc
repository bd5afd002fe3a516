#include "consume/event.h"

#include <nlohmann/json.hpp>
#include <optional>

#include "consume/internal/text.h"

namespace hi::consume {
namespace {

using nlohmann::json;

// Event ids are UUIDs or "commit_lsn:ordinal"; anything far longer cannot be an inbox key.
constexpr std::size_t kMaxIdBytes = 512;

// The readers below take a field of a JSON object without ever throwing (nlohmann's value()
// throws on a field of another type): a missing or null field is nullopt, a field of the wrong
// type is an error naming it.
using Text = std::optional<std::string>;

Result<Text> string_at(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return Text();
  if (!it->is_string()) return invalid_argument(std::string("field ") + name + " is not a string");
  return Text(it->get<std::string>());
}

// An id: a string or an integer, as decimal text.
Result<Text> id_at(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return Text();
  if (it->is_string()) return Text(it->get<std::string>());
  if (it->is_number_unsigned()) return Text(std::to_string(it->get<std::uint64_t>()));
  if (it->is_number_integer()) return Text(std::to_string(it->get<std::int64_t>()));
  return invalid_argument(std::string("field ") + name + " is not an id");
}

Result<std::optional<std::int64_t>> integer_at(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::optional<std::int64_t>();
  const bool fits = it->is_number_integer() &&
                    (!it->is_number_unsigned() ||
                     it->get<std::uint64_t>() <=
                         static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
  if (!fits) return invalid_argument(std::string("field ") + name + " is not an integer");
  return std::optional<std::int64_t>(it->get<std::int64_t>());
}

// Fills lsn and xid from an envelope's or a change's `source` object (absent or null: nothing).
Status read_source(const json& value, Event& e, std::int64_t& ordinal) {
  auto s = value.find("source");
  if (s == value.end() || s->is_null()) return {};
  if (!s->is_object()) return invalid_argument("field source is not an object");
  auto lsn = string_at(*s, "commit_lsn");
  if (!lsn) return lsn.error().wrap("source");
  e.lsn = lsn->value_or("");
  auto ord = integer_at(*s, "ordinal");
  if (!ord) return ord.error().wrap("source");
  ordinal = ord->value_or(0);
  auto xid = integer_at(*s, "xid");
  if (!xid) return xid.error().wrap("source");
  if (xid->value_or(0) < 0) return invalid_argument("source: field xid is negative");
  e.xid = static_cast<std::uint64_t>(xid->value_or(0));
  return {};
}

Result<Event> parse(const bus::Delivery& d) {
  Event e;
  e.delivery = &d;
  e.id = header_value(d, "id");
  const json v = json::parse(d.value, nullptr, /*allow_exceptions=*/false);
  const bool change = d.topic.rfind("cdc.", 0) == 0;
  if (change) {
    if (!v.is_object()) return invalid_argument("value is not a JSON object");
    auto op = string_at(v, "op");
    if (!op) return op.error();
    e.kind = "cdc." + op->value_or("?");
    const json* row = nullptr;
    if (auto it = v.find("after"); it != v.end() && it->is_object()) row = &*it;
    if (row == nullptr) {
      if (auto it = v.find("before"); it != v.end() && it->is_object()) row = &*it;
    }
    e.tenant_id = "0";
    if (row != nullptr) {
      auto tenant = id_at(*row, "tenant_id");
      if (!tenant) return tenant.error().wrap("row");
      if (*tenant) e.tenant_id = **tenant;
    }
    std::int64_t ordinal = 0;
    if (auto s = read_source(v, e, ordinal); !s) return s.error();
    if (e.id.empty() && !e.lsn.empty()) e.id = e.lsn + ":" + std::to_string(ordinal);
  } else {
    e.kind = header_value(d, "kind");
    // The Debezium format: value = the payload (any JSON), kind in header eventType.
    const bool debezium = e.kind.empty() && !header_value(d, "eventType").empty();
    if (e.kind.empty()) e.kind = header_value(d, "eventType");
    e.tenant_id = header_value(d, "tenant_id");
    e.user_id = d.key;
    if (!debezium && v.is_object() && v.contains("source")) {  // our envelope
      auto id = id_at(v, "id");
      auto kind = string_at(v, "kind");
      auto tenant = id_at(v, "tenant_id");
      auto user = id_at(v, "user_id");
      auto seq = integer_at(v, "seq");
      if (!id) return id.error();
      if (!kind) return kind.error();
      if (!tenant) return tenant.error();
      if (!user) return user.error();
      if (!seq) return seq.error();
      if (e.id.empty()) e.id = id->value_or("");
      if (e.kind.empty()) e.kind = kind->value_or("");
      if (e.tenant_id.empty()) e.tenant_id = tenant->value_or("");
      if (e.user_id.empty()) e.user_id = user->value_or("");
      e.seq = seq->value_or(0);
      std::int64_t ordinal = 0;
      if (auto s = read_source(v, e, ordinal); !s) return s.error();
    } else if (v.is_discarded()) {
      return invalid_argument("event " + internal::escape_pg_text(e.id) + ": value is not JSON");
    }
  }
  if (e.id.empty()) return invalid_argument("no event id");
  if (!internal::is_pg_text(e.id) || e.id.size() > kMaxIdBytes) {
    return invalid_argument("event id '" +
                            internal::escape_pg_text(internal::utf8_prefix(e.id, 64)) +
                            "' is not text of at most " + std::to_string(kMaxIdBytes) + " bytes");
  }
  if (!is_decimal_id(e.tenant_id)) {
    return invalid_argument("event " + e.id + ": tenant_id '" +
                            internal::escape_pg_text(internal::utf8_prefix(e.tenant_id, 64)) +
                            "' is not an id");
  }
  if (!internal::is_pg_text(e.kind) || !internal::is_pg_text(e.user_id)) {
    return invalid_argument("event " + e.id + ": kind or user is not text");
  }
  return e;
}

}  // namespace

const std::string& header_value(const bus::Delivery& delivery, std::string_view name) {
  static const std::string kEmpty;
  for (const auto& [k, v] : delivery.headers) {
    if (k == name) return v;
  }
  return kEmpty;
}

bool is_decimal_id(std::string_view text) {
  constexpr std::string_view kMax = "9223372036854775807";  // bigint
  if (text.empty() || text.size() > kMax.size()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return text.size() < kMax.size() || text <= kMax;
}

Result<Event> parse_event(const bus::Delivery& d) {
  Result<Event> e = [&]() -> Result<Event> {
    try {
      return parse(d);
    } catch (const std::exception& ex) {  // a backstop: parse() is written not to throw
      return invalid_argument(ex.what());
    }
  }();
  if (!e) {
    return e.error().wrap("delivery " + internal::escape_pg_text(d.position) + " on " +
                          internal::escape_pg_text(d.topic));
  }
  return e;
}

}  // namespace hi::consume
