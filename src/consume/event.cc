#include "consume/event.h"

#include <nlohmann/json.hpp>

namespace hi::consume {
namespace {

using nlohmann::json;

std::string id_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  return {};
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
  if (text.empty() || text.size() > 19) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Fields of a value a consumer cannot trust: the wrong type reads as absent, never throws.
std::string string_field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::int64_t int_field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

Result<Event> parse_event(const bus::Delivery& d) {
  Event e;
  e.delivery = &d;
  e.id = header_value(d, "id");
  const json v = json::parse(d.value, nullptr, /*allow_exceptions=*/false);
  const bool change = d.topic.rfind("cdc.", 0) == 0;
  if (change) {
    if (!v.is_object()) return invalid_argument("change " + e.id + ": value is not a JSON object");
    const std::string op = string_field(v, "op");
    e.kind = "cdc." + (op.empty() ? std::string("?") : op);
    const json* row = nullptr;
    if (auto it = v.find("after"); it != v.end() && it->is_object()) row = &*it;
    if (row == nullptr) {
      if (auto it = v.find("before"); it != v.end() && it->is_object()) row = &*it;
    }
    e.tenant_id = "0";
    if (row != nullptr) {
      if (auto t = row->find("tenant_id"); t != row->end()) {
        const std::string tenant = id_text(*t);
        if (!tenant.empty()) e.tenant_id = tenant;
      }
    }
    if (auto s = v.find("source"); s != v.end() && s->is_object()) {
      e.lsn = string_field(*s, "commit_lsn");
      if (e.id.empty() && !e.lsn.empty()) {
        e.id = e.lsn + ":" + std::to_string(int_field(*s, "ordinal"));
      }
    }
  } else {
    e.kind = header_value(d, "kind");
    if (e.kind.empty()) e.kind = header_value(d, "eventType");
    e.tenant_id = header_value(d, "tenant_id");
    e.user_id = d.key;
    // Our envelope, not a Debezium payload (value = the event's own payload, header eventType
    // and no kind): nothing of such a payload is read as the event's seq or position.
    const bool debezium = header_value(d, "kind").empty() && !header_value(d, "eventType").empty();
    if (!debezium && v.is_object() && v.contains("source")) {
      if (e.id.empty()) e.id = id_text(v.value("id", json()));
      if (e.kind.empty()) e.kind = string_field(v, "kind");
      if (e.tenant_id.empty()) e.tenant_id = id_text(v.value("tenant_id", json()));
      if (e.user_id.empty()) e.user_id = id_text(v.value("user_id", json()));
      if (auto s = v.find("seq"); s != v.end() && s->is_number_integer()) {
        e.seq = s->get<std::int64_t>();
      }
      if (const auto& src = v["source"]; src.is_object()) e.lsn = string_field(src, "commit_lsn");
    } else if (!v.is_object() && !v.is_array()) {
      if (v.is_discarded()) {
        return invalid_argument("event " + e.id + " on " + d.topic + ": value is not JSON");
      }
    }
  }
  if (e.id.empty()) {
    return invalid_argument("delivery " + d.position + " on " + d.topic + " has no event id");
  }
  if (!is_decimal_id(e.tenant_id)) {
    return invalid_argument("event " + e.id + ": tenant_id '" + e.tenant_id + "' is not an id");
  }
  return e;
}

}  // namespace hi::consume
