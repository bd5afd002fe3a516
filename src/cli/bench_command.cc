// `hashinsight bench relay`: the relay's catch-up throughput against pg_recvlogical on the same
// WAL, and its commit-to-acknowledgement latency under a steady write rate.
//
// Catch-up: N outbox events are written (in transactions of K rows) while the slots already
// exist, then the relay (a child process, as in production) drains them; the clock runs from
// its start until the slot's confirmed position passes the last transaction. With --baseline,
// pg_recvlogical reads the same WAL through the same publication into /dev/null first.
// Live: one-row transactions at a steady rate for a duration; the latency figures come from the
// relay's own histogram (commit timestamp -> bus acknowledgement).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "bus/kafka_mock.h"
#include "bus/redis_streams.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "core/ids.h"
#include "core/process.h"
#include "core/time.h"
#include "pg/connection.h"
#include "pg/local_server.h"
#include "pg/lsn.h"
#include "redis/client.h"

namespace hi::cli {
namespace {

struct RelayBenchOptions {
  long events = 100000;
  int rows_per_tx = 1;
  bool json = false;
  bool baseline = false;
  bool live = false;
  int rate = 1000;
  double duration_s = 10;
  bool no_durable = false;
};

pg::Lsn current_lsn(pg::Connection& c) {
  auto r = c.exec("SELECT pg_current_wal_insert_lsn()::text");
  return r ? pg::Lsn::parse(r->text(0, 0)).value_or(pg::Lsn{}) : pg::Lsn{};
}

pg::Lsn slot_confirmed(pg::Connection& c, const std::string& slot) {
  auto r = c.exec("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                  {slot});
  if (!r || r->empty() || r->is_null(0, 0)) return {};
  return pg::Lsn::parse(r->text(0, 0)).value_or(pg::Lsn{});
}

// Writes `events` outbox rows in transactions of `per_tx`, pipelined (one round trip per
// few hundred transactions).
Status prefill(pg::Connection& c, long events, int per_tx) {
  Progress progress("prefill");
  const std::string insert =
      "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
      "SELECT gen_random_uuid()::text, 1, 'miner.added', 'bench-' || (g % 1000), "
      "'{\"model_id\":1,\"quantity\":1}', g FROM generate_series($1::bigint, $2::bigint) g";
  long written = 0;
  while (written < events) {
    std::vector<pg::Statement> batch;
    for (int t = 0; t < 300 && written < events; ++t) {
      const long n = std::min<long>(per_tx, events - written);
      batch.push_back({"BEGIN", {}, false});
      batch.push_back({insert, {std::to_string(written + 1), std::to_string(written + n)}, false});
      batch.push_back({"COMMIT", {}, false});
      written += n;
    }
    auto r = c.pipeline(batch);
    if (!r) return r.error().wrap("prefill");
    progress.update(static_cast<double>(written), static_cast<double>(events));
  }
  progress.finish();
  return {};
}

// What the phases of the relay benchmark share.
struct RelayBench {
  const RelayBenchOptions& opt;
  std::string bus;
  std::unique_ptr<BenchStack> stack{};
  std::unique_ptr<bus::MockCluster> mock{};
  std::optional<pg::Connection> conn{};
  std::optional<redis::Client> redis{};
  SpawnOptions relay{};  // the relay as a child process, as in production
  std::string relay_log{};
};

// Fresh servers (or the given ones, emptied), the mock cluster for Kafka without brokers, and
// the slots created before any write so that both readers stream the same WAL.
void set_up(RelayBench& b, const Config& cfg) {
  auto stack = BenchStack::start(cfg, !b.opt.no_durable);
  if (!stack) fail(kExitFailure, "bench: " + stack.error().message);
  b.stack = std::move(*stack);
  auto conn = pg::Connection::connect(b.stack->database_url());
  if (!conn) fail(kExitFailure, conn.error().message);
  b.conn = std::move(*conn);
  (void)b.conn->exec(
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN "
      "('hashinsight_outbox', 'bench_baseline') AND NOT active");
  (void)b.conn->exec("TRUNCATE event_outbox");
  auto redis = redis::Client::connect(b.stack->redis_url());
  if (!redis) fail(kExitFailure, redis.error().message);
  b.redis = std::move(*redis);
  (void)b.redis->command({"FLUSHALL"});

  std::string brokers = cfg.str("KAFKA_BROKERS");
  if (b.bus == "kafka" && brokers.empty()) {
    auto m = bus::MockCluster::start_with_topics(
        3, bus::standard_topics(), static_cast<int>(cfg.integer("KAFKA_PARTITIONS")), 1);
    if (!m) fail(kExitFailure, "kafka mock cluster: " + m.error().message);
    b.mock = std::move(*m);
    brokers = b.mock->bootstrap();
  }
  for (const char* slot : {"hashinsight_outbox", "bench_baseline"}) {
    if (std::string_view(slot) == "bench_baseline" && !b.opt.baseline) continue;
    auto r = b.conn->exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", {slot});
    if (!r) fail(kExitFailure, r.error().message);
  }
  (void)b.conn->exec(
      "INSERT INTO relay_settings (name, value) VALUES ('backfill:hashinsight_outbox', 'done') "
      "ON CONFLICT (name) DO UPDATE SET value = 'done'");

  b.relay.argv = {self_exe(), "relay"};
  b.relay.env = {"DATABASE_URL=" + b.stack->database_url(),
                 "REDIS_URL=" + b.stack->redis_url(),
                 "BUS=" + b.bus,
                 "KAFKA_BROKERS=" + brokers,
                 "LOG_FORMAT=text",
                 "HI_DATA_DIR=/nonexistent"};
  b.relay_log =
      (b.stack->dir().empty() ? std::string("/tmp") : b.stack->dir()) + "/bench-relay.log";
  b.relay.output_path = b.relay_log;
}

double peak_rss_mb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::round(std::stod(line.substr(6)) / 102.4) / 10;
  }
  return -1.0;
}

// User + system CPU time of a process, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(s.substr(s.rfind(')') + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return utime + stime;
}

// pg_recvlogical through the same publication on the same WAL, into /dev/null. It runs second,
// on the WAL the relay just read: its pages are warm, which favours pg_recvlogical, not us.
void baseline(RelayBench& b, pg::Lsn end, nlohmann::ordered_json& out) {
  SpawnOptions base;
  base.argv = {pg::postgres_bindir() + "/pg_recvlogical",
               "-d",
               b.stack->database_url(),
               "--slot",
               "bench_baseline",
               "--start",
               "--endpos",
               end.to_string(),
               "-o",
               "proto_version=1",
               "-o",
               "publication_names=hashinsight_outbox",
               "--no-loop",
               "-f",
               "/dev/null"};
  const std::int64_t t0 = mono_now_ns();
  auto r = run_command(base, std::chrono::minutes(10));
  const double secs = static_cast<double>(mono_now_ns() - t0) / 1e9;
  if (!r || r->status != 0) {
    fail(kExitFailure, "pg_recvlogical failed: " + (r ? r->output : r.error().message));
  }
  out["pg_recvlogical_seconds"] = std::round(secs * 1000) / 1000;
  out["pg_recvlogical_events_per_s"] = std::round(static_cast<double>(b.opt.events) / secs);
  out["vs_pg_recvlogical"] = std::round(out["events_per_s"].get<double>() /
                                        out["pg_recvlogical_events_per_s"].get<double>() * 100) /
                             100;
}

// Pre-fills the outbox, then times the relay from its start until the slot's confirmed
// position passes the last transaction.
void catch_up(RelayBench& b, nlohmann::ordered_json& out) {
  if (auto s = prefill(*b.conn, b.opt.events, b.opt.rows_per_tx); !s) {
    fail(kExitFailure, s.error().message);
  }
  const pg::Lsn end = current_lsn(*b.conn);
  out["events"] = b.opt.events;
  out["rows_per_tx"] = b.opt.rows_per_tx;
  Progress progress("relay");
  const std::int64_t t0 = mono_now_ns();
  auto proc = Process::spawn(b.relay);
  if (!proc) fail(kExitFailure, proc.error().message);
  const pg::Lsn start = slot_confirmed(*b.conn, "hashinsight_outbox");
  for (;;) {
    const pg::Lsn c = slot_confirmed(*b.conn, "hashinsight_outbox");
    if (c >= end) break;
    if (!proc->running()) fail(kExitFailure, "the relay exited; see " + b.relay_log);
    progress.update(static_cast<double>(c.value - std::min(c.value, start.value)),
                    static_cast<double>(end.value - start.value), "WAL bytes confirmed");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double secs = static_cast<double>(mono_now_ns() - t0) / 1e9;
  progress.finish();
  out["seconds"] = std::round(secs * 1000) / 1000;
  out["events_per_s"] = std::round(static_cast<double>(b.opt.events) / secs);
  out["peak_rss_mb"] = peak_rss_mb(proc->pid());
  proc->stop();
  if (b.opt.baseline) baseline(b, end, out);
  if (b.bus == "redis") {
    auto len = b.redis->command({"XLEN", "events.miner"});
    out["delivered"] = len ? len->integer : -1;
  }
}

// The ids of the entries of a Redis stream (their `id` header).
std::set<std::string> stream_ids(redis::Client& redis, const std::string& stream) {
  std::set<std::string> seen;
  std::string from = "-";
  for (;;) {
    auto r = redis.command({"XRANGE", stream, from, "+", "COUNT", "10000"});
    if (!r || r->elements.empty()) break;
    for (const auto& e : r->elements) {
      auto d = bus::delivery_from_entry(stream, e);
      for (const auto& [k, v] : d.headers) {
        if (k == "id") seen.insert(v);
      }
    }
    from = "(" + r->elements.back().elements[0].str;
  }
  return seen;
}

// One-row transactions at a steady rate while the relay streams; the latency figures come from
// the relay's own histogram (commit timestamp -> bus acknowledgement).
void live(RelayBench& b, nlohmann::ordered_json& out) {
  auto proc = Process::spawn(b.relay);
  if (!proc) fail(kExitFailure, proc.error().message);
  for (int i = 0; i < 3000; ++i) {  // until the relay streams (its status hash says so)
    auto r = b.redis->command({"HGET", "hi:status:relay", "streaming"});
    if (r && r->str == "1") break;
    if (!proc->running()) fail(kExitFailure, "the relay exited; see " + b.relay_log);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto writer = pg::Connection::connect(b.stack->database_url());
  if (!writer) fail(kExitFailure, writer.error().message);
  (void)writer->prepare("bench_insert",
                        "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
                        "VALUES ($1, 1, 'miner.added', $2, '{\"model_id\":1}', $3)");
  const long total = static_cast<long>(b.opt.rate * b.opt.duration_s);
  std::set<std::string> ids;
  Progress progress("live");
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < total; ++i) {
    std::this_thread::sleep_until(
        t0 + std::chrono::nanoseconds(static_cast<long>(i * 1e9 / b.opt.rate)));
    const std::string id = uuid_v7();
    auto r = writer->exec_prepared("bench_insert",
                                   {id, "live-" + std::to_string(i % 100), std::to_string(i + 1)});
    if (!r) fail(kExitFailure, r.error().message);
    ids.insert(id);
    progress.update(static_cast<double>(i + 1), static_cast<double>(total), "events written");
  }
  progress.finish();
  // Drain: up to 10 s for the last events, then one more status period.
  std::int64_t acked = 0;
  for (int i = 0; i < 1000 && acked < total; ++i) {
    auto r = b.redis->command({"HGET", "hi:status:relay", "events_acked"});
    acked = r && r->type == redis::Reply::Type::kString ? std::stoll(r->str) : 0;
    if (acked < total) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  long lost = 0;
  if (b.bus == "redis") {
    const std::set<std::string> seen = stream_ids(*b.redis, "events.miner");
    for (const auto& id : ids) lost += seen.contains(id) ? 0 : 1;
  } else {
    lost = std::max<long>(0, total - acked);
  }
  auto metrics = b.redis->command({"GET", "hi:metrics:relay"});
  const std::string text = metrics ? metrics->str : "";
  const char* h = "hashinsight_relay_commit_to_ack_seconds";
  out["rate"] = b.opt.rate;
  out["duration_s"] = b.opt.duration_s;
  out["events"] = total;
  out["commit_to_ack_p50_ms"] =
      std::round(histogram_quantile(histogram_buckets(text, h), 0.50) * 1e6) / 1e3;
  out["commit_to_ack_p99_ms"] =
      std::round(histogram_quantile(histogram_buckets(text, h), 0.99) * 1e6) / 1e3;
  out["lost"] = lost;
  // Idle CPU: the relay's CPU time over 2 s with nothing to do.
  const long before = cpu_ticks(proc->pid());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  out["idle_cpu_percent"] = std::round(static_cast<double>(cpu_ticks(proc->pid()) - before) /
                                       ::sysconf(_SC_CLK_TCK) / 2.0 * 1000) /
                            10;
  proc->stop();
}

int run_relay_bench(const Config& cfg, const RelayBenchOptions& opt) {
  RelayBench b{.opt = opt, .bus = cfg.str("BUS")};
  set_up(b, cfg);
  nlohmann::ordered_json out;
  out["bus"] = b.bus;
  out["durable"] = b.stack->durable();
  if (opt.live) {
    live(b, out);
  } else {
    catch_up(b, out);
  }
  std::printf("%s\n", out.dump().c_str());
  return kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& app, Flags& flags) {
  auto* bench = app.add_subcommand("bench", "benchmarks (one JSON line on stdout)");
  bench->require_subcommand(1);
  auto* relay = bench->add_subcommand("relay", "relay catch-up throughput or live latency");
  auto opt = std::make_shared<RelayBenchOptions>();
  relay->add_option("--events", opt->events, "outbox events to pre-fill")
      ->check(CLI::Range(1L, 100'000'000L));
  relay->add_option("--rows-per-tx", opt->rows_per_tx, "events per transaction")
      ->check(CLI::Range(1, 1'000'000));
  relay->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; }, "redis or kafka");
  relay->add_flag("--json", opt->json, "print the result as JSON (always one line)");
  relay->add_flag("--baseline", opt->baseline, "also time pg_recvlogical on the same WAL");
  relay->add_flag("--live", opt->live, "steady one-row transactions instead of a pre-fill");
  relay->add_flag("--no-durable", opt->no_durable,
                  "private servers without fsync (PostgreSQL fsync off, Redis appendfsync no)");
  relay->add_option("--rate", opt->rate, "events per second with --live")
      ->check(CLI::Range(1, 1'000'000));
  relay->add_option("--duration", opt->duration_s, "seconds with --live")
      ->check(CLI::Range(0.1, 86400.0));
  relay->callback([&flags, opt] { throw Exit{run_relay_bench(load_config(flags), *opt)}; });
  add_bench_consume(*bench, flags);
  add_bench_api(*bench, flags);
  add_bench_sse(*bench, flags);
  add_bench_e2e(*bench, flags);
  add_bench_snapshot(*bench, flags);
  add_bench_sink(*bench, flags);
}

}  // namespace hi::cli
