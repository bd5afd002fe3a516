// `hashinsight chaos --duration S --rate R [--bus redis|kafka] [--seed N] [--poison K]
// [--users U] [--json]`: the whole stack under writes while its parts die, then the invariants.
//
// `up` runs the stack on a fresh data directory (durable, stream retention off so the bus can be
// audited; on --bus kafka this process hosts the mock cluster, so it can fail its brokers, and
// hands KAFKA_BROKERS to `up`). The page load of `bench e2e` drives POST /api/miners at R/s
// across U bench users (unlimited plan), each with an Idempotency-Key and sent again on a
// connection error or a 5xx, with every user's page stream open. Meanwhile, at random intervals
// of 2-10 s drawn from --seed, two tracks inject faults:
//   processes  kill -9 of a random part (api, relay, a worker); a random `crash` or `sleep`
//              failpoint armed through DIR/failpoints/<part> before killing it (removed once the
//              restarted part has read it); kill -9 of the bus Redis (AOF on); once, PostgreSQL
//              stopped as `pg_ctl -m immediate` does (SIGQUIT). `up` restarts each.
//   brokers    (kafka) a broker down for 1-5 s; produce errors; fetch errors.
// Every kind is injected once before any is repeated. --poison K adds K events no consumer can
// apply (their user id is not a number), which must end in the dead-letter queue only.
//
// After the writes and a drain of at most 60 s, each invariant is checked and printed with its
// counts; then `up` is stopped and no process of the run may remain. Exit 1 when any check
// fails; the data directory and its logs are then kept and named.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "bus/bus.h"
#include "bus/kafka_mock.h"
#include "cli/bench_pages.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "consume/intel_worker.h"
#include "consume/portfolio_worker.h"
#include "core/process.h"
#include "core/time.h"
#include "http/client.h"
#include "pg/array.h"
#include "pg/local_server.h"
#include "redis/client.h"
#include "schema/outbox.h"

namespace hi::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

struct ChaosOptions {
  int duration_s = 60;
  double rate = 100;
  std::string bus = "redis";
  std::uint64_t seed = 0;  // 0: drawn at random (printed)
  int poison = 0;
  int users = 100;
  bool keep = false;  // keep the data directory even when every check holds
  bool json = false;
};

constexpr std::int64_t kNsPerMs = 1'000'000;
constexpr std::int64_t kNsPerS = 1'000'000'000;

// The consumer groups `up` runs and the topics each reads (worker_command.cc).
struct Group {
  const char* name;
  std::vector<std::string> topics;
};
const std::vector<Group>& groups() {
  static const std::vector<Group> kGroups = {
      {consume::kPortfolioGroup, {"events.miner"}},
      {consume::kIntelGroup, {"events.miner", "events.ops"}}};
  return kGroups;
}

// The failpoints a part passes under this load (docs/failpoints.md).
std::vector<std::string> failpoints_of(const std::string& part) {
  if (part == "relay") return {"relay.after_bus_ack"};
  if (part.rfind("worker-", 0) == 0) return {"consume.after_commit", "consume.after_invalidate"};
  return {};
}

struct Fault {
  std::string kind;    // kill_part, failpoint, kill_redis, stop_postgres, broker_down, ...
  std::string target;  // the part, "redis", "postgres", "broker N", "produce", "fetch"
  std::string detail;  // pid, failpoint specification, error count, seconds down
  std::int64_t at_ns = 0;
  std::string crash_point;  // a crash failpoint's name
  // A killed relay or worker: from the kill to the restarted part's first published event or
  // applied commit (its /metrics counter above 0); -1 when not seen.
  double restart_ms = -1;
};

// The file's text; "" when it cannot be read. Reading /proc/PID/cmdline of a process that exits
// meanwhile fails (ESRCH), and libstdc++'s filebuf throws on that.
std::string read_file(const fs::path& path) {
  try {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  } catch (const std::exception&) {
    return "";
  }
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The process id a Redis server reports (INFO server), or 0.
pid_t redis_pid(const std::string& url) {
  auto c = redis::Client::connect(url, std::chrono::seconds(2));
  if (!c) return 0;
  auto r = c->command({"INFO", "server"});
  if (!r || r->is_error()) return 0;
  const auto at = r->str.find("process_id:");
  if (at == std::string::npos) return 0;
  return static_cast<pid_t>(std::strtol(r->str.c_str() + at + 11, nullptr, 10));
}

// The postmaster's pid, from the first line of postmaster.pid, or 0.
pid_t postmaster_pid(const fs::path& pgdata) {
  std::ifstream in(pgdata / "postmaster.pid");
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

// The two fault tracks, each on its own thread, until stop().
class Injector {
 public:
  Injector(const ChaosOptions& o, const UpStack& stack, bus::MockCluster* mock)
      : o_(o), data_(fs::path(stack.dir()) / "data"), mock_(mock) {}

  void start(std::int64_t until_ns) {
    until_ns_ = until_ns;
    threads_.emplace_back([this] { processes(std::mt19937_64(o_.seed)); });
    if (mock_ != nullptr) threads_.emplace_back([this] { brokers(std::mt19937_64(o_.seed + 1)); });
    if (o_.poison > 0) threads_.emplace_back([this] { poison(); });
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    std::vector<std::thread> watchers;
    {
      std::lock_guard lock(mu_);
      watchers.swap(watchers_);
    }
    for (auto& t : watchers) t.join();
    if (mock_ != nullptr) mock_->set_broker_up(bus::MockCluster::kAllBrokers);
  }

  std::vector<Fault> faults() const {
    std::lock_guard lock(mu_);
    return faults_;
  }
  std::set<pid_t> pids_seen() const {
    std::lock_guard lock(mu_);
    return pids_;
  }
  std::vector<std::string> poison_ids() const {
    std::lock_guard lock(mu_);
    return poison_ids_;
  }
  // Every kind this run must inject.
  std::vector<std::string> kinds() const {
    std::vector<std::string> k = {"kill_part", "failpoint", "kill_redis", "stop_postgres"};
    if (mock_ != nullptr) {
      for (const char* b : {"broker_down", "produce_errors", "fetch_errors"}) k.push_back(b);
    }
    return k;
  }
  // Notes the pids of everything the run started, as they are now.
  void note_pids() {
    const json ready = read_json(data_ / "up.json");
    const json parts = ready.value("parts", json::object());
    std::lock_guard lock(mu_);
    for (const auto& [name, pid] : parts.items()) {
      if (pid.is_number()) pids_.insert(pid.get<pid_t>());
    }
    if (const pid_t p = postmaster_pid(data_ / "pg"); p > 0) pids_.insert(p);
    for (const char* url : {"redis_url", "cache_redis_url"}) {
      if (const pid_t p = redis_pid(ready.value(url, "")); p > 0) pids_.insert(p);
    }
  }

 private:
  // Waits `d` or until stop(); false when stopping or past the end of the writes.
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, d, [&] { return stopping_; });
    return !stopping_ && mono_now_ns() < until_ns_;
  }
  // Records a fault injected just now; for a killed relay or worker, also watches its restart.
  void record(Fault f) {
    std::fprintf(stderr, "\nchaos: %s %s %s\n", f.kind.c_str(), f.target.c_str(), f.detail.c_str());
    const char* metric = f.target == "relay"                 ? "hashinsight_relay_events_total"
                         : f.target.rfind("worker-", 0) == 0 ? "hashinsight_consumer_applied_total"
                                                             : nullptr;
    const json urls = read_json(data_ / "up.json").value("metrics_urls", json::object());
    const std::string url = urls.value(f.target, "");
    std::lock_guard lock(mu_);
    const std::size_t index = faults_.size();
    const std::int64_t killed_ns = f.at_ns;
    faults_.push_back(std::move(f));
    if (metric == nullptr || url.empty()) return;
    watchers_.emplace_back([this, index, killed_ns, url, metric] {
      auto u = http::parse_url(url);
      if (!u) return;
      http::ClientRequest req;
      req.url = *u;
      req.timeout = std::chrono::seconds(1);
      while (mono_now_ns() - killed_ns < 120 * kNsPerS) {
        {
          std::lock_guard lock(mu_);
          if (stopping_) return;
        }
        auto r = http::fetch(req);
        if (r && r->status == 200 && metric_sum(r->body, metric) > 0) {
          std::lock_guard lock(mu_);
          faults_[index].restart_ms = static_cast<double>(mono_now_ns() - killed_ns) / kNsPerMs;
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  // The kinds in a shuffled first round (each once), then drawn at random from `repeatable`.
  static std::string next_kind(std::vector<std::string>& first_round,
                               const std::vector<std::string>& repeatable, std::mt19937_64& rng) {
    if (!first_round.empty()) {
      std::string k = first_round.back();
      first_round.pop_back();
      return k;
    }
    return repeatable[std::uniform_int_distribution<std::size_t>(0, repeatable.size() - 1)(rng)];
  }

  void processes(std::mt19937_64 rng) {
    std::vector<std::string> first = {"kill_part", "failpoint", "kill_redis", "stop_postgres"};
    std::shuffle(first.begin(), first.end(), rng);
    const std::vector<std::string> repeatable = {"kill_part", "failpoint", "kill_redis"};
    std::uniform_int_distribution<int> interval_ms(2000, 10000);
    while (pause(std::chrono::milliseconds(interval_ms(rng)))) {
      note_pids();
      const std::string kind = next_kind(first, repeatable, rng);
      const json ready = read_json(data_ / "up.json");
      std::vector<std::pair<std::string, pid_t>> parts;
      const json listed = ready.value("parts", json::object());
      for (const auto& [name, pid] : listed.items()) {
        if (pid.is_number() && pid.get<pid_t>() > 0) parts.emplace_back(name, pid.get<pid_t>());
      }
      Fault f;
      f.kind = kind;
      if (kind == "kill_part" && !parts.empty()) {
        const auto& [name, pid] =
            parts[std::uniform_int_distribution<std::size_t>(0, parts.size() - 1)(rng)];
        f.target = name;
        f.detail = "pid " + std::to_string(pid);
        f.at_ns = mono_now_ns();
        ::kill(pid, SIGKILL);
        record(f);
      } else if (kind == "failpoint") {
        std::erase_if(parts, [](const auto& p) { return failpoints_of(p.first).empty(); });
        if (parts.empty()) continue;
        const auto& [name, pid] =
            parts[std::uniform_int_distribution<std::size_t>(0, parts.size() - 1)(rng)];
        const auto points = failpoints_of(name);
        const std::string point =
            points[std::uniform_int_distribution<std::size_t>(0, points.size() - 1)(rng)];
        const bool crash = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
        const int pass = std::uniform_int_distribution<int>(1, 5)(rng);
        const std::string action =
            crash ? "crash"
                  : "sleep(" + std::to_string(std::uniform_int_distribution<int>(200, 2000)(rng)) +
                        ")";
        const std::string spec = point + "=" + std::to_string(pass) + "*" + action;
        arm_and_kill(name, pid, spec, crash ? point : "", f);
      } else if (kind == "kill_redis") {
        const pid_t pid = redis_pid(ready.value("redis_url", ""));
        if (pid <= 0) continue;
        f.target = "redis";
        f.detail = "pid " + std::to_string(pid) + " (the bus, AOF on)";
        f.at_ns = mono_now_ns();
        ::kill(pid, SIGKILL);
        record(f);
      } else if (kind == "stop_postgres") {
        const pid_t pid = postmaster_pid(data_ / "pg");
        if (pid <= 0) continue;
        f.target = "postgres";
        f.detail = "pid " + std::to_string(pid) + " (immediate shutdown)";
        f.at_ns = mono_now_ns();
        ::kill(pid, SIGQUIT);
        record(f);
      }
    }
  }

  // Arms `spec` in `part` through DIR/failpoints/<part>, kills it, and removes the file once
  // the restarted part says it armed it (else the part would arm it at every restart).
  void arm_and_kill(const std::string& part, pid_t pid, const std::string& spec,
                    const std::string& crash_point, Fault& f) {
    const fs::path log = data_ / "logs" / (part + ".log");
    const std::size_t armed_before = count_of(read_file(log), "failpoints armed");
    std::error_code ec;
    fs::create_directories(data_ / "failpoints", ec);
    const fs::path file = data_ / "failpoints" / part;
    {
      std::ofstream out(file);
      out << spec << "\n";
    }
    f.target = part;
    f.detail = spec;
    f.crash_point = crash_point;
    f.at_ns = mono_now_ns();
    ::kill(pid, SIGKILL);
    record(f);
    const std::int64_t deadline = mono_now_ns() + 30 * kNsPerS;
    while (count_of(read_file(log), "failpoints armed") <= armed_before &&
           mono_now_ns() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    fs::remove(file, ec);
  }

  void brokers(std::mt19937_64 rng) {
    std::vector<std::string> first = {"broker_down", "produce_errors", "fetch_errors"};
    std::shuffle(first.begin(), first.end(), rng);
    const std::vector<std::string> repeatable = first;
    std::uniform_int_distribution<int> interval_ms(2000, 10000);
    while (pause(std::chrono::milliseconds(interval_ms(rng)))) {
      const std::string kind = next_kind(first, repeatable, rng);
      Fault f;
      f.kind = kind;
      f.at_ns = mono_now_ns();
      if (kind == "broker_down") {
        const int broker = std::uniform_int_distribution<int>(1, mock_->brokers())(rng);
        const int down_ms = std::uniform_int_distribution<int>(1000, 5000)(rng);
        f.target = "broker " + std::to_string(broker);
        f.detail = std::to_string(down_ms) + " ms down";
        mock_->set_broker_down(broker);
        record(f);
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(down_ms), [&] { return stopping_; });
        lock.unlock();
        mock_->set_broker_up(broker);
      } else {
        const int count = std::uniform_int_distribution<int>(1, 10)(rng);
        f.target = kind == "produce_errors" ? "produce" : "fetch";
        f.detail = std::to_string(count) + " x NOT_LEADER_OR_FOLLOWER";
        if (kind == "produce_errors") {
          mock_->push_produce_errors(count, bus::kafka_error::kNotLeaderOrFollower);
        } else {
          mock_->push_request_errors(bus::kafka_api::kFetch, count,
                                     bus::kafka_error::kNotLeaderOrFollower);
        }
        record(f);
      }
    }
  }

  // The poisoned events, spread over the run, each written (PostgreSQL may be down) until it is.
  void poison() {
    const std::string url = read_json(data_ / "up.json").value("database_url", "");
    const std::int64_t start = mono_now_ns();
    const std::int64_t span = until_ns_ - start;
    for (int k = 0; k < o_.poison; ++k) {
      const std::int64_t due = start + span * (k + 1) / (o_.poison + 1);
      while (mono_now_ns() < due) {
        if (!pause(std::chrono::milliseconds(100))) break;
      }
      schema::NewEvent e;
      e.tenant_id = "1";
      e.user_id = "poison-" + std::to_string(k);  // not a user id: every handler refuses it
      e.kind = "miner.added";
      e.payload = R"({"poison":true})";
      for (int attempt = 0; attempt < 600; ++attempt) {
        auto c = pg::Connection::connect(url);
        if (c) {
          if (auto r = schema::append_event(*c, e)) {
            std::lock_guard lock(mu_);
            poison_ids_.push_back(r->id);
            break;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }

  const ChaosOptions& o_;
  const fs::path data_;
  bus::MockCluster* mock_;
  std::int64_t until_ns_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<Fault> faults_;
  std::set<pid_t> pids_;
  std::vector<std::string> poison_ids_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> watchers_;  // guarded by mu_
};

// Every event id on `topics`, read from the start by a consumer group of its own.
Result<std::set<std::string>> bus_ids(const bus::BusOptions& options,
                                      const std::vector<std::string>& topics) {
  bus::ConsumerOptions c;
  c.group = "chaos-audit";
  c.consumer_name = "chaos-audit";
  c.topics = topics;
  auto consumer = bus::make_consumer(options, c);
  if (!consumer) return consumer.error();
  std::set<std::string> ids;
  Progress progress("chaos: reading the bus");
  // Until 3 s pass without a message (a Kafka group needs a few seconds to join first).
  std::int64_t quiet_since = mono_now_ns();
  const std::int64_t deadline = quiet_since + 120 * kNsPerS;
  while (mono_now_ns() < deadline) {
    auto batch = (*consumer)->poll(1000, std::chrono::milliseconds(500));
    if (!batch) return batch.error();
    if (batch->empty()) {
      const std::int64_t quiet = ids.empty() ? 15 * kNsPerS : 3 * kNsPerS;
      if (mono_now_ns() - quiet_since > quiet) break;
      continue;
    }
    quiet_since = mono_now_ns();
    for (const auto& d : *batch) {
      for (const auto& [name, value] : d.headers) {
        if (name == "id") ids.insert(value);
      }
    }
    progress.update(static_cast<double>(ids.size()), 0);
  }
  progress.finish();
  return ids;
}

struct Check {
  bool ok = false;
  std::int64_t count = 0;
  std::string detail;
};

class Checks {
 public:
  void set(const std::string& name, Check c) { checks_[name] = std::move(c); }
  bool ok() const {
    return std::all_of(checks_.begin(), checks_.end(), [](const auto& c) { return c.second.ok; });
  }
  ordered_json to_json() const {
    ordered_json out = ordered_json::object();
    for (const auto& [name, c] : checks_) {
      out[name] = {{"ok", c.ok}, {"count", c.count}, {"detail", c.detail}};
    }
    return out;
  }
  void print() const {
    for (const auto& [name, c] : checks_) {
      std::fprintf(stderr, "chaos: %-4s %-26s %8lld  %s\n", c.ok ? "ok" : "FAIL", name.c_str(),
                   static_cast<long long>(c.count), c.detail.c_str());
    }
  }

 private:
  std::map<std::string, Check> checks_;
};

std::string num(std::int64_t v) { return std::to_string(v); }

// The database-side invariants. They may still be converging when first checked (a poison
// event between its attempts, a worker catching up): the caller checks again, for up to 60 s.
void check_database(pg::Connection& db, const PageLoadResult& load, std::int64_t baseline_id,
                    const std::vector<std::string>& poison, int users, Checks& checks) {
  const std::string poison_ids = pg::array_literal(poison);
  // 1. Every acknowledged write is one user_miners row.
  {
    std::vector<std::int64_t> acked;
    std::int64_t unanswered = 0;
    for (const auto& w : load.records) {
      if (w.miner_id > 0) {
        acked.push_back(w.miner_id);
      } else {
        ++unanswered;
      }
    }
    std::set<std::int64_t> distinct(acked.begin(), acked.end());
    auto r = db.exec(
        "SELECT count(*), count(*) FILTER (WHERE id = ANY($2::bigint[])) FROM user_miners "
        "WHERE user_id >= $3::bigint AND id > $1::bigint",
        {num(baseline_id), pg::array_literal(distinct), num(kFirstBenchUser)});
    Check c;
    if (!r) {
      c.detail = r.error().message;
    } else {
      const std::int64_t rows = r->int64(0, 0), matched = r->int64(0, 1);
      c.count = static_cast<std::int64_t>(acked.size());
      c.ok = unanswered == 0 && distinct.size() == acked.size() &&
             rows == static_cast<std::int64_t>(acked.size()) && matched == rows;
      c.detail = num(static_cast<std::int64_t>(acked.size())) + " keys answered 201, " +
                 num(unanswered) + " never; " + num(static_cast<std::int64_t>(distinct.size())) +
                 " distinct rows answered, " + num(rows) + " rows written, " + num(matched) +
                 " of them answered";
    }
    checks.set("acknowledged_writes_once", c);
  }
  // 2. Per consumer group: its inbox is exactly the events of its topics (poison excluded).
  for (const auto& g : groups()) {
    auto r = db.exec(
        "WITH expected AS (SELECT id FROM event_outbox WHERE 'events.' || split_part(kind, '.', "
        "1) = ANY($2::text[]) AND NOT (id = ANY($3::text[]))), "
        "got AS (SELECT event_id AS id FROM consumer_inbox WHERE consumer_name = $1) "
        "SELECT (SELECT count(*) FROM expected), (SELECT count(*) FROM got), "
        "(SELECT count(*) FROM expected e WHERE NOT EXISTS (SELECT 1 FROM got g WHERE g.id = "
        "e.id)), (SELECT count(*) FROM got g WHERE NOT EXISTS (SELECT 1 FROM expected e WHERE "
        "e.id = g.id))",
        {g.name, pg::array_literal(g.topics), poison_ids});
    Check c;
    if (!r) {
      c.detail = r.error().message;
    } else {
      c.count = r->int64(0, 1);
      c.ok = r->int64(0, 2) == 0 && r->int64(0, 3) == 0;
      c.detail = num(r->int64(0, 0)) + " events subscribed, " + num(r->int64(0, 1)) +
                 " inbox rows, " + num(r->int64(0, 2)) + " missing, " + num(r->int64(0, 3)) +
                 " not subscribed (poison included)";
    }
    checks.set(std::string("inbox_equals_events:") + g.name, c);
  }
  // 3. The portfolio worker applied each event's effect once.
  {
    auto r = db.exec(
        "SELECT (SELECT coalesce(sum(events_applied), 0) FROM user_portfolio), "
        "(SELECT count(*) FROM consumer_inbox WHERE consumer_name = $1)",
        {consume::kPortfolioGroup});
    Check c;
    if (!r) {
      c.detail = r.error().message;
    } else {
      c.count = r->int64(0, 1);
      c.ok = r->int64(0, 0) == r->int64(0, 1);
      c.detail =
          "sum(events_applied) " + num(r->int64(0, 0)) + ", inbox rows " + num(r->int64(0, 1));
    }
    checks.set("events_applied_equals_inbox", c);
  }
  // 4. Every user's portfolio is what its miners add up to (units, TH/s, kW), recomputed here.
  {
    auto r = db.exec(
        "WITH m AS (SELECT um.tenant_id, um.user_id, sum(um.quantity) AS units, "
        "sum(um.quantity * mm.hashrate_ths)::float8 AS ths, "
        "(sum(um.quantity * mm.power_w) / 1000)::float8 AS kw FROM user_miners um "
        "JOIN miner_models mm ON mm.id = um.model_id WHERE um.status = 'active' AND um.user_id "
        ">= $1::bigint GROUP BY 1, 2) "
        "SELECT count(*), count(*) FILTER (WHERE p.user_id IS NULL OR p.units <> m.units OR "
        "abs(p.hashrate_ths - m.ths) > 1e-6 * greatest(1, m.ths) OR abs(p.power_kw - m.kw) > "
        "1e-6 * greatest(1, m.kw)) FROM m LEFT JOIN user_portfolio p USING (tenant_id, user_id)",
        {num(kFirstBenchUser)});
    Check c;
    if (!r) {
      c.detail = r.error().message;
    } else {
      c.count = r->int64(0, 0);
      c.ok = r->int64(0, 1) == 0 && r->int64(0, 0) == users;
      c.detail = num(r->int64(0, 0)) + " users recomputed from user_miners, " +
                 num(r->int64(0, 1)) + " differ";
    }
    checks.set("portfolio_equals_recalculation", c);
  }
  // 5. The dead-letter queue holds the poisoned events, parked by every group that reads them.
  {
    auto r = db.exec(
        "SELECT count(DISTINCT event_id), count(DISTINCT event_id) FILTER (WHERE event_id = "
        "ANY($1::text[])), count(DISTINCT (event_id, consumer_name)) FILTER (WHERE event_id = "
        "ANY($1::text[])) FROM event_dlq",
        {poison_ids});
    Check c;
    if (!r) {
      c.detail = r.error().message;
    } else {
      const auto k = static_cast<std::int64_t>(poison.size());
      c.count = r->int64(0, 0);
      c.ok = r->int64(0, 0) == k && r->int64(0, 1) == k &&
             r->int64(0, 2) == k * static_cast<std::int64_t>(groups().size());
      c.detail = num(r->int64(0, 0)) + " events parked, " + num(r->int64(0, 1)) + " of the " +
                 num(k) + " poisoned, " + num(r->int64(0, 2)) + " (event, group) pairs of " +
                 num(k * static_cast<std::int64_t>(groups().size()));
    }
    checks.set("dlq_holds_exactly_the_poison", c);
  }
}

int run_chaos(ChaosOptions opt) {
  if (opt.seed == 0) opt.seed = std::random_device{}() | 1;
  std::fprintf(stderr, "chaos: seed %llu, %d s at %.0f writes/s on %s\n",
               static_cast<unsigned long long>(opt.seed), opt.duration_s, opt.rate,
               opt.bus.c_str());
  std::vector<std::string> env = {
      "BUS=" + opt.bus,
      "STREAM_RETENTION_HOURS=87600",  // keep every entry: the bus is audited afterwards
      "OUTBOX_RETENTION_HOURS=0",
  };
  std::unique_ptr<bus::MockCluster> mock;
  if (opt.bus == "kafka") {
    // Two limits of librdkafka's mock cluster (its rdkafka_mock.c), not of Kafka, would fail the
    // audit: a partition keeps only its last 5 MB (older message sets are dropped), so the
    // partitions are enough for the run's events to stay under it (about 2,500 per partition);
    // and a Produce checks the producer id but not the sequence, so when an injected error fails
    // one request while a later one to the same partition succeeds, the idempotent producer
    // takes the failed batch as written (a broker would refuse the later one as out of order):
    // the relay keeps one request in flight per connection against it.
    const int partitions = std::clamp(
        static_cast<int>(opt.rate * static_cast<double>(opt.duration_s) / 2500) + 1, 6, 64);
    auto m = bus::MockCluster::start_with_topics(3, bus::standard_topics(), partitions, 3);
    if (!m) fail(kExitFailure, "chaos: kafka mock cluster: " + m.error().message);
    mock = std::move(*m);
    env.push_back("KAFKA_BROKERS=" + mock->bootstrap());
    env.push_back("KAFKA_PARTITIONS=" + std::to_string(partitions));
    env.push_back("KAFKA_REPLICATION_FACTOR=3");
    env.push_back("KAFKA_CONSUMER_PROPERTIES=fetch.wait.max.ms=5");
    env.push_back("KAFKA_PRODUCER_PROPERTIES=max.in.flight.requests.per.connection=1");
  }
  auto [stack, owner] = start_page_load_stack("chaos", env, opt.users);
  const fs::path data = fs::path(stack->dir()) / "data";
  auto baseline = owner.exec("SELECT coalesce(max(id), 0) FROM user_miners");
  if (!baseline) fail(kExitFailure, "chaos: " + baseline.error().message);
  const std::int64_t baseline_id = baseline->int64(0, 0);
  owner = pg::Connection();  // PostgreSQL is stopped during the run

  Injector injector(opt, *stack, mock.get());
  injector.note_pids();
  PageLoadOptions load;
  load.api_url = stack->api_url();
  load.jwt_secret = stack->jwt_secret();
  load.users = opt.users;
  load.rate = opt.rate;
  load.writes = static_cast<std::int64_t>(std::llround(opt.rate * opt.duration_s));
  load.drain = std::chrono::seconds(60);
  load.retry_writes = true;
  load.key_prefix = "chaos-" + std::to_string(opt.seed);
  load.label = "chaos";
  // The faults start with the writes (run_page_load schedules the first 200 ms after opening
  // the pages) and end with them.
  const std::int64_t writes_end =
      mono_now_ns() + static_cast<std::int64_t>(opt.duration_s) * kNsPerS;
  injector.start(writes_end);
  auto r = run_page_load(load);
  injector.stop();
  injector.note_pids();
  if (!r) {
    stack->keep();
    fail(kExitFailure, "chaos: " + r.error().message + " (kept " + data.string() + ")");
  }
  const std::vector<Fault> faults = injector.faults();
  const std::vector<std::string> poison = injector.poison_ids();

  Checks checks;
  // The pages: every write visible, and each page's last push at its user's last seq.
  auto db = pg::Connection::connect(stack->database_url());
  if (!db) {
    stack->keep();
    fail(kExitFailure, "chaos: " + db.error().message + " (kept " + data.string() + ")");
  }
  {
    std::vector<std::string> ids;
    for (int u = 0; u < opt.users; ++u) ids.push_back(num(kFirstBenchUser + u));
    auto last = db->exec(
        "SELECT user_id, max(seq) FROM event_outbox WHERE user_id = ANY($1::text[]) GROUP BY 1",
        {pg::array_literal(ids)});
    Check c;
    if (!last) {
      c.detail = last.error().message;
    } else {
      std::map<std::int64_t, std::int64_t> last_seq;
      for (int i = 0; i < last->rows(); ++i) {
        last_seq[std::strtoll(std::string(last->text(i, 0)).c_str(), nullptr, 10)] =
            last->int64(i, 1);
      }
      std::int64_t at_last = 0;
      for (int u = 0; u < opt.users; ++u) {
        at_last += r->shown[static_cast<std::size_t>(u)] == last_seq[kFirstBenchUser + u];
      }
      c.count = at_last;
      c.ok = at_last == opt.users && r->lost == 0;
      c.detail = num(at_last) + " of " + num(opt.users) +
                 " pages ended at their user's last seq; " + num(r->lost) +
                 " acknowledged writes never shown";
    }
    checks.set("pages_end_at_last_seq", c);
  }
  // The faults: every kind, crash failpoints that landed, writes accepted meanwhile.
  {
    std::set<std::string> injected;
    std::int64_t crashes_armed = 0, crashes_landed = 0;
    std::map<std::string, std::size_t> landed_in_log;
    for (const auto& f : faults) {
      injected.insert(f.kind);
      if (f.crash_point.empty()) continue;
      ++crashes_armed;
      landed_in_log[f.target] = 0;
    }
    for (auto& [part, count] : landed_in_log) {
      count = count_of(read_file(data / "logs" / (part + ".log")), ": crash (exit 137)");
      crashes_landed += static_cast<std::int64_t>(count);
    }
    std::int64_t accepted = 0;
    for (const auto& w : r->records) {
      if (w.answered_ns == 0) continue;
      accepted += std::any_of(faults.begin(), faults.end(), [&](const Fault& f) {
        return w.answered_ns >= f.at_ns && w.answered_ns < f.at_ns + 3 * kNsPerS;
      });
    }
    std::string missing;
    for (const auto& k : injector.kinds()) {
      if (!injected.contains(k)) missing += (missing.empty() ? "" : ", ") + k;
    }
    Check c;
    c.count = static_cast<std::int64_t>(faults.size());
    c.ok = missing.empty() && accepted > 0 && (crashes_armed == 0 || crashes_landed > 0);
    c.detail = num(static_cast<std::int64_t>(injected.size())) + " kinds" +
               (missing.empty() ? "" : " (never: " + missing + ")") + "; " + num(crashes_armed) +
               " crash failpoints armed, " + num(crashes_landed) + " crashes logged; " +
               num(accepted) + " writes accepted within 3 s of a fault";
    checks.set("every_fault_injected", c);
  }
  // The database: converging for at most 60 s (poison is parked after its attempts).
  {
    Progress settling("chaos: checking");
    const std::int64_t deadline = mono_now_ns() + 60 * kNsPerS;
    while (true) {
      check_database(*db, *r, baseline_id, poison, opt.users, checks);
      if (checks.ok() || mono_now_ns() > deadline) break;
      settling.update(0, 0, "waiting for the consumers");
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    settling.finish();
  }
  // The bus: every outbox event on it, nothing else.
  {
    bus::BusOptions b;
    b.kind = opt.bus == "kafka" ? bus::BusKind::kKafka : bus::BusKind::kRedis;
    b.redis_url = stack->ready().value("redis_url", "");
    if (mock) {
      b.kafka_brokers = mock->bootstrap();
      b.kafka_consumer_properties = {{"fetch.wait.max.ms", "5"}};
    }
    std::vector<std::string> topics;
    for (const auto& t : bus::standard_topics()) {
      if (t != "events.dlq") topics.push_back(t);  // parked events are republished there
    }
    auto on_bus = bus_ids(b, topics);
    auto outbox = db->exec("SELECT id FROM event_outbox");
    Check c;
    if (!on_bus || !outbox) {
      c.detail = !on_bus ? on_bus.error().message : outbox.error().message;
    } else {
      std::int64_t missing = 0;
      std::set<std::string> in_outbox;
      for (int i = 0; i < outbox->rows(); ++i) {
        in_outbox.emplace(outbox->text(i, 0));
        missing += !on_bus->contains(std::string(outbox->text(i, 0)));
      }
      std::int64_t extra = 0;
      for (const auto& id : *on_bus) extra += !in_outbox.contains(id);
      c.count = static_cast<std::int64_t>(in_outbox.size());
      c.ok = missing == 0 && extra == 0;
      c.detail = num(static_cast<std::int64_t>(in_outbox.size())) + " outbox events, " +
                 num(static_cast<std::int64_t>(on_bus->size())) + " distinct on the bus, " +
                 num(missing) + " missing, " + num(extra) + " not in the outbox";
    }
    checks.set("outbox_equals_bus", c);
  }
  *db = pg::Connection();

  // Stop everything; nothing of the run may remain.
  injector.note_pids();
  std::set<pid_t> pids = injector.pids_seen();
  pids.insert(stack->up_pid());
  const int up_status = stack->stop();
  {
    std::int64_t left = 0;
    std::string which;
    for (const pid_t p : pids) {
      if (!process_alive(p)) continue;
      ++left;
      which += " " + num(p);
    }
    // And anything else whose command line names the data directory (the servers do).
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
      std::string cmd = read_file(entry.path() / "cmdline");
      std::replace(cmd.begin(), cmd.end(), '\0', ' ');
      const pid_t pid = static_cast<pid_t>(std::stol(name));
      if (cmd.find(data.string()) != std::string::npos && process_alive(pid) &&
          !pids.contains(pid)) {
        ++left;
        which += " " + name;
      }
    }
    Check c;
    c.count = static_cast<std::int64_t>(pids.size());
    c.ok = left == 0;
    c.detail = num(static_cast<std::int64_t>(pids.size())) + " processes seen, " + num(left) +
               " still running" + which + "; up exited with " + num(up_status);
    checks.set("no_process_left", c);
  }

  // Figures: write-to-visible during the chaos, and each fault's recovery (from the fault to
  // the first write sent after it becoming visible).
  std::vector<double> v = r->visible_ms;
  std::map<std::string, std::vector<double>> recovery;
  ordered_json fault_json = ordered_json::array();
  for (const auto& f : faults) {
    double ms = -1;
    for (const auto& w : r->records) {
      if (w.scheduled_ns >= f.at_ns && w.visible_ns > 0) {
        ms = static_cast<double>(w.visible_ns - f.at_ns) / kNsPerMs;
        break;
      }
    }
    if (ms >= 0) recovery[f.kind].push_back(ms);
    if (f.restart_ms >= 0) {
      recovery[f.target == "relay" ? "relay_restart_to_first_event"
                                   : "worker_restart_to_first_commit"]
          .push_back(f.restart_ms);
    }
    fault_json.push_back(
        {{"at_s", round_to(static_cast<double>(f.at_ns - r->start_ns) / kNsPerS, 2)},
         {"kind", f.kind},
         {"target", f.target},
         {"detail", f.detail},
         {"to_first_visible_write_ms",
          ms >= 0 ? ordered_json(round_to(ms, 1)) : ordered_json(nullptr)},
         {"restart_to_progress_ms",
          f.restart_ms >= 0 ? ordered_json(round_to(f.restart_ms, 1)) : ordered_json(nullptr)}});
  }
  ordered_json recovery_json = ordered_json::object();
  for (auto& [kind, values] : recovery) {
    recovery_json[kind] = {{"count", values.size()},
                           {"p50_ms", round_to(quantile(values, 0.5), 1)},
                           {"max_ms", round_to(quantile(values, 1.0), 1)}};
  }
  checks.print();
  const bool ok = checks.ok();
  ordered_json out;
  out["ok"] = ok;
  out["invariants"] = checks.to_json();
  out["faults"] = fault_json;
  out["w2v_p50_ms"] = round_to(quantile(v, 0.50), 1);
  out["w2v_p99_ms"] = round_to(quantile(v, 0.99), 1);
  out["w2v_max_ms"] = round_to(quantile(v, 1.0), 1);
  out["longest_push_gap_ms"] = round_to(r->longest_push_gap_ms, 1);
  out["recovery_ms"] = recovery_json;
  out["bus"] = opt.bus;
  out["rate"] = opt.rate;
  out["duration_s"] = opt.duration_s;
  out["seed"] = opt.seed;
  out["writes"] = r->writes;
  std::int64_t retried = 0;
  for (const auto& w : r->records) retried += w.attempts > 1;
  out["writes_retried"] = retried;
  out["poison"] = opt.poison;
  out["users"] = opt.users;
  if (!ok || opt.keep) {
    stack->keep();
    out["data_dir"] = data.string();
  }
  if (!ok) {
    std::fprintf(stderr, "chaos: FAILED; the data directory and logs are kept in %s\n",
                 data.c_str());
  }
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!opt.json) {
    std::fprintf(stderr,
                 "chaos: %zu faults, %lld writes (%lld retried): write-to-visible p50 %.1f ms, "
                 "p99 %.1f ms, max %.1f ms; longest a page waited %.0f ms\n",
                 faults.size(), static_cast<long long>(r->writes), static_cast<long long>(retried),
                 out["w2v_p50_ms"].get<double>(), out["w2v_p99_ms"].get<double>(),
                 out["w2v_max_ms"].get<double>(), r->longest_push_gap_ms);
  }
  stack.reset();
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

void add_chaos_command(CLI::App& app, Flags& /*flags*/) {
  auto* cmd = app.add_subcommand(
      "chaos", "writes under random kills and broker faults, then every invariant checked");
  auto opt = std::make_shared<ChaosOptions>();
  cmd->add_option("--duration", opt->duration_s, "seconds of writes and faults")
      ->check(CLI::Range(5, 86'400));
  cmd->add_option("--rate", opt->rate, "POST /api/miners per second (open loop)")
      ->check(CLI::Range(1.0, 10'000.0));
  cmd->add_option("--bus", opt->bus, "redis or kafka (kafka: a mock cluster hosted here)")
      ->check(CLI::IsMember({"redis", "kafka"}));
  cmd->add_option("--seed", opt->seed, "seed of the fault schedule (default: random, printed)");
  cmd->add_option("--poison", opt->poison, "events no consumer can apply, to end in the DLQ")
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--users", opt->users, "users, each with an open page")
      ->check(CLI::Range(1, 10'000));
  cmd->add_flag("--keep", opt->keep,
                "keep the data directory and logs even when every check holds");
  cmd->add_flag("--json", opt->json, "print only the JSON line (the checks still go to stderr)");
  cmd->callback([opt] { throw Exit{run_chaos(*opt)}; });
}

}  // namespace hi::cli
