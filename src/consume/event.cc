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

Result<Event> parse_event(const bus::Delivery& d) {
  Event e;
  e.delivery = &d;
  e.id = header_value(d, "id");
  const json v = json::parse(d.value, nullptr, /*allow_exceptions=*/false);
  const bool change = d.topic.rfind("cdc.", 0) == 0;
  if (change) {
    if (!v.is_object()) return invalid_argument("change " + e.id + ": value is not a JSON object");
    e.kind = "cdc." + v.value("op", std::string("?"));
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
      e.lsn = s->value("commit_lsn", std::string());
      if (e.id.empty() && !e.lsn.empty()) {
        e.id = e.lsn + ":" + std::to_string(s->value("ordinal", 0));
      }
    }
  } else {
    e.kind = header_value(d, "kind");
    if (e.kind.empty()) e.kind = header_value(d, "eventType");
    e.tenant_id = header_value(d, "tenant_id");
    e.user_id = d.key;
    if (v.is_object() && v.contains("source")) {  // our envelope (not a Debezium payload)
      if (e.id.empty()) e.id = id_text(v.value("id", json()));
      if (e.kind.empty()) e.kind = v.value("kind", std::string());
      if (e.tenant_id.empty()) e.tenant_id = id_text(v.value("tenant_id", json()));
      if (e.user_id.empty()) e.user_id = id_text(v.value("user_id", json()));
      if (auto s = v.find("seq"); s != v.end() && s->is_number_integer()) {
        e.seq = s->get<std::int64_t>();
      }
      if (const auto& src = v["source"]; src.is_object()) {
        e.lsn = src.value("commit_lsn", std::string());
      }
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
