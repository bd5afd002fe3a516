#include "cdc/poller.h"

#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "pg/array.h"
#include "pg/transaction.h"

namespace hi::cdc {

bus::Message route_outbox_row(const OutboxRouter& router, const pg::QueryResult& rows, int row,
                              const ChangeSource& source, const std::string& park_topic,
                              std::string* parked_reason) {
  pg::Relation rel;
  pg::Tuple t;
  for (int c = 0; c < rows.columns(); ++c) {
    rel.columns.push_back({false, std::string(rows.column_name(c)), 0, -1});
    if (rows.is_null(row, c)) {
      t.columns.push_back({pg::Column::Kind::kNull, {}});
    } else {
      t.columns.push_back({pg::Column::Kind::kText, std::string(rows.text(row, c))});
    }
  }
  return route_or_park(router, rel, t, source, park_topic, parked_reason);
}

Poller::Poller(RelayOptions options, std::size_t batch, Metrics& metrics, Logger log)
    : options_(std::move(options)), batch_(batch), metrics_(metrics), log_(std::move(log)) {}

Status Poller::run_once(std::stop_token stop, bus::Producer& producer) {
  auto routes = RouteTable::parse(options_.routes, options_.unknown_topic);
  if (!routes) return routes.error();
  const OutboxRouter router(std::move(*routes), options_.format);
  auto conn = pg::Connection::connect(options_.database_url, "hashinsight_relay");
  if (!conn) return conn.error();
  if (auto s = conn->listen("hi_outbox"); !s) return s;
  // Writers notify only once a poller has switched it on: under logical replication nobody
  // listens, and the trigger would cost every insert (migration 020).
  if (auto r = conn->exec("SELECT hi_outbox_notify(true)"); !r) return r.error();
  log_.info("polling the outbox", {{"batch", batch_}, {"bus", producer.name()}});
  auto& published = metrics_.counter("hashinsight_relay_events_total", "Events published, by topic",
                                     {{"topic", "all"}});
  const std::string claim = "SELECT * FROM " + options_.outbox_table +
                            " WHERE NOT processed ORDER BY created_at, id LIMIT " +
                            std::to_string(batch_) + " FOR UPDATE SKIP LOCKED";
  auto last_retention = std::chrono::steady_clock::time_point{};
  while (!stop.stop_requested()) {
    pg::Transaction tx(*conn);
    if (auto s = tx.begin(); !s) return s;
    auto rows = conn->exec(claim);
    if (!rows) return rows.error();
    if (rows->empty()) {
      if (auto s = tx.commit(); !s) return s;
      // Retention, at most once a minute, while idle: processed rows past their age.
      if (options_.retention_hours > 0 &&
          std::chrono::steady_clock::now() - last_retention >= std::chrono::minutes(1)) {
        last_retention = std::chrono::steady_clock::now();
        auto d =
            conn->exec("DELETE FROM " + options_.outbox_table +
                           " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + options_.outbox_table +
                           " WHERE processed AND processed_at < now() - make_interval(hours => "
                           "$1::int) LIMIT 5000))",
                       {std::to_string(options_.retention_hours)});
        if (d && d->affected() > 0) log_.info("outbox retention", {{"deleted", d->affected()}});
      }
      auto n = conn->wait_notification(std::chrono::milliseconds(1000));
      if (!n) return n.error();
      continue;
    }
    // Holding a claim longer (sleep) makes concurrent pollers' claims overlap in tests.
    if (auto st = failpoint("poll.after_claim"); !st) return st;
    std::vector<std::string> ids;
    const int id_col = rows->column_index("id");
    const std::size_t before = acked_;
    for (int r = 0; r < rows->rows(); ++r) {
      ChangeSource src;
      src.ordinal = static_cast<std::uint32_t>(r + 1);
      src.commit_time_unix_us = unix_now_us();
      std::string parked;
      bus::Message msg = route_outbox_row(router, *rows, r, src, options_.unknown_topic, &parked);
      if (!parked.empty()) {
        log_.warn("unroutable outbox row parked",
                  {{"error", parked}, {"topic", options_.unknown_topic}});
      }
      if (auto s = producer.send(std::move(msg), 0); !s) return s;
      ids.emplace_back(rows->text(r, id_col));
    }
    while (acked_ - before < ids.size() && !stop.stop_requested()) {
      producer.poll(std::chrono::milliseconds(100));
      if (delivery_error_) return *delivery_error_;
    }
    if (acked_ - before < ids.size()) return {};  // stopping: the batch rolls back, goes again
    auto mark = conn->exec("UPDATE " + options_.outbox_table +
                               " SET processed = true, processed_at = now() WHERE id = ANY($1)",
                           {pg::array_literal(ids)});
    if (!mark) return mark.error();
    if (auto s = tx.commit(); !s) return s;
    published.Increment(static_cast<double>(ids.size()));
    stats_.events_published.fetch_add(ids.size());
  }
  return {};
}

Status Poller::run(std::stop_token stop) {
  auto producer = bus::make_producer(options_.bus, [this](std::uint64_t, const Status& s) {
    if (!s && !delivery_error_) delivery_error_ = s.error();
    ++acked_;
    stats_.events_acked.fetch_add(1);
  });
  if (!producer) return producer.error();
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  while (!stop.stop_requested()) {
    Status s = run_once(stop, **producer);
    if (stop.stop_requested()) break;
    if (!s && (s.error().code == Code::kInvalidArgument || delivery_error_)) return s;
    log_.warn("poller lost its connection; reconnecting",
              {{"error", s ? std::string("ended") : s.error().message}});
    if (!sleep_for(stop, backoff.next())) break;
  }
  log_.info("poller stopped", {{"published", stats_.events_published.load()}});
  return {};
}

}  // namespace hi::cdc
