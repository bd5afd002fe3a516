#include "consume/dlq.h"

#include <map>

#include "core/time.h"
#include "pg/array.h"
#include "pg/transaction.h"

namespace hi::consume {
namespace {

using nlohmann::json;

constexpr const char* kParkSql =
    "INSERT INTO event_dlq (event_id, consumer_name, topic, kind, tenant_id, user_id, envelope, "
    "error, retry_count, message_key, headers) "
    "VALUES ($1, $2, $3, $4, $5::bigint, $6, $7::jsonb, $8, $9::int, $10, $11::jsonb) "
    "ON CONFLICT (consumer_name, event_id) WHERE replayed_at IS NULL DO NOTHING RETURNING id";

// The value as stored: the JSON itself, or (for a value that is not JSON) a JSON string.
std::string envelope_json(const std::string& value) {
  if (json::accept(value)) return value;
  return json(value).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string rfc3339(std::string_view pg_time) {
  auto us = parse_rfc3339_us(pg_time);
  return us ? format_rfc3339_us(*us) : std::string(pg_time);
}

json time_or_null(const pg::QueryResult& r, int row, int col) {
  if (r.is_null(row, col)) return nullptr;
  return rfc3339(r.text(row, col));
}

}  // namespace

Result<bool> park(pg::Connection& conn, const ParkRequest& p) {
  json headers = json::array();
  std::string topic, key, value;
  if (p.delivery != nullptr) {
    topic = p.delivery->topic;
    key = p.delivery->key;
    value = p.delivery->value;
    for (const auto& [k, v] : p.delivery->headers) headers.push_back(json::array({k, v}));
  }
  std::string error = p.error.size() > 4000 ? p.error.substr(0, 4000) : p.error;
  auto r = conn.exec(kParkSql, {p.event_id, p.consumer, topic, p.kind, p.tenant_id,
                                p.user_id.empty() ? pg::Param() : pg::Param(p.user_id),
                                envelope_json(value), error, std::to_string(p.retry_count), key,
                                headers.dump(-1, ' ', false, json::error_handler_t::replace)});
  if (!r) return r.error().wrap("park event " + p.event_id);
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
               {"error", p.error.size() > 1000 ? p.error.substr(0, 1000) : p.error},
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
      "jsonb_typeof(envelope) = 'string', envelope #>> '{}' "
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
        const std::uint64_t tag = report.events.size() + 1;
        if (auto s = producer->send(std::move(m), tag); !s) {
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
