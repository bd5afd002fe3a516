#include "consume/dlq.h"

#include <map>
#include <optional>

#include "consume/event.h"
#include "consume/internal/text.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "pg/array.h"
#include "pg/transaction.h"

namespace hi::consume {
namespace {

using nlohmann::json;

constexpr const char* kParkSql =
    "INSERT INTO event_dlq (event_id, consumer_name, topic, kind, tenant_id, user_id, envelope, "
    "error, retry_count, message_key, headers, raw) "
    "VALUES ($1, $2, $3, $4, $5::bigint, $6, $7::jsonb, $8, $9::int, $10, $11::jsonb, $12::jsonb) "
    "ON CONFLICT (consumer_name, event_id) WHERE replayed_at IS NULL DO NOTHING RETURNING id";

constexpr std::size_t kMaxErrorBytes = 4000;
constexpr std::size_t kMaxIdBytes = 1000;

// Text for a column: escaped when it is not text (internal/text.h), and an over-long value cut
// at a character boundary.
std::string column_text(std::string_view bytes, std::size_t max_bytes) {
  std::string text = internal::escape_pg_text(bytes);
  if (text.size() <= max_bytes) return text;
  return std::string(internal::utf8_prefix(text, max_bytes)) + "...";
}

// A `\u0000` escape is valid JSON that jsonb refuses.
bool jsonb_storable(std::string_view value) {
  return internal::is_pg_text(value) && value.find("\\u0000") == std::string_view::npos &&
         json::accept(value);
}

// `exact`: store the value as jsonb when it is JSON jsonb takes; false: the fallback after the
// database refused the first form (everything as escaped strings, the bytes in `raw`).
pg::Params row_params(const ParkRequest& p, bool exact) {
  std::string topic, key, value;
  const bus::Headers* headers = nullptr;
  if (p.delivery != nullptr) {
    topic = p.delivery->topic;
    key = p.delivery->key;
    value = p.delivery->value;
    headers = &p.delivery->headers;
  }
  bool lossless = internal::is_pg_text(key);
  std::string envelope;
  if (exact && jsonb_storable(value)) {
    envelope = value;
  } else {
    // As a JSON string; a value that is not text is escaped, its bytes go to `raw`.
    lossless = lossless && exact && internal::is_pg_text(value);
    envelope = json(internal::escape_pg_text(value)).dump();
  }
  json stored_headers = json::array();
  json raw_headers = json::array();
  if (headers != nullptr) {
    for (const auto& [k, v] : *headers) {
      lossless = lossless && internal::is_pg_text(k) && internal::is_pg_text(v);
      stored_headers.push_back(
          json::array({internal::escape_pg_text(k), internal::escape_pg_text(v)}));
      raw_headers.push_back(json::array({internal::base64_encode(k), internal::base64_encode(v)}));
    }
  }
  pg::Param raw;
  if (!lossless) {
    raw = json({{"key", internal::base64_encode(key)},
                {"value", internal::base64_encode(value)},
                {"headers", raw_headers}})
              .dump();
  }
  return {column_text(p.event_id, kMaxIdBytes),
          column_text(p.consumer, kMaxIdBytes),
          column_text(topic, kMaxIdBytes),
          column_text(p.kind, kMaxIdBytes),
          is_decimal_id(p.tenant_id) ? p.tenant_id : "0",
          p.user_id.empty() ? pg::Param() : pg::Param(column_text(p.user_id, kMaxIdBytes)),
          envelope,
          column_text(internal::utf8_prefix(p.error, kMaxErrorBytes), 2 * kMaxErrorBytes),
          std::to_string(p.retry_count),
          internal::escape_pg_text(key),
          stored_headers.dump(),
          raw};
}

std::string rfc3339(std::string_view pg_time) {
  auto us = parse_rfc3339_us(pg_time);
  return us ? format_rfc3339_us(*us) : std::string(pg_time);
}

struct RawMessage {
  std::string key;
  std::string value;
  bus::Headers headers;
};

// The `raw` column: {"key": b64, "value": b64, "headers": [[b64, b64], ...]}.
std::optional<RawMessage> raw_message(std::string_view text) {
  const json raw = json::parse(text, nullptr, false);
  if (!raw.is_object()) return std::nullopt;
  auto bytes = [&](const json& v) -> std::optional<std::string> {
    if (!v.is_string()) return std::nullopt;
    return internal::base64_decode(v.get<std::string>());
  };
  RawMessage m;
  auto key = raw.find("key");
  auto value = raw.find("value");
  auto headers = raw.find("headers");
  if (key == raw.end() || value == raw.end() || headers == raw.end() || !headers->is_array()) {
    return std::nullopt;
  }
  auto k = bytes(*key);
  auto v = bytes(*value);
  if (!k || !v) return std::nullopt;
  m.key = std::move(*k);
  m.value = std::move(*v);
  for (const auto& h : *headers) {
    if (!h.is_array() || h.size() != 2) return std::nullopt;
    auto name = bytes(h[0]);
    auto val = bytes(h[1]);
    if (!name || !val) return std::nullopt;
    m.headers.emplace_back(std::move(*name), std::move(*val));
  }
  return m;
}

json time_or_null(const pg::QueryResult& r, int row, int col) {
  if (r.is_null(row, col)) return nullptr;
  return rfc3339(r.text(row, col));
}

}  // namespace

Result<bool> park(pg::Connection& conn, const ParkRequest& p) {
  if (!is_decimal_id(p.tenant_id)) {
    return invalid_argument("park event: tenant '" + internal::escape_pg_text(p.tenant_id) +
                            "' is not an id");
  }
  // A savepoint, so that a value the database refuses (a number jsonb cannot hold, nesting
  // deeper than its stack) leaves the transaction usable for the fallback form.
  if (auto s = conn.exec("SAVEPOINT hi_park"); !s) return s.error().wrap("park event");
  auto r = conn.exec(kParkSql, row_params(p, /*exact=*/true));
  if (!r && r.error().code != Code::kUnavailable) {
    if (auto s = conn.exec("ROLLBACK TO SAVEPOINT hi_park"); !s) {
      return s.error().wrap("park event");
    }
    r = conn.exec(kParkSql, row_params(p, /*exact=*/false));
  }
  if (!r) return r.error().wrap("park event " + column_text(p.event_id, 64));
  if (auto s = conn.exec("RELEASE SAVEPOINT hi_park"); !s) return s.error().wrap("park event");
  return r->rows() > 0;
}

bus::Message dlq_message(const ParkRequest& p, const std::string& dlq_topic) {
  bus::Message m;
  m.topic = dlq_topic;
  if (p.delivery != nullptr) {
    m.key = p.delivery->key;
    m.value = p.delivery->value;
  }
  m.headers = {{"id", p.event_id},
               {"kind", p.kind},
               {"tenant_id", p.tenant_id},
               {"consumer", p.consumer},
               {"error", std::string(internal::utf8_prefix(p.error, 1000))},
               {"retry_count", std::to_string(p.retry_count)}};
  if (p.delivery != nullptr) m.headers.emplace_back("topic", p.delivery->topic);
  return m;
}

Result<std::vector<std::string>> all_tenants(pg::Connection& app) {
  auto r = app.exec("SELECT id FROM tenants ORDER BY id");
  if (!r) return r.error().wrap("list tenants");
  std::vector<std::string> out = {"0"};
  for (int i = 0; i < r->rows(); ++i) out.emplace_back(r->text(i, 0));
  return out;
}

Result<json> dlq_stats(pg::Connection& app) {
  auto r = app.exec(
      "SELECT consumer_name, kind, parked, replayed, oldest::text, newest::text "
      "FROM hi_dlq_stats()");
  if (!r) return r.error().wrap("dlq stats");
  json out;
  out["consumers"] = json::array();
  std::int64_t parked = 0, replayed = 0;
  std::string oldest, newest;
  std::optional<std::int64_t> oldest_us, newest_us;
  for (int i = 0; i < r->rows(); ++i) {
    json row;
    row["consumer"] = r->text(i, 0);
    row["kind"] = r->text(i, 1);
    row["parked"] = r->int64(i, 2);
    row["replayed"] = r->int64(i, 3);
    row["oldest"] = time_or_null(*r, i, 4);
    row["newest"] = time_or_null(*r, i, 5);
    parked += r->int64(i, 2);
    replayed += r->int64(i, 3);
    if (auto us = parse_rfc3339_us(r->text(i, 4)); us && (!oldest_us || *us < *oldest_us)) {
      oldest_us = *us;
    }
    if (auto us = parse_rfc3339_us(r->text(i, 5)); us && (!newest_us || *us > *newest_us)) {
      newest_us = *us;
    }
    out["consumers"].push_back(std::move(row));
  }
  out["parked"] = parked;
  out["replayed"] = replayed;
  out["oldest"] = oldest_us ? json(format_rfc3339_us(*oldest_us)) : json(nullptr);
  out["newest"] = newest_us ? json(format_rfc3339_us(*newest_us)) : json(nullptr);
  return out;
}

json ReplayReport::to_json() const {
  json out;
  out["dry_run"] = dry_run;
  out["selected"] = selected;
  out["replayed"] = replayed;
  out["failed"] = failed;
  out["events"] = json::array();
  for (const auto& e : events) {
    json j = {{"dlq_id", e.dlq_id},       {"event_id", e.event_id}, {"consumer", e.consumer},
              {"kind", e.kind},           {"topic", e.topic},       {"tenant_id", e.tenant_id},
              {"failed_at", e.failed_at}, {"replayed", e.replayed}};
    if (!e.error.empty()) j["error"] = e.error;
    out["events"].push_back(std::move(j));
  }
  return out;
}

Result<ReplayReport> replay(pg::Connection& app, const bus::BusOptions& bus_options,
                            const ReplayOptions& o,
                            const std::function<void(std::int64_t, std::int64_t)>& progress) {
  ReplayReport report;
  report.dry_run = o.dry_run;
  auto tenants = all_tenants(app);
  if (!tenants) return tenants.error();

  std::map<std::uint64_t, Status> reports;
  std::unique_ptr<bus::Producer> producer;
  if (!o.dry_run) {
    auto p = bus::make_producer(
        bus_options, [&reports](std::uint64_t tag, const Status& s) { reports[tag] = s; });
    if (!p) return p.error().wrap("dlq replay producer");
    producer = std::move(*p);
  }

  // Rows are locked (FOR UPDATE SKIP LOCKED) for the duration of their tenant's transaction, so
  // two concurrent replays never publish the same row twice.
  std::string sql =
      "SELECT id, event_id, consumer_name, kind, topic, tenant_id, failed_at::text, "
      "COALESCE(message_key, user_id, ''), envelope::text, headers::text, "
      "jsonb_typeof(envelope) = 'string', envelope #>> '{}', raw::text "
      "FROM event_dlq WHERE replayed_at IS NULL "
      "AND failed_at >= now() - make_interval(secs => $1::double precision) "
      "AND ($2 = '' OR consumer_name = $2) ORDER BY failed_at, id LIMIT $3::bigint "
      "FOR UPDATE SKIP LOCKED";
  std::int64_t remaining = o.limit.value_or(std::numeric_limits<std::int64_t>::max());
  for (const auto& tenant : *tenants) {
    if (remaining <= 0) break;
    pg::Transaction tx(app);
    if (auto s = tx.begin(tenant); !s) return s.error().wrap("dlq replay");
    auto rows =
        app.exec(sql, {std::to_string(o.hours * 3600.0), o.consumer, std::to_string(remaining)});
    if (!rows) return rows.error().wrap("dlq replay select");
    if (rows->empty()) continue;
    remaining -= rows->rows();
    report.selected += rows->rows();
    const std::size_t first = report.events.size();
    std::map<std::uint64_t, std::size_t> tag_to_event;
    for (int i = 0; i < rows->rows(); ++i) {
      ReplayedEvent e;
      e.dlq_id = rows->int64(i, 0);
      e.event_id = rows->text(i, 1);
      e.consumer = rows->text(i, 2);
      e.kind = rows->text(i, 3);
      e.topic = rows->text(i, 4);
      e.tenant_id = rows->text(i, 5);
      e.failed_at = rfc3339(rows->text(i, 6));
      if (!o.dry_run) {
        bus::Message m;
        m.topic = e.topic;
        if (!rows->is_null(i, 12)) {
          // The exact bytes of a message the typed columns could only store escaped.
          if (auto raw = raw_message(rows->text(i, 12))) {
            m.key = std::move(raw->key);
            m.value = std::move(raw->value);
            m.headers = std::move(raw->headers);
          } else {
            e.error = "the raw column does not hold a message";
          }
        } else {
          m.key = rows->text(i, 7);
          m.value =
              rows->boolean(i, 10) ? std::string(rows->text(i, 11)) : std::string(rows->text(i, 8));
          const json headers = json::parse(rows->text(i, 9), nullptr, false);
          if (headers.is_array() && !headers.empty()) {
            for (const auto& h : headers) {
              if (h.is_array() && h.size() == 2 && h[0].is_string() && h[1].is_string()) {
                m.headers.emplace_back(h[0].get<std::string>(), h[1].get<std::string>());
              }
            }
          } else {
            m.headers = {{"id", e.event_id}, {"kind", e.kind}, {"tenant_id", e.tenant_id}};
          }
        }
        const std::uint64_t tag = report.events.size() + 1;
        if (!e.error.empty()) {
          // not sent
        } else if (auto s = producer->send(std::move(m), tag); !s) {
          e.error = s.error().message;
        } else {
          tag_to_event[tag] = report.events.size();
        }
      }
      report.events.push_back(std::move(e));
    }
    if (o.dry_run) continue;  // the transaction rolls back: nothing changes
    const auto deadline = std::chrono::steady_clock::now() + o.delivery_timeout;
    std::int64_t confirmed = 0;
    while (producer->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
      producer->poll(std::chrono::milliseconds(100));
      std::int64_t now_confirmed = 0;
      for (const auto& [tag, idx] : tag_to_event) now_confirmed += reports.contains(tag) ? 1 : 0;
      if (now_confirmed != confirmed && progress) {
        progress(report.replayed + now_confirmed, report.selected);
      }
      confirmed = now_confirmed;
    }
    // Published and not marked yet: a crash here re-publishes them on the next replay (the
    // consumers' inboxes absorb the copies); the rows are marked replayed once.
    if (auto s = failpoint("dlq.after_publish"); !s) return s.error().wrap("dlq replay");
    pg::ArrayLiteral ids;
    for (const auto& [tag, idx] : tag_to_event) {
      ReplayedEvent& e = report.events[idx];
      auto it = reports.find(tag);
      if (it == reports.end()) {
        e.error =
            "not confirmed by the bus within " + std::to_string(o.delivery_timeout.count()) + " ms";
      } else if (!it->second) {
        e.error = it->second.error().message;
      } else {
        e.replayed = true;
        ids.add(e.dlq_id);
      }
    }
    auto upd = app.exec("UPDATE event_dlq SET replayed_at = now() WHERE id = ANY($1::bigint[])",
                        {ids.str()});
    if (!upd) return upd.error().wrap("dlq replay mark");
    if (auto s = tx.commit(); !s) return s.error().wrap("dlq replay commit");
    for (std::size_t i = first; i < report.events.size(); ++i) {
      if (report.events[i].replayed) {
        ++report.replayed;
      } else {
        ++report.failed;
      }
    }
    reports.clear();
    if (progress) progress(report.replayed, report.selected);
  }
  return report;
}

}  // namespace hi::consume
