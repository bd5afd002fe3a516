#include "consume/runtime.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "consume/dlq.h"
#include "consume/fenced_lock.h"
#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/time.h"
#include "pg/array.h"
#include "pg/transaction.h"
#include "redis/client.h"

namespace hi::consume {
namespace {

constexpr const char* kInboxInsert = "hi_consume_inbox_insert";
constexpr const char* kSetTenant = "hi_consume_set_tenant";
constexpr const char* kSetTenantSql = "SELECT set_config('app.tenant_id', $1, true)";
constexpr const char* kInvisible = "hi_consume_invisible";
// The steps of a batch whose time is counted (Runtime::Impl::Stage, in that order).
constexpr const char* kStageNames[] = {"poll",   "lock",         "inbox", "handler",
                                       "commit", "after_commit", "ack"};
constexpr const char* kInboxInsertSql =
    "INSERT INTO consumer_inbox (consumer_name, event_id, tenant_id) "
    "SELECT $1, e, $3::bigint FROM unnest($2::text[]) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id";

// The events (id, source.xid) whose transaction is not visible in this statement's snapshot:
// neither is the xid visible nor is the outbox row. A 32-bit xid is widened with the epoch that
// puts it within 2^31 of the snapshot's xmax (xids at or above xmax had not completed when the
// snapshot was taken, and the event's may be one of them). An xid not assigned yet (age() < 0:
// past the next xid) cannot belong to a decoded commit: garbage, not waited for. xid 0 =
// unknown: only the outbox row can tell. Returns (id, xid known).
constexpr const char* kInvisibleSql = R"sql(
WITH s AS (SELECT pg_current_snapshot() AS snap,
                  pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
     w AS (SELECT e.id, e.xid, s.snap, s.xmax, ((s.xmax >> 32) << 32) + e.xid AS same_epoch
             FROM unnest($1::text[], $2::bigint[]) AS e(id, xid), s),
     e AS (SELECT id, xid, snap,
                  CASE WHEN xid >= 4294967296 THEN xid
                       WHEN xid = 0 THEN NULL
                       WHEN same_epoch > xmax + 2147483648 THEN same_epoch - 4294967296
                       WHEN same_epoch < xmax - 2147483648 THEN same_epoch + 4294967296
                       ELSE same_epoch END AS full_xid
             FROM w)
SELECT id, xid > 0 FROM e
 WHERE (full_xid IS NULL OR (full_xid >= 3 AND age((full_xid % 4294967296)::text::xid) >= 0 AND
                             NOT pg_visible_in_snapshot(full_xid::text::xid8, snap)))
   AND NOT EXISTS (SELECT 1 FROM event_outbox o WHERE o.id = e.id)
)sql";

// An event without a source.xid whose outbox row stays invisible this long is applied anyway:
// its row may have been removed by outbox retention after the relay published it.
constexpr auto kOutboxRowWait = std::chrono::seconds(5);

enum class Verdict { kOk, kTransient, kFenced, kFailed, kNotVisible };

struct Attempt {
  Verdict verdict = Verdict::kOk;
  Error error;
};

// Runs fn() and turns an exception escaping a handler into an error: the events' fault.
template <typename Fn>
auto guarded(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return internal_error(std::string(what) + " threw: " + e.what());
  }
}

}  // namespace

class Runtime::Impl {
 public:
  Impl(RuntimeOptions options, Handler& handler, Metrics& metrics, Logger log, RuntimeStats& stats)
      : o_(std::move(options)),
        handler_(handler),
        log_(std::move(log)),
        stats_(stats),
        locks_(o_.consumer.consumer_name, o_.lock_lease),
        rng_(std::random_device{}()) {
    const MetricLabels l = {{"group", o_.consumer.group}};
    m_deliveries_ = &metrics.counter("hashinsight_consumer_deliveries_total",
                                     "Messages received by the consumer group", l);
    m_applied_ = &metrics.counter("hashinsight_consumer_applied_total",
                                  "Events applied (inbox rows inserted)", l);
    m_duplicates_ = &metrics.counter("hashinsight_consumer_duplicates_total",
                                     "Deliveries skipped because their inbox row existed", l);
    m_dlq_ = &metrics.counter("hashinsight_consumer_dead_lettered_total",
                              "Events parked in the dead-letter queue", l);
    m_retries_ =
        &metrics.counter("hashinsight_consumer_retries_total", "Transaction attempts retried", l);
    m_fenced_ = &metrics.counter("hashinsight_consumer_fenced_total",
                                 "Writes rejected by a newer fencing token", l);
    m_batch_ = &metrics.histogram("hashinsight_consumer_batch_seconds",
                                  "Time to apply and acknowledge one batch", l);
    m_bus_to_commit_ = &metrics.histogram(
        "hashinsight_consumer_bus_to_commit_seconds",
        "From the bus storing an event to the commit that applied it (clocks of the bus host "
        "and the consumer)",
        l, Metrics::fine_latency_buckets());
    m_lag_ = &metrics.gauge("hashinsight_consumer_lag_messages",
                            "Messages of the subscribed topics not yet consumed by the group", l);
    m_not_visible_ =
        &metrics.counter("hashinsight_consumer_not_visible_total",
                         "Attempts that waited for an event's transaction to become visible", l);
    for (int i = 0; i < kStages; ++i) {
      MetricLabels sl = l;
      sl["stage"] = kStageNames[i];
      m_stage_[i] = &metrics.counter("hashinsight_consumer_stage_seconds_total",
                                     "Where the consumer's time goes: waiting for the bus, locks, "
                                     "the inbox statement, the handler, COMMIT, post-commit Redis "
                                     "commands, acknowledgements",
                                     sl);
    }
  }

  Status run(std::stop_token stop);

 private:
  // Connections (re)made on demand; false when stopped while waiting for the servers.
  bool ensure_db(std::stop_token stop);
  bool ensure_consumer(std::stop_token stop);
  Status ensure_producer();

  // Adds what arrives within o_.linger to a non-empty batch (up to batch_size).
  void linger(std::vector<bus::Delivery>& batch);
  // Applies a polled batch (one delivery at a time when it may hold a message that kills its
  // consumer) and acknowledges it. False: stopped before the batch was settled.
  bool consume(std::stop_token stop, std::vector<bus::Delivery>& batch);
  // Applies deliveries (post-commit commands included). False: stopped before they were
  // settled (nothing may be acknowledged).
  bool process(std::stop_token stop, std::vector<bus::Delivery>& deliveries);
  // Acknowledges `deliveries` together with earlier ones whose acknowledgement failed; a
  // failure keeps them for the next call (after the next poll) instead of retrying here.
  // `later`: with the next poll (commit_later()); the one-at-a-time path of suspects
  // acknowledges each at once, so that a crash redelivers only what was not applied.
  void acknowledge(const std::vector<bus::Delivery>& deliveries, bool later = true);
  // Kafka: which deliveries fall in the range of a batch whose processing never finished (a
  // marker per group, topic and partition in Redis), and marks this batch's range. Redis
  // Streams: the entries delivered before (delivery_count > 1).
  std::vector<bool> suspects(const std::vector<bus::Delivery>& batch);
  void clear_marks(const std::vector<bus::Delivery>& batch);
  // Counts an attempt at a suspect delivery; returns the deliveries of it that never finished
  // (this one excluded), or -1 when Redis could not count.
  std::int64_t count_attempt(const bus::Delivery& d);
  void attempt_finished(const bus::Delivery& d);
  // While a counted attempt waits (a lock another worker holds, a backoff, an outage) it is
  // not counted, so that a consumer killed while waiting does not count against the message:
  // wait() uncounts it, and transact() counts it again before the handler runs.
  bool wait(std::stop_token stop, std::chrono::milliseconds duration);
  void recount(int delta);
  // Sends post-commit commands, and `then` after them in the same round trip; what fails is
  // kept in unsent_. Returns the reply to `then` (nullopt when the round trip failed).
  std::optional<redis::Reply> send_after_commit(std::vector<RedisCommand> commands,
                                                const RedisCommand* then = nullptr);
  // Retries unsent_ with backoff until it is empty. False: stopped first.
  bool flush_after_commit(std::stop_token stop);
  // Applies the events of one tenant (in rounds as user locks become free). False: stopped.
  bool apply_tenant(std::stop_token stop, const std::string& tenant,
                    std::vector<const Event*> events);
  // One unit (one user's events or one event) with up to max_attempts; parks it on failure.
  // `failed_once`: the unit already failed one attempt (it was the whole batch).
  bool apply_isolated(std::stop_token stop, const std::string& tenant,
                      const std::vector<const Event*>& unit, const Error* failed_once);
  // Takes locks for the users of `events`; returns the events whose user is locked (all of
  // them for handlers without locks) and fills `users`/`tokens` with what to release.
  Result<std::vector<const Event*>> lock(const std::vector<const Event*>& events,
                                         std::vector<std::string>& users,
                                         std::vector<std::int64_t>& tokens);
  // Sends the post-commit commands of the last transact() (committed_after_) and releases the
  // locks, in one round trip.
  void unlock(const std::vector<std::string>& users, const std::vector<std::int64_t>& tokens);
  // One transaction over `events` of `tenant`, users' tokens given.
  Attempt transact(const std::string& tenant, const std::vector<const Event*>& events,
                   const std::unordered_map<std::string, std::int64_t>& tokens);
  void rollback();
  bool park_events(std::stop_token stop, const std::string& tenant,
                   const std::vector<const Event*>& events, const Error& error, int attempts);
  // Parks a delivery as a whole: unparseable, or one that kept killing its consumer.
  bool park_delivery(std::stop_token stop, const bus::Delivery& d, const Error& error,
                     int retry_count);
  bool park_one(std::stop_token stop, const std::string& tenant, const ParkRequest& request);
  // Sends the events.dlq message of a parked event (a notification: failures are logged).
  void publish_parked(const ParkRequest& request);
  void publish_status(bool force);
  // The wait before attempt `attempt` (2, 3, ...).
  std::chrono::milliseconds backoff(int attempt) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    return backoff_delay(attempt - 1, o_.backoff_base, o_.backoff_max, u(rng_));
  }
  // The wait for a commit to become visible: short (normally microseconds), capped at 100 ms.
  std::chrono::milliseconds visibility_backoff(int waits) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    return backoff_delay(std::min(waits, 8), std::chrono::milliseconds(1),
                         std::chrono::milliseconds(100), u(rng_));
  }
  void note_not_visible(const std::string& tenant, int waits, const Error& error);
  // The steps of a batch whose time is counted (kStageNames).
  enum Stage { kPoll, kLock, kInbox, kHandler, kCommit, kAfterCommit, kAck, kStages };
  // Adds the time since `since_ns` (mono_now_ns) to a stage's stat and counter.
  void spent(Stage stage, std::int64_t since_ns) {
    const std::int64_t ns = mono_now_ns() - since_ns;
    std::atomic<std::int64_t>* stats[] = {
        &stats_.poll_ns,   &stats_.lock_ns,         &stats_.inbox_ns, &stats_.handler_ns,
        &stats_.commit_ns, &stats_.after_commit_ns, &stats_.ack_ns};
    *stats[stage] += ns;
    m_stage_[stage]->Increment(static_cast<double>(ns) / 1e9);
  }
  // A batch that takes this long is logged with where its time went.
  static constexpr std::chrono::milliseconds kSlowBatch{250};
  using StageTimes = std::array<std::int64_t, kStages>;
  StageTimes stage_times() const {
    return {stats_.poll_ns,   stats_.lock_ns,         stats_.inbox_ns, stats_.handler_ns,
            stats_.commit_ns, stats_.after_commit_ns, stats_.ack_ns};
  }
  void note_slow_batch(double seconds, std::size_t deliveries, const StageTimes& before) {
    const StageTimes after = stage_times();
    nlohmann::json ms = nlohmann::json::object();
    for (std::size_t i = kLock; i < after.size(); ++i) {  // the poll came before the batch
      ms[kStageNames[i]] = static_cast<double>((after[i] - before[i]) / 1000) / 1e3;
    }
    log_.warn("slow batch", {{"ms", static_cast<std::int64_t>(seconds * 1e3)},
                             {"deliveries", deliveries},
                             {"stages_ms", ms.dump()}});
  }
  std::string attempts_key() const { return "hi:consume:attempts:" + o_.consumer.group; }
  std::string marks_key() const { return "hi:consume:inflight:" + o_.consumer.group; }

  RuntimeOptions o_;
  Handler& handler_;
  Logger log_;
  RuntimeStats& stats_;
  FencedLocks locks_;
  std::mt19937_64 rng_;

  pg::Connection db_;
  bool db_ready_ = false;
  redis::Client redis_;
  std::unique_ptr<bus::Consumer> consumer_;
  std::unique_ptr<bus::Producer> producer_;
  std::map<std::uint64_t, Status> dlq_reports_;
  std::uint64_t dlq_tag_ = 0;
  std::chrono::steady_clock::time_point next_status_{};
  std::int64_t last_commit_us_ = 0;
  std::stop_token stop_;              // of run(): reconnect loops deep in a batch observe it
  std::string counted_field_;         // the attempt being counted ("" = none)
  bool counted_ = false;              // ... and whether it is counted right now
  std::vector<RedisCommand> unsent_;  // post-commit commands not sent yet
  std::vector<RedisCommand> committed_after_;  // transact()'s, for unlock() to send
  std::vector<bus::Delivery> unacked_;         // deliveries (positions only) not acknowledged yet
  // Events without a known xid whose outbox row was not visible: since when (per batch).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> unseen_since_;

  prometheus::Counter* m_deliveries_;
  prometheus::Counter* m_applied_;
  prometheus::Counter* m_duplicates_;
  prometheus::Counter* m_dlq_;
  prometheus::Counter* m_retries_;
  prometheus::Counter* m_fenced_;
  prometheus::Histogram* m_batch_;
  prometheus::Histogram* m_bus_to_commit_;
  prometheus::Gauge* m_lag_;
  prometheus::Counter* m_not_visible_;
  prometheus::Counter* m_stage_[kStages];
};

Runtime::Runtime(RuntimeOptions options, Handler& handler, Metrics& metrics, Logger log)
    : impl_(std::make_unique<Impl>(std::move(options), handler, metrics, std::move(log), stats_)) {}
Runtime::~Runtime() = default;
Status Runtime::run(std::stop_token stop) { return impl_->run(stop); }

bool Runtime::Impl::ensure_db(std::stop_token stop) {
  if (db_ready_ && db_.healthy()) return true;
  db_ready_ = false;
  for (int attempt = 1; !stop.stop_requested(); ++attempt) {
    auto c = pg::Connection::connect(o_.database_url, o_.db_role);
    if (c) {
      db_ = std::move(*c);
      // The runtime's and the handlers' statements are prepared and planned once: a batch's
      // work is a few index lookups, which re-planning every time would outweigh.
      Status s;
      if (auto g = db_.exec("SET plan_cache_mode = force_generic_plan"); !g) s = g.error();
      if (s) s = db_.prepare(kInboxInsert, kInboxInsertSql);
      if (s) s = db_.prepare(kSetTenant, kSetTenantSql);
      if (s) s = db_.prepare(kInvisible, kInvisibleSql);
      if (s) s = handler_.prepare(db_);
      if (s) {
        db_ready_ = true;
        if (attempt > 1) log_.info("database reachable again", {});
        return true;
      }
      log_.warn("preparing statements failed", {{"error", s.error().message}});
    } else if (attempt == 1) {
      log_.warn("database unreachable; retrying", {{"error", c.error().message}});
    }
    if (!wait(stop, backoff(std::min(attempt + 1, 8)))) break;
  }
  return false;
}

bool Runtime::Impl::ensure_consumer(std::stop_token stop) {
  if (consumer_) return true;
  for (int attempt = 1; !stop.stop_requested(); ++attempt) {
    auto c = bus::make_consumer(o_.bus, o_.consumer);
    if (c) {
      consumer_ = std::move(*c);
      return true;
    }
    if (attempt == 1) log_.warn("bus unreachable; retrying", {{"error", c.error().message}});
    if (!sleep_for(stop, backoff(std::min(attempt + 1, 8)))) break;
  }
  return false;
}

Status Runtime::Impl::ensure_producer() {
  if (producer_) return {};
  auto p = bus::make_producer(
      o_.bus, [this](std::uint64_t tag, const Status& s) { dlq_reports_[tag] = s; });
  if (!p) return p.error().wrap("dlq producer");
  producer_ = std::move(*p);
  return {};
}

Status Runtime::Impl::run(std::stop_token stop) {
  stop_ = stop;
  auto r = redis::Client::connect(o_.redis_url);
  if (!r) return r.error().wrap("consumer redis");
  redis_ = std::move(*r);
  if (!ensure_db(stop) || !ensure_consumer(stop)) return {};
  log_.info("consuming", {{"group", o_.consumer.group},
                          {"consumer", o_.consumer.consumer_name},
                          {"topics", o_.consumer.topics},
                          {"bus", std::string(bus::to_string(o_.bus.kind))}});
  while (!stop.stop_requested()) {
    publish_status(false);
    std::int64_t t = mono_now_ns();
    auto batch = consumer_->poll(o_.batch_size, o_.poll_timeout);
    if (batch && !batch->empty() && o_.linger.count() > 0) linger(*batch);
    spent(kPoll, t);
    if (!batch) {
      if (batch.error().code == Code::kFailedPrecondition) return batch.error().wrap("consumer");
      log_.warn("poll failed; retrying", {{"error", batch.error().message}});
      if (!sleep_for(stop, std::chrono::milliseconds(200))) break;
      continue;
    }
    if (batch->empty()) {
      if (!unacked_.empty()) acknowledge({});
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const StageTimes before = stage_times();
    // The batch in hand is finished even when a stop arrives meanwhile (SIGTERM finishes the
    // batch); only backoff waits observe `stop`.
    if (!consume(stop, *batch)) break;
    last_commit_us_ = unix_now_us();
    stats_.last_commit_unix_us = last_commit_us_;
    stats_.batches++;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m_batch_->Observe(seconds);
    if (seconds * 1e3 >= static_cast<double>(kSlowBatch.count())) {
      note_slow_batch(seconds, batch->size(), before);
    }
  }
  if (!unacked_.empty()) acknowledge({});
  // What commit_later() left for the next poll goes now: there is none.
  if (auto s = consumer_->commit({}); !s) {
    log_.warn("acknowledging at stop failed (redelivered at the next start)",
              {{"error", s.error().message}});
  }
  publish_status(true);
  log_.info("consumer stopped", {{"group", o_.consumer.group},
                                 {"applied", stats_.applied.load()},
                                 {"duplicates", stats_.duplicates.load()},
                                 {"dead_lettered", stats_.dead_lettered.load()}});
  return {};
}

void Runtime::Impl::linger(std::vector<bus::Delivery>& batch) {
  const auto until = std::chrono::steady_clock::now() + o_.linger;
  while (batch.size() < o_.batch_size && !stop_.stop_requested()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto more = consumer_->poll(o_.batch_size - batch.size(), left);
    if (!more || more->empty()) break;  // a failed poll shows again at the next one
    for (auto& d : *more) batch.push_back(std::move(d));
  }
}

bool Runtime::Impl::consume(std::stop_token stop, std::vector<bus::Delivery>& batch) {
  const std::vector<bool> suspect = suspects(batch);
  if (std::find(suspect.begin(), suspect.end(), true) == suspect.end()) {
    const bool settled = process(stop, batch);
    if (settled) acknowledge(batch);
    clear_marks(batch);  // stopped or not, the batch did not kill us
    return settled;
  }
  // Some delivery may be one that killed its previous consumer: one at a time, each suspect's
  // attempts counted. In random order: a message that kills its consumer does so whenever it
  // is attempted, while a consumer killed from outside (kill -9 again and again) would
  // otherwise be killed on the same head-of-line message by each restart. Kafka's offset
  // commit covers everything before it, so a Kafka batch is acknowledged once, at the end;
  // Redis Streams entries one by one.
  log_.info(
      "batch may hold a message that ended its previous consumer; applying it one "
      "delivery at a time",
      {{"deliveries", batch.size()}});
  std::vector<std::size_t> order(batch.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng_);
  const bool ack_each =
      std::all_of(batch.begin(), batch.end(), [](const bus::Delivery& d) { return d.offset < 0; });
  for (const std::size_t i : order) {
    std::vector<bus::Delivery> one = {batch[i]};
    const bus::Delivery& d = one.front();
    if (suspect[i]) {
      std::int64_t counted = count_attempt(d);
      if (counted < 0) counted = std::max(d.delivery_count - 2, 0);  // Redis could not count
      if (counted >= o_.max_crashes) {
        const Error e = internal_error(
            "attempted " + std::to_string(counted) +
            " times on its own after its consumer died; each attempt ended its consumer "
            "before it finished (crash, kill -9, out of memory)");
        log_.error("message keeps ending its consumer; dead-lettering it",
                   {{"topic", d.topic}, {"position", d.position}, {"error", e.message}});
        if (!park_delivery(stop, d, e, static_cast<int>(counted))) return false;
        attempt_finished(d);
        if (ack_each) acknowledge(one, false);
        continue;
      }
    }
    const bool settled = process(stop, one);
    if (suspect[i]) attempt_finished(d);  // stopped or not, this attempt did not kill us
    if (!settled) {
      clear_marks(batch);
      return false;
    }
    if (ack_each) acknowledge(one, false);
  }
  if (!ack_each) acknowledge(batch, false);
  clear_marks(batch);
  return true;
}

bool Runtime::Impl::process(std::stop_token stop, std::vector<bus::Delivery>& deliveries) {
  stats_.deliveries += deliveries.size();
  m_deliveries_->Increment(static_cast<double>(deliveries.size()));
  unseen_since_.clear();
  std::vector<Event> events;
  events.reserve(deliveries.size());
  for (const auto& d : deliveries) {
    auto e = parse_event(d);
    if (!e) {
      log_.warn("unparseable delivery; dead-lettering",
                {{"topic", d.topic}, {"position", d.position}, {"error", e.error().message}});
      // A message that cannot be parsed is not retried.
      if (!park_delivery(stop, d, e.error(), 0)) return false;
      continue;
    }
    events.push_back(std::move(*e));
  }
  if (!events.empty() && ensure_db(stop)) {
    auto s = guarded("resolve", [&] { return handler_.resolve(db_, events); });
    if (!s) {
      log_.warn("resolving events failed; applying them as parsed", {{"error", s.error().message}});
      if (!db_.healthy()) db_ready_ = false;
    }
  }
  std::map<std::string, std::vector<const Event*>> by_tenant;
  for (const auto& e : events) by_tenant[e.tenant_id].push_back(&e);
  for (auto& [tenant, list] : by_tenant) {
    if (!apply_tenant(stop, tenant, std::move(list))) return false;
  }
  return flush_after_commit(stop);
}

void Runtime::Impl::acknowledge(const std::vector<bus::Delivery>& deliveries, bool later) {
  const std::int64_t t = mono_now_ns();
  Status s = failpoint("consume.after_invalidate");
  if (s) {
    // Redis Streams sends these with the next poll, in its round trip.
    auto commit = [&](const std::vector<bus::Delivery>& d) {
      return later ? consumer_->commit_later(d) : consumer_->commit(d);
    };
    if (unacked_.empty()) {
      s = commit(deliveries);
    } else {
      std::vector<bus::Delivery> all = unacked_;
      all.insert(all.end(), deliveries.begin(), deliveries.end());
      s = commit(all);
      if (s) unacked_.clear();
    }
  }
  if (!s) {
    // Not retried here: the next poll comes first (it keeps a Kafka member in its group), then
    // these go again with the next acknowledgement. Kept without their contents.
    log_.warn("acknowledging failed; retrying after the next poll",
              {{"error", s.error().message}, {"deliveries", unacked_.size() + deliveries.size()}});
    for (const auto& d : deliveries) {
      bus::Delivery& kept = unacked_.emplace_back();
      kept.topic = d.topic;
      kept.partition = d.partition;
      kept.position = d.position;
      kept.offset = d.offset;
    }
  }
  spent(kAck, t);
}

namespace {
// "lo-hi" -> (lo, hi).
std::optional<std::pair<std::int64_t, std::int64_t>> parse_range(std::string_view text) {
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::int64_t lo = 0, hi = 0;
  const auto a = std::from_chars(text.data(), text.data() + dash, lo);
  const auto b = std::from_chars(text.data() + dash + 1, text.data() + text.size(), hi);
  if (a.ec != std::errc() || b.ec != std::errc() || b.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return std::make_pair(lo, hi);
}
}  // namespace

std::vector<bool> Runtime::Impl::suspects(const std::vector<bus::Delivery>& batch) {
  std::vector<bool> out(batch.size(), false);
  // (topic, partition) -> [lo, hi] offsets of this batch.
  std::map<std::pair<std::string, std::int32_t>, std::pair<std::int64_t, std::int64_t>> range;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const bus::Delivery& d = batch[i];
    if (d.offset < 0) {
      out[i] = d.delivery_count > 1;  // Redis Streams: delivered before, never acknowledged
      continue;
    }
    auto [it, fresh] = range.try_emplace({d.topic, d.partition}, d.offset, d.offset);
    if (!fresh) {
      it->second.first = std::min(it->second.first, d.offset);
      it->second.second = std::max(it->second.second, d.offset);
    }
  }
  if (range.empty()) return out;
  // Kafka: read the marks of an unfinished batch and mark this one, in one round trip.
  const std::string key = marks_key();
  std::vector<std::string> get = {"HMGET", key};
  std::vector<std::string> set = {"HSET", key};
  for (const auto& [tp, r] : range) {
    const std::string field = tp.first + "/" + std::to_string(tp.second);
    get.push_back(field);
    set.push_back(field);
    set.push_back(std::to_string(r.first) + "-" + std::to_string(r.second));
  }
  redis_.append(get);
  redis_.append(set);
  redis_.append(std::vector<std::string>{"PEXPIRE", key, "86400000"});
  auto replies = redis_.flush();
  if (!replies || replies->empty() || (*replies)[0].type != redis::Reply::Type::kArray) {
    log_.warn("reading in-flight marks failed; the batch is applied as a whole",
              {{"error", replies ? std::string("unexpected reply") : replies.error().message}});
    return out;
  }
  std::map<std::pair<std::string, std::int32_t>, std::pair<std::int64_t, std::int64_t>> marked;
  std::size_t k = 0;
  for (const auto& [tp, r] : range) {
    const auto& elements = (*replies)[0].elements;
    if (k >= elements.size()) break;
    const redis::Reply& v = elements[k++];
    if (v.type != redis::Reply::Type::kString) continue;
    if (auto r = parse_range(v.str)) marked[tp] = *r;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const bus::Delivery& d = batch[i];
    if (d.offset < 0) continue;
    auto it = marked.find({d.topic, d.partition});
    out[i] = it != marked.end() && it->second.first <= d.offset && d.offset <= it->second.second;
  }
  return out;
}

void Runtime::Impl::clear_marks(const std::vector<bus::Delivery>& batch) {
  std::set<std::string> fields;
  for (const auto& d : batch) {
    if (d.offset >= 0) fields.insert(d.topic + "/" + std::to_string(d.partition));
  }
  if (fields.empty()) return;
  std::vector<std::string> del = {"HDEL", marks_key()};
  del.insert(del.end(), fields.begin(), fields.end());
  auto r = redis_.command(del);
  if (!r) log_.debug("clearing in-flight marks failed", {{"error", r.error().message}});
}

std::int64_t Runtime::Impl::count_attempt(const bus::Delivery& d) {
  const std::string field = d.topic + "/" + std::to_string(d.partition) + "/" + d.position;
  redis_.append(std::vector<std::string>{"HINCRBY", attempts_key(), field, "1"});
  redis_.append(std::vector<std::string>{"PEXPIRE", attempts_key(), "86400000"});
  auto r = redis_.flush();
  if (!r || r->empty() || (*r)[0].type != redis::Reply::Type::kInteger) {
    log_.warn("counting the attempt failed",
              {{"error", r ? std::string("unexpected reply") : r.error().message}});
    return -1;
  }
  counted_field_ = field;
  counted_ = true;
  return (*r)[0].integer - 1;
}

void Runtime::Impl::attempt_finished(const bus::Delivery& d) {
  counted_field_.clear();
  counted_ = false;
  const std::string field = d.topic + "/" + std::to_string(d.partition) + "/" + d.position;
  auto r = redis_.command({"HDEL", attempts_key(), field});
  if (!r) log_.debug("clearing the attempt count failed", {{"error", r.error().message}});
}

void Runtime::Impl::recount(int delta) {
  if (counted_field_.empty() || counted_ == (delta > 0)) return;
  auto r = redis_.command(
      std::vector<std::string>{"HINCRBY", attempts_key(), counted_field_, std::to_string(delta)});
  if (!r) log_.debug("adjusting the attempt count failed", {{"error", r.error().message}});
  counted_ = delta > 0;
}

bool Runtime::Impl::wait(std::stop_token stop, std::chrono::milliseconds duration) {
  recount(-1);
  return sleep_for(stop, duration);
}

std::optional<redis::Reply> Runtime::Impl::send_after_commit(std::vector<RedisCommand> commands,
                                                             const RedisCommand* then) {
  if (commands.empty() && then == nullptr) return std::nullopt;
  const std::int64_t t = mono_now_ns();
  for (const auto& cmd : commands) redis_.append(cmd);
  if (then != nullptr) redis_.append(*then);
  auto f = redis_.flush();
  spent(kAfterCommit, t);
  if (!f) {
    log_.warn("post-commit redis commands failed; retrying before the acknowledgement",
              {{"error", f.error().message}, {"commands", commands.size()}});
    for (auto& cmd : commands) unsent_.push_back(std::move(cmd));
    return std::nullopt;
  }
  for (std::size_t i = 0; i < commands.size(); ++i) {
    // DEL and PUBLISH cannot fail for the data's sake: an error reply (a replica, an ACL, a
    // script busy) is the server's state, so the command is retried like a lost connection.
    if (i < f->size() && !(*f)[i].is_error()) continue;
    log_.warn("post-commit redis command refused; retrying before the acknowledgement",
              {{"command", commands[i].front()},
               {"reply", i < f->size() ? (*f)[i].str : std::string("none")}});
    unsent_.push_back(std::move(commands[i]));
  }
  if (then == nullptr || f->size() <= commands.size()) return std::nullopt;
  return std::move((*f)[commands.size()]);
}

bool Runtime::Impl::flush_after_commit(std::stop_token stop) {
  for (int attempt = 2; !unsent_.empty(); ++attempt) {
    if (!wait(stop, backoff(std::min(attempt, 8)))) return false;
    send_after_commit(std::exchange(unsent_, {}));
  }
  return true;
}

Result<std::vector<const Event*>> Runtime::Impl::lock(const std::vector<const Event*>& events,
                                                      std::vector<std::string>& users,
                                                      std::vector<std::int64_t>& tokens) {
  users.clear();
  tokens.clear();
  if (!handler_.locks_users()) return events;
  std::set<std::string> distinct;
  for (const Event* e : events) {
    if (!e->user_id.empty()) distinct.insert(e->user_id);
  }
  users.assign(distinct.begin(), distinct.end());
  auto t = locks_.try_acquire(redis_, users);
  if (!t) return t.error();
  tokens = std::move(*t);
  std::unordered_set<std::string_view> held;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (tokens[i] > 0) held.insert(users[i]);
  }
  std::vector<const Event*> ready;
  for (const Event* e : events) {
    if (e->user_id.empty() || held.contains(e->user_id)) ready.push_back(e);
  }
  return ready;
}

void Runtime::Impl::unlock(const std::vector<std::string>& users,
                           const std::vector<std::int64_t>& tokens) {
  auto commands = std::exchange(committed_after_, {});
  if (!commands.empty()) {
    // With the release behind them: one round trip. The commands go first, so that a worker
    // taking a lock just freed finds the cache invalidated and the notice published.
    auto release = locks_.release_command(redis_, users, tokens);
    if (release && *release) {
      auto reply = send_after_commit(std::move(commands), &**release);
      if (reply && !reply->is_error()) return;
      // The round trip failed, or the server lost its scripts (NOSCRIPT): on its own below.
    } else {
      send_after_commit(std::move(commands));
      if (release) return;  // no lock to release
    }
  }
  if (users.empty()) return;
  const std::int64_t t = mono_now_ns();
  auto r = locks_.release(redis_, users, tokens);
  spent(kLock, t);
  if (!r) log_.warn("releasing locks failed (they expire)", {{"error", r.error().message}});
}

bool Runtime::Impl::apply_tenant(std::stop_token stop, const std::string& tenant,
                                 std::vector<const Event*> pending) {
  int transient = 0;
  int busy_rounds = 0;
  int invisible = 0;
  while (!pending.empty()) {
    std::vector<std::string> users;
    std::vector<std::int64_t> tokens;
    const std::int64_t t_lock = mono_now_ns();
    auto ready = lock(pending, users, tokens);
    spent(kLock, t_lock);
    if (!ready) {
      log_.warn("taking locks failed; retrying", {{"error", ready.error().message}});
      if (!wait(stop, backoff(std::min(++transient + 1, 8)))) return false;
      continue;
    }
    if (ready->empty()) {
      // Every user of what is left is being recalculated by another worker right now: its
      // transaction is short, so wait a moment (the lease bounds a holder that died).
      unlock(users, tokens);
      std::uniform_int_distribution<int> jitter(1, 4);
      if (!wait(stop, std::chrono::milliseconds(std::min(++busy_rounds, 5) * jitter(rng_))))
        return false;
      continue;
    }
    busy_rounds = 0;
    std::unordered_map<std::string, std::int64_t> token_of;
    for (std::size_t i = 0; i < users.size(); ++i) {
      if (tokens[i] > 0) token_of[users[i]] = tokens[i];
    }
    const Attempt a = transact(tenant, *ready, token_of);
    unlock(users, tokens);
    if (a.verdict == Verdict::kNotVisible) {
      note_not_visible(tenant, ++invisible, a.error);
      if (!wait(stop, visibility_backoff(invisible))) return false;
      continue;
    }
    if (a.verdict == Verdict::kTransient || a.verdict == Verdict::kFenced) {
      stats_.retries++;
      m_retries_->Increment();
      if (a.verdict == Verdict::kTransient) {
        log_.warn("transient failure; retrying the batch",
                  {{"tenant", tenant}, {"error", a.error.message}});
        if (!wait(stop, backoff(std::min(++transient + 1, 8)))) return false;
      }
      continue;
    }
    if (a.verdict == Verdict::kFailed) {
      log_.warn("batch failed; retrying its events one unit at a time",
                {{"tenant", tenant}, {"events", ready->size()}, {"error", a.error.message}});
      // Units: one user's events when the handler recalculates per user, else single events.
      std::map<std::string, std::vector<const Event*>> units;
      std::vector<std::vector<const Event*>> singles;
      for (const Event* e : *ready) {
        if (handler_.locks_users() && !e->user_id.empty()) {
          units[e->user_id].push_back(e);
        } else {
          singles.push_back({e});
        }
      }
      // When the batch was a single unit, its failure was that unit's first attempt.
      const bool one_unit = units.size() + singles.size() == 1;
      const Error* first = one_unit ? &a.error : nullptr;
      for (auto& [user, unit] : units) {
        if (!apply_isolated(stop, tenant, unit, first)) return false;
      }
      for (auto& unit : singles) {
        if (!apply_isolated(stop, tenant, unit, first)) return false;
      }
    }
    // Done with `ready` (applied, or isolated and applied/parked): drop it from pending.
    std::unordered_set<const Event*> done(ready->begin(), ready->end());
    std::erase_if(pending, [&](const Event* e) { return done.contains(e); });
    transient = 0;
  }
  return true;
}

bool Runtime::Impl::apply_isolated(std::stop_token stop, const std::string& tenant,
                                   const std::vector<const Event*>& unit,
                                   const Error* failed_once) {
  Error last;
  int attempt = 1;
  int transient = 0;
  int invisible = 0;
  if (failed_once != nullptr) {
    last = *failed_once;
    if (o_.max_attempts <= 1) return park_events(stop, tenant, unit, last, 1);
    attempt = 2;
    if (!wait(stop, backoff(attempt))) return false;
  }
  while (attempt <= o_.max_attempts) {
    std::vector<std::string> users;
    std::vector<std::int64_t> tokens;
    auto ready = lock(unit, users, tokens);
    if (!ready || ready->size() != unit.size()) {
      unlock(users, tokens);
      if (!wait(stop, std::chrono::milliseconds(2))) return false;
      continue;
    }
    std::unordered_map<std::string, std::int64_t> token_of;
    for (std::size_t i = 0; i < users.size(); ++i) token_of[users[i]] = tokens[i];
    const Attempt a = transact(tenant, unit, token_of);
    unlock(users, tokens);
    if (a.verdict == Verdict::kOk) return true;
    if (a.verdict == Verdict::kNotVisible) {
      note_not_visible(tenant, ++invisible, a.error);
      if (!wait(stop, visibility_backoff(invisible))) return false;
      continue;
    }
    stats_.retries++;
    m_retries_->Increment();
    if (a.verdict == Verdict::kFenced) continue;
    if (a.verdict == Verdict::kTransient) {
      if (!wait(stop, backoff(std::min(++transient + 1, 8)))) return false;
      continue;
    }
    last = a.error;
    log_.warn("event failed", {{"tenant", tenant},
                               {"event_id", unit.front()->id},
                               {"user_id", unit.front()->user_id},
                               {"events", unit.size()},
                               {"attempt", attempt},
                               {"max_attempts", o_.max_attempts},
                               {"error", a.error.message}});
    if (attempt == o_.max_attempts) break;
    ++attempt;
    if (!wait(stop, backoff(attempt))) return false;
  }
  return park_events(stop, tenant, unit, last, attempt);
}

void Runtime::Impl::note_not_visible(const std::string& tenant, int waits, const Error& error) {
  stats_.not_visible++;
  m_not_visible_->Increment();
  // Normally visible within microseconds; a synchronous-replication wait can last long.
  if (waits == 20 || waits % 200 == 0) {
    log_.warn("waiting for an event's transaction to become visible",
              {{"tenant", tenant}, {"waits", waits}, {"error", error.message}});
  }
}

void Runtime::Impl::rollback() {
  // Not after a failed COMMIT (the handler's or ours) ended it: the server would warn.
  if (db_.healthy() && !db_.in_transaction()) return;
  auto r = db_.exec("ROLLBACK");
  (void)r;
}

Attempt Runtime::Impl::transact(const std::string& tenant, const std::vector<const Event*>& events,
                                const std::unordered_map<std::string, std::int64_t>& tokens) {
  if (!db_ready_ || !db_.healthy()) {
    db_ready_ = false;
    if (!ensure_db(stop_)) return {Verdict::kTransient, unavailable("no database")};
  }
  recount(+1);  // the attempt runs from here
  // Distinct ids, first occurrence wins (a batch may carry the same event twice).
  std::vector<std::string_view> ids;
  std::unordered_set<std::string_view> seen;
  std::vector<const Event*> firsts;
  ids.reserve(events.size());
  for (const Event* e : events) {
    if (seen.insert(e->id).second) {
      ids.push_back(e->id);
      firsts.push_back(e);
    }
  }
  std::sort(ids.begin(), ids.end());  // a stable lock order for concurrent inserts
  // The batch per user, ordered by user id: all of it (the handler's prefetch), and split by
  // whether the inbox row was new.
  using ByUser = std::map<std::string_view, std::vector<const Event*>>;
  auto to_batch = [&](ByUser& from) {
    TenantBatch out;
    out.tenant_id = tenant;
    for (auto& [user, list] : from) {
      UserEvents u;
      u.user_id = std::string(user);
      if (auto it = tokens.find(u.user_id); it != tokens.end()) u.fencing_token = it->second;
      u.events = std::move(list);
      out.users.push_back(std::move(u));
    }
    return out;
  };
  std::vector<pg::Statement> begin = {
      {"BEGIN", {}, false},
      {kSetTenant, {tenant}, true},
      {kInboxInsert, {o_.name, pg::array_literal(ids), tenant}, true}};
  if (handler_.reads_state()) {
    std::vector<std::string_view> check_ids;
    std::vector<std::int64_t> xids;
    for (const Event* e : firsts) {
      check_ids.push_back(e->id);
      xids.push_back(static_cast<std::int64_t>(e->xid));
    }
    begin.push_back({kInvisible, {pg::array_literal(check_ids), pg::array_literal(xids)}, true});
  }
  // The handler's reads ride along (after the visibility check): one round trip fewer.
  std::vector<pg::Statement> reads;
  {
    ByUser all;
    for (const Event* e : firsts) all[e->user_id].push_back(e);
    reads = handler_.prefetch(to_batch(all));
  }
  const std::size_t first_read = begin.size();
  for (auto& st : reads) begin.push_back(std::move(st));
  std::int64_t t = mono_now_ns();
  auto r = db_.pipeline(begin);
  spent(kInbox, t);
  auto fail = [&](const Error& e) -> Attempt {
    rollback();
    if (!db_.healthy()) db_ready_ = false;
    return {e.code == Code::kUnavailable ? Verdict::kTransient : Verdict::kFailed, e};
  };
  if (!r) return fail(r.error().wrap("inbox"));
  if (handler_.reads_state()) {
    // Every event's own transaction must be visible before the handler reads what it wrote.
    const pg::QueryResult& invisible = (*r)[3];
    std::string waiting_for;
    const auto now = std::chrono::steady_clock::now();
    for (int i = 0; i < invisible.rows() && waiting_for.empty(); ++i) {
      const std::string id(invisible.text(i, 0));
      if (invisible.boolean(i, 1)) {
        waiting_for = id;  // its xid is not visible yet
      } else {
        const auto since = unseen_since_.try_emplace(id, now).first->second;
        if (now - since < kOutboxRowWait) waiting_for = id;
      }
    }
    if (!waiting_for.empty()) {
      rollback();
      return {Verdict::kNotVisible,
              unavailable("the transaction of event " + waiting_for + " is not visible yet")};
    }
    if (invisible.rows() > 0) {
      log_.warn("applying events whose outbox rows never became visible (removed?)",
                {{"tenant", tenant}, {"events", invisible.rows()}});
    }
  }
  const pg::QueryResult& inserted = (*r)[2];
  std::unordered_set<std::string_view> fresh;
  for (int i = 0; i < inserted.rows(); ++i) fresh.insert(inserted.text(i, 0));
  ByUser by_user, again_by_user;
  for (const Event* e : firsts) {
    (fresh.contains(e->id) ? by_user : again_by_user)[e->user_id].push_back(e);
  }
  TenantBatch batch = to_batch(by_user);
  TenantBatch redelivered = to_batch(again_by_user);
  if (redelivered.users.empty()) {
    // The batch is the one the reads were made for; with nothing left to do after apply(),
    // the handler may commit with its last statement.
    if (!reads.empty()) batch.prefetched = std::span<const pg::QueryResult>(*r).subspan(first_read);
    batch.commit = true;
  }
  ApplyOutcome outcome;
  if (!batch.users.empty()) {
    t = mono_now_ns();
    auto applied = guarded("handler", [&] { return handler_.apply(db_, batch); });
    spent(kHandler, t);
    if (!applied) return fail(applied.error());
    outcome = std::move(*applied);
    if (!outcome.fenced.empty()) {
      if (!outcome.ended) rollback();
      stats_.fenced += outcome.fenced.size();
      m_fenced_->Increment(static_cast<double>(outcome.fenced.size()));
      for (const auto& [user, stored] : outcome.fenced) {
        log_.info("write fenced off by a newer token; retrying",
                  {{"user_id", user}, {"stored_token", stored}});
        auto s = locks_.raise_fence(redis_, user, stored);
        if (!s) log_.warn("raising the fence failed", {{"error", s.error().message}});
      }
      return {Verdict::kFenced, failed_precondition("fenced")};
    }
  }
  if (!redelivered.users.empty()) {
    // Their earlier delivery may have ended between its commit and its post-commit commands.
    auto again = guarded("handler", [&] { return handler_.after_redelivery(db_, redelivered); });
    if (!again) return fail(again.error().wrap("after redelivery"));
    for (auto& cmd : *again) outcome.after_commit.push_back(std::move(cmd));
  }
  if (!outcome.ended) {
    t = mono_now_ns();
    auto c = db_.exec("COMMIT");
    spent(kCommit, t);
    if (!c) return fail(c.error().wrap("commit"));
  }
  const std::size_t applied = fresh.size();
  const std::size_t duplicates = events.size() - applied;
  const std::int64_t committed_ms = unix_now_us() / 1000;
  for (const Event* e : events) {
    if (e->delivery != nullptr && e->delivery->appended_unix_ms > 0 && fresh.contains(e->id)) {
      m_bus_to_commit_->Observe(static_cast<double>(std::max<std::int64_t>(
                                    0, committed_ms - e->delivery->appended_unix_ms)) /
                                1e3);
    }
  }
  stats_.applied += applied;
  stats_.duplicates += duplicates;
  m_applied_->Increment(static_cast<double>(applied));
  m_duplicates_->Increment(static_cast<double>(duplicates));
  if (auto s = failpoint("consume.after_commit"); !s) {
    log_.warn("post-commit commands deferred", {{"error", s.error().message}});
    for (auto& cmd : outcome.after_commit) unsent_.push_back(std::move(cmd));
    return {};
  }
  committed_after_ = std::move(outcome.after_commit);  // unlock() sends them with the release
  return {};
}

bool Runtime::Impl::park_events(std::stop_token stop, const std::string& tenant,
                                const std::vector<const Event*>& events, const Error& error,
                                int attempts) {
  std::unordered_set<std::string_view> parked;
  for (const Event* e : events) {
    if (!parked.insert(e->id).second) continue;  // the batch carried it twice
    ParkRequest p;
    p.consumer = o_.name;
    p.event_id = e->id;
    p.kind = e->kind;
    p.tenant_id = tenant;
    p.user_id = e->user_id;
    p.error = error.message;
    p.retry_count = attempts;
    p.delivery = e->delivery;
    if (!park_one(stop, tenant, p)) return false;
  }
  return true;
}

bool Runtime::Impl::park_delivery(std::stop_token stop, const bus::Delivery& d, const Error& error,
                                  int retry_count) {
  ParkRequest p;
  p.consumer = o_.name;
  if (auto e = parse_event(d)) {
    p.event_id = e->id;
    p.kind = e->kind;
    p.tenant_id = e->tenant_id;
    p.user_id = e->user_id;
  } else {
    p.event_id = header_value(d, "id");
    if (p.event_id.empty()) p.event_id = d.topic + "@" + d.position;
    p.kind = header_value(d, "kind");
    if (p.kind.empty()) p.kind = "unknown";
    const std::string& tenant = header_value(d, "tenant_id");
    p.tenant_id = is_decimal_id(tenant) ? tenant : "0";
    p.user_id = is_decimal_id(d.key) ? d.key : "";
  }
  p.error = error.message;
  p.retry_count = retry_count;
  p.delivery = &d;
  return park_one(stop, p.tenant_id, p);
}

bool Runtime::Impl::park_one(std::stop_token stop, const std::string& tenant,
                             const ParkRequest& p) {
  for (int attempt = 1;; ++attempt) {
    if (!ensure_db(stop)) return false;
    Result<bool> inserted = pg::in_transaction(db_, tenant, [&](pg::Connection& c) -> Result<bool> {
      auto r = park(c, p);
      if (!r) return r;
      if (auto s = failpoint("consume.in_dlq_park"); !s) return s.error();
      return r;
    });
    if (!inserted) {
      if (!db_.healthy()) db_ready_ = false;
      log_.warn("parking the event failed; retrying",
                {{"event_id", p.event_id}, {"error", inserted.error().message}});
      if (!wait(stop, backoff(std::min(attempt + 1, 8)))) return false;
      continue;
    }
    if (*inserted) {
      stats_.dead_lettered++;
      m_dlq_->Increment();
      log_.error("event dead-lettered", {{"event_id", p.event_id},
                                         {"kind", p.kind},
                                         {"tenant", tenant},
                                         {"user_id", p.user_id},
                                         {"retry_count", p.retry_count},
                                         {"error", p.error}});
    } else {
      // Parked by an earlier delivery that may have ended before its events.dlq message went
      // out: the message goes (again); the event_dlq row is the record either way.
      log_.info("event already parked", {{"event_id", p.event_id}});
    }
    publish_parked(p);
    return true;
  }
}

void Runtime::Impl::publish_parked(const ParkRequest& p) {
  if (auto s = ensure_producer(); !s) {
    log_.warn("dlq message not published", {{"error", s.error().message}});
    return;
  }
  const std::uint64_t tag = ++dlq_tag_;
  if (auto s = producer_->send(dlq_message(p, o_.dlq_topic), tag); !s) {
    log_.warn("dlq message not published", {{"error", s.error().message}});
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!dlq_reports_.contains(tag) && std::chrono::steady_clock::now() < deadline) {
    producer_->poll(std::chrono::milliseconds(100));
  }
  auto it = dlq_reports_.find(tag);
  if (it == dlq_reports_.end() || !it->second) {
    log_.warn("dlq message not confirmed (the event_dlq row is the record)",
              {{"event_id", p.event_id}});
  }
  if (it != dlq_reports_.end()) dlq_reports_.erase(it);
}

void Runtime::Impl::publish_status(bool force) {
  if (o_.status_interval.count() <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now < next_status_) return;
  next_status_ = now + o_.status_interval;
  std::int64_t lag = -1;
  if (consumer_) {
    if (auto l = consumer_->lag(); l) lag = *l;
  }
  stats_.lag = lag;
  if (lag >= 0) m_lag_->Set(static_cast<double>(lag));
  const std::string key = "hi:status:consumer:" + o_.consumer.group;
  const std::int64_t now_us = unix_now_us();
  std::vector<std::string> cmd = {"HSET",
                                  key,
                                  "group",
                                  o_.consumer.group,
                                  "consumer",
                                  o_.consumer.consumer_name,
                                  "bus",
                                  std::string(bus::to_string(o_.bus.kind)),
                                  "lag",
                                  std::to_string(lag),
                                  "applied",
                                  std::to_string(stats_.applied.load()),
                                  "duplicates",
                                  std::to_string(stats_.duplicates.load()),
                                  "dead_lettered",
                                  std::to_string(stats_.dead_lettered.load()),
                                  "batches",
                                  std::to_string(stats_.batches.load()),
                                  "last_commit_at",
                                  last_commit_us_ > 0 ? format_rfc3339_us(last_commit_us_) : "",
                                  "updated_at",
                                  format_rfc3339_us(now_us)};
  redis_.append(cmd);
  redis_.append(std::vector<std::string>{"EXPIRE", key, "60"});
  auto r = redis_.flush();
  if (!r) log_.debug("status not published", {{"error", r.error().message}});
}

}  // namespace hi::consume
