#include "cdc/router.h"

#include "cdc/internal/json_text.h"
#include "core/time.h"

namespace hi::cdc {
namespace {

using internal::append_json_string;
using pg::Column;

constexpr std::string_view kKnownPrefixes[] = {"miner", "treasury", "ops", "crm"};

int column_index(const pg::Relation& rel, std::string_view name) {
  for (std::size_t i = 0; i < rel.columns.size(); ++i) {
    if (rel.columns[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

const Column* column(const pg::Relation& rel, const pg::Tuple& row, std::string_view name) {
  const int i = column_index(rel, name);
  if (i < 0 || static_cast<std::size_t>(i) >= row.columns.size()) return nullptr;
  return &row.columns[static_cast<std::size_t>(i)];
}

bool has_text(const Column* c) { return c != nullptr && c->kind == Column::Kind::kText; }

void append_text_or_null(std::string& out, const Column* c) {
  if (has_text(c)) {
    append_json_string(out, c->data);
  } else {
    out += "null";
  }
}

void append_source(std::string& out, const ChangeSource& s) {
  out += "{\"commit_lsn\":\"";
  out += s.commit_lsn.to_string();
  out += "\",\"ordinal\":";
  out += std::to_string(s.ordinal);
  out += ",\"xid\":";
  out += std::to_string(s.xid);
  out += ",\"commit_ts\":\"";
  out += format_rfc3339_us(s.commit_time_unix_us);
  out += '"';
}

bool is_json_number(std::string_view v) {
  if (v.empty()) return false;
  std::size_t i = v[0] == '-' ? 1 : 0;
  if (i >= v.size()) return false;
  bool digits = false;
  for (; i < v.size(); ++i) {
    const char c = v[i];
    if (c >= '0' && c <= '9') {
      digits = true;
    } else if (c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-') {
      return false;
    }
  }
  return digits;
}

// A column value as JSON, typed by its type oid where JSON has the type.
void append_typed(std::string& out, std::uint32_t type_oid, const Column& c) {
  if (c.kind == Column::Kind::kNull) {
    out += "null";
    return;
  }
  switch (type_oid) {
    case 16:  // bool
      out += (c.data == "t") ? "true" : "false";
      return;
    case 20:   // int8
    case 21:   // int2
    case 23:   // int4
    case 26:   // oid
    case 700:  // float4
    case 701:  // float8
      if (is_json_number(c.data)) {
        out += c.data;  // NaN / Infinity are not JSON numbers: they stay strings below
        return;
      }
      break;
    case 114:   // json
    case 3802:  // jsonb
      out += c.data;
      return;
    default:
      break;
  }
  append_json_string(out, c.data);
}

// The SQL name of a built-in type as format_type() prints it, with its modifier where it has
// one ("numeric(12,2)", "character varying(40)"); other types (enums, domains, arrays) as
// "oid <n>", which a sink stores as text.
std::string type_name(std::uint32_t oid, std::int32_t typmod) {
  const auto with_length = [&](const char* name) {
    return typmod >= 4 ? std::string(name) + "(" + std::to_string(typmod - 4) + ")"
                       : std::string(name);
  };
  switch (oid) {
    case 16:
      return "boolean";
    case 17:
      return "bytea";
    case 18:
      return "\"char\"";
    case 20:
      return "bigint";
    case 21:
      return "smallint";
    case 23:
      return "integer";
    case 25:
      return "text";
    case 26:
      return "oid";
    case 114:
      return "json";
    case 142:
      return "xml";
    case 650:
      return "cidr";
    case 700:
      return "real";
    case 701:
      return "double precision";
    case 829:
      return "macaddr";
    case 869:
      return "inet";
    case 1042:
      return with_length("character");
    case 1043:
      return with_length("character varying");
    case 1082:
      return "date";
    case 1083:
      return "time without time zone";
    case 1114:
      return "timestamp without time zone";
    case 1184:
      return "timestamp with time zone";
    case 1186:
      return "interval";
    case 1266:
      return "time with time zone";
    case 1700:
      if (typmod >= 4) {
        const std::int32_t m = typmod - 4;
        return "numeric(" + std::to_string((m >> 16) & 0xffff) + "," + std::to_string(m & 0xffff) +
               ")";
      }
      return "numeric";
    case 2950:
      return "uuid";
    case 3802:
      return "jsonb";
    default:
      return "oid " + std::to_string(oid);
  }
}

// {"id":"bigint","email":"text",...}: every column of the relation, in table order.
void append_types(std::string& out, const pg::Relation& rel) {
  out += '{';
  for (std::size_t i = 0; i < rel.columns.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, rel.columns[i].name);
    out += ':';
    append_json_string(out, type_name(rel.columns[i].type_oid, rel.columns[i].type_modifier));
  }
  out += '}';
}

void append_row(std::string& out, const pg::Relation& rel, const pg::Tuple& row,
                bool skip_unchanged, bool keys_only) {
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < row.columns.size() && i < rel.columns.size(); ++i) {
    const Column& c = row.columns[i];
    if (skip_unchanged && c.kind == Column::Kind::kUnchangedToast) continue;
    if (keys_only && !rel.columns[i].key) continue;
    if (!first) out += ',';
    first = false;
    append_json_string(out, rel.columns[i].name);
    out += ':';
    append_typed(out, rel.columns[i].type_oid, c);
  }
  out += '}';
}

}  // namespace

Result<RouteTable> RouteTable::parse(std::string_view spec, std::string unknown_topic) {
  RouteTable t;
  t.unknown_topic_ = std::move(unknown_topic);
  while (!spec.empty()) {
    const auto comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == item.size()) {
      return invalid_argument("RELAY_ROUTES: '" + std::string(item) + "' is not prefix=topic");
    }
    t.overrides_[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
  }
  return t;
}

RouteTable::Route RouteTable::route(std::string_view kind) const {
  const std::string_view prefix = kind.substr(0, kind.find('.'));
  if (auto it = overrides_.find(prefix); it != overrides_.end()) return {it->second, true};
  for (auto known : kKnownPrefixes) {
    if (prefix == known) return {"events." + std::string(prefix), true};
  }
  return {unknown_topic_, false};
}

void RelationCache::put(pg::Relation relation) {
  const auto id = relation.id;
  relations_[id] = std::move(relation);
}

const pg::Relation* RelationCache::find(std::uint32_t id) const {
  auto it = relations_.find(id);
  return it == relations_.end() ? nullptr : &it->second;
}

bool is_table(const pg::Relation& relation, std::string_view qualified_name) {
  const auto dot = qualified_name.find('.');
  if (dot == std::string_view::npos) return relation.name == qualified_name;
  return relation.schema == qualified_name.substr(0, dot) &&
         relation.name == qualified_name.substr(dot + 1);
}

Result<bus::Message> OutboxRouter::route(const pg::Relation& rel, const pg::Tuple& row,
                                         const ChangeSource& source) const {
  const Column* id = column(rel, row, "id");
  const Column* kind = column(rel, row, "kind");
  const Column* user = column(rel, row, "user_id");
  const Column* tenant = column(rel, row, "tenant_id");
  const Column* payload = column(rel, row, "payload");
  if (!has_text(id) || !has_text(kind) || !has_text(user) || !has_text(tenant) ||
      !has_text(payload)) {
    return invalid_argument("outbox row at " + source.commit_lsn.to_string() + " ordinal " +
                            std::to_string(source.ordinal) +
                            " lacks id, kind, user_id, tenant_id or payload");
  }
  const auto first = payload->data.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || payload->data[first] != '{') {
    return invalid_argument("outbox event " + id->data + ": payload is not a JSON object");
  }
  const RouteTable::Route route = routes_.route(kind->data);
  bus::Message m;
  m.topic = route.topic;
  m.key = user->data;
  if (format_ == Format::kDebezium) {
    m.value = payload->data;
    m.headers = {{"id", id->data}, {"eventType", kind->data}, {"tenant_id", tenant->data}};
  } else {
    const Column* entity = column(rel, row, "entity_id");
    const Column* idem = column(rel, row, "idempotency_key");
    const Column* seq = column(rel, row, "seq");
    const Column* created = column(rel, row, "created_at");
    std::string& v = m.value;
    v.reserve(payload->data.size() + 512);
    v += "{\"id\":";
    append_json_string(v, id->data);
    v += ",\"kind\":";
    append_json_string(v, kind->data);
    v += ",\"tenant_id\":";
    append_json_string(v, tenant->data);
    v += ",\"user_id\":";
    append_json_string(v, user->data);
    v += ",\"entity_id\":";
    append_text_or_null(v, entity);
    v += ",\"idempotency_key\":";
    append_text_or_null(v, idem);
    v += ",\"seq\":";
    v += (has_text(seq) && is_json_number(seq->data)) ? seq->data : std::string("null");
    v += ",\"payload\":";
    v += payload->data;
    v += ",\"created_at\":";
    if (has_text(created)) {
      append_json_string(v, internal::pg_timestamp_to_rfc3339(created->data));
    } else {
      v += "null";
    }
    v += ",\"source\":";
    append_source(v, source);
    v += "}}";
    m.headers = {{"id", id->data}, {"kind", kind->data}, {"tenant_id", tenant->data}};
  }
  if (!route.known) {
    m.headers.emplace_back("reason", "no route for kind '" + kind->data + "'");
  }
  return m;
}

bus::Message capture_change(ChangeOp op, const pg::Relation& rel, const pg::Tuple* before,
                            const pg::Tuple* after, const ChangeSource& source) {
  bus::Message m;
  const std::string table = (rel.schema.empty() ? "public" : rel.schema) + "." + rel.name;
  m.topic = "cdc." + table;
  // Key: the replica identity columns, from the new row, else the old key image.
  const pg::Tuple* key_row = after != nullptr ? after : before;
  if (key_row != nullptr && op != ChangeOp::kTruncate)
    append_row(m.key, rel, *key_row, true, true);  // an unchanged TOAST value has no text
  std::string& v = m.value;
  v += "{\"op\":\"";
  v += static_cast<char>(op);
  v += "\",\"types\":";
  append_types(v, rel);
  v += ",\"before\":";
  if (before != nullptr) {
    append_row(v, rel, *before, true, false);
  } else {
    v += "null";
  }
  v += ",\"after\":";
  std::string unchanged;
  if (after != nullptr) {
    append_row(v, rel, *after, true, false);
    for (std::size_t i = 0; i < after->columns.size() && i < rel.columns.size(); ++i) {
      if (after->columns[i].kind != Column::Kind::kUnchangedToast) continue;
      if (!unchanged.empty()) unchanged += ',';
      append_json_string(unchanged, rel.columns[i].name);
    }
  } else {
    v += "null";
  }
  v += ",\"unchanged\":[";
  v += unchanged;
  v += "],\"source\":";
  append_source(v, source);
  v += ",\"table\":";
  append_json_string(v, table);
  v += "}}";
  const std::string id = source.commit_lsn.to_string() + ":" + std::to_string(source.ordinal);
  m.headers = {{"id", id}, {"op", std::string(1, static_cast<char>(op))}, {"table", table}};
  return m;
}

bus::Message snapshot_row(const pg::Relation& rel, const pg::Tuple& row) {
  bus::Message m;
  m.topic = "cdc." + (rel.schema.empty() ? std::string("public") : rel.schema) + "." + rel.name;
  append_row(m.key, rel, row, false, true);
  std::string& v = m.value;
  v.reserve(row.columns.size() * 24 + 256);
  v += "{\"op\":\"r\",\"types\":";
  append_types(v, rel);
  v += ",\"before\":null,\"after\":";
  append_row(v, rel, row, false, false);
  v += ",\"unchanged\":[],\"source\":";
  return m;
}

SnapshotSource::SnapshotSource(const pg::Relation& rel, pg::Lsn high, std::int64_t read_unix_us,
                               const SnapshotRef& snap)
    : lsn_(high.to_string()) {
  const std::string table = (rel.schema.empty() ? "public" : rel.schema) + "." + rel.name;
  ChangeSource source;
  source.commit_lsn = high;
  source.commit_time_unix_us = read_unix_us;
  std::string s;
  append_source(s, source);  // {"commit_lsn":"L","ordinal":0,"xid":0,"commit_ts":"T"
  const std::string ordinal = "\"ordinal\":";
  const auto at = s.find(ordinal) + ordinal.size();
  head_ = s.substr(0, at);
  tail_ = s.substr(s.find(',', at));
  tail_ += ",\"table\":";
  append_json_string(tail_, table);
  tail_ += ",\"snapshot\":{\"id\":";
  tail_ += std::to_string(snap.id);
  tail_ += ",\"table\":";
  append_json_string(tail_, table);
  tail_ += ",\"chunk\":";
  tail_ += std::to_string(snap.chunk);
  tail_ += snap.last ? ",\"last\":true}}}" : ",\"last\":false}}}";
}

void SnapshotSource::finish(bus::Message& m, std::uint32_t ordinal) const {
  const std::string n = std::to_string(ordinal);
  m.value.reserve(m.value.size() + head_.size() + n.size() + tail_.size());
  m.value += head_;
  m.value += n;
  m.value += tail_;
  m.headers.reserve(2);
  m.headers.emplace_back("id", lsn_ + ":" + n);
  m.headers.emplace_back("op", "r");
}

bus::Message route_or_park(const OutboxRouter& router, const pg::Relation& relation,
                           const pg::Tuple& row, const ChangeSource& source,
                           const std::string& park_topic, std::string* parked_reason) {
  auto routed = router.route(relation, row, source);
  if (routed) {
    if (parked_reason != nullptr) parked_reason->clear();
    return std::move(*routed);
  }
  bus::Message parked = capture_change(ChangeOp::kCreate, relation, nullptr, &row, source);
  parked.topic = park_topic;
  parked.headers.emplace_back("reason", routed.error().message);
  if (parked_reason != nullptr) *parked_reason = routed.error().message;
  return parked;
}

}  // namespace hi::cdc
