// `hashinsight bench sink --rows N --destination postgres|clickhouse [--batch B] --json`: how fast
// a sink (sinks/sink.h) applies a backlog of captured changes to a destination, masking on.
//
// The relay (a child process, as in production) first puts N inserts of a captured table on the
// bus and is stopped; then the sink runs in this process, and the clock runs from its start
// until it has applied the N-th row. The destination's row count is checked against N after.
// PostgreSQL: a second database of the bench's cluster; ClickHouse: a private clickhouse-server.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cdc/slot.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "core/metrics.h"
#include "core/process.h"
#include "core/time.h"
#include "http/client.h"
#include "pg/connection.h"
#include "redis/client.h"
#include "sinks/config.h"
#include "sinks/local_clickhouse.h"
#include "sinks/masking.h"
#include "sinks/sink.h"

namespace hi::cli {
namespace {

constexpr const char* kTable = "public.bench_sink";
constexpr const char* kStream = "cdc.public.bench_sink";
constexpr const char* kDestDatabase = "bench_sink_dest";
// Longest wait without progress (bus fill, sink) before the bench gives up.
constexpr std::int64_t kStallNs = 120'000'000'000;

struct SinkBenchOptions {
  long rows = 200'000;
  std::string destination = "postgres";
  int batch = 0;  // 0: sinks::default_batch_size() of the destination
  bool json = false;
  bool no_durable = false;
};

[[noreturn]] void bench_fail(const std::string& what) { fail(kExitFailure, "bench sink: " + what); }

// The run's own directory (sinks.yaml, masking keys, ClickHouse's data), removed after, also when
// DATABASE_URL / REDIS_URL leave the stack without a directory.
class WorkDir {
 public:
  WorkDir() {
    char tmpl[] = "/tmp/hashinsight-bench-sink-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) bench_fail("cannot create a temporary directory");
    ::chmod(tmpl, 0755);
    path_ = tmpl;
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  ~WorkDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `url` (postgresql://.../db?query) naming `database` instead.
std::string with_database(const std::string& url, const std::string& database) {
  const auto q = url.find('?');
  const std::string query = q == std::string::npos ? "" : url.substr(q);
  const std::string base = url.substr(0, q);
  const auto scheme = base.find("://");
  const auto slash = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (scheme == std::string::npos) bench_fail("DATABASE_URL must be a postgresql:// URL");
  return (slash == std::string::npos ? base : base.substr(0, slash)) + "/" + database + query;
}

Result<std::string> clickhouse_query(const std::string& server_url, const std::string& sql) {
  auto url = http::parse_url(server_url + "/");
  if (!url) return url.error();
  http::ClientRequest req;
  req.method = "POST";
  req.url = *url;
  req.body = sql;
  req.timeout = std::chrono::seconds(30);
  auto r = http::fetch(req);
  if (!r) return r.error();
  if (r->status != 200) return internal_error("clickhouse: " + r->body);
  return r->body;
}

// Captures the source table and puts `rows` inserts of it on the bus through the relay, which
// is stopped once the stream holds them all.
void fill_bus(BenchStack& stack, pg::Connection& owner, long rows) {
  (void)owner.exec(
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = "
      "'hashinsight_outbox' AND NOT active");
  (void)owner.exec("DELETE FROM relay_settings WHERE name = 'backfill:hashinsight_outbox'");
  // A customer-like row: a key, three personal columns to mask, a decimal, a count, a time and a
  // free-text note.
  if (auto s = owner.exec_script(
          "DROP TABLE IF EXISTS bench_sink; CREATE TABLE bench_sink (id bigint PRIMARY KEY, "
          "email text, card text, name text, amount numeric(12, 2), qty int, created_at "
          "timestamptz, note text); ALTER TABLE bench_sink REPLICA IDENTITY FULL");
      !s) {
    bench_fail(s.error().message);
  }
  if (auto s = cdc::set_capture_tables(owner, "hashinsight_outbox", {kTable}); !s) {
    bench_fail(s.error().message);
  }
  auto redis = redis::Client::connect(stack.redis_url());
  if (!redis) bench_fail(redis.error().message);
  (void)redis->command({"DEL", kStream});  // with it, a previous run's consumer group

  SpawnOptions relay;
  relay.argv = {self_exe(), "relay"};
  relay.env = {"DATABASE_URL=" + stack.database_url(),
               "REDIS_URL=" + stack.redis_url(),
               "BUS=redis",
               "RELAY_CAPTURE_TABLES=" + std::string(kTable),
               "LOG_FORMAT=text",
               "HI_DATA_DIR=/nonexistent"};
  const std::string log =
      (stack.dir().empty() ? std::string("/tmp") : stack.dir()) + "/bench-sink-relay.log";
  relay.output_path = log;
  auto proc = Process::spawn(relay);
  if (!proc) bench_fail(proc.error().message);
  for (int i = 0;; ++i) {  // until the relay streams (its status hash says so)
    auto r = redis->command({"HGET", "hi:status:relay", "streaming"});
    if (r && r->str == "1") break;
    if (!proc->running() || i > 3000) bench_fail("the relay did not start; see " + log);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  Progress write("insert");
  for (long done = 0; done < rows;) {
    const long n = std::min<long>(100000, rows - done);
    auto r = owner.exec(
        "INSERT INTO bench_sink SELECT g, 'user' || g || '@example' || (g % 7) || '.org', "
        "'4111' || lpad(g::text, 12, '0'), 'Name ' || g, (g % 1000000) / 100.0, (g % 50)::int, "
        "now() - g * interval '1 second', 'note ' || g "
        "FROM generate_series($1::bigint, $2::bigint) g",
        {std::to_string(done + 1), std::to_string(done + n)});
    if (!r) bench_fail(r.error().message);
    done += n;
    write.update(static_cast<double>(done), static_cast<double>(rows), "rows committed");
  }
  write.finish();

  Progress bus("bus");
  std::int64_t last = -1;
  std::int64_t last_change_ns = mono_now_ns();
  for (;;) {
    auto len = redis->command({"XLEN", kStream});
    const std::int64_t n = len ? len->integer : 0;
    bus.update(static_cast<double>(n), static_cast<double>(rows),
               "changes on " + std::string(kStream));
    if (n >= rows) break;
    if (n != last) {
      last = n;
      last_change_ns = mono_now_ns();
    }
    if (!proc->running()) bench_fail("the relay stopped; see " + log);
    if (mono_now_ns() - last_change_ns > kStallNs) {
      bench_fail("the bus holds " + std::to_string(n) + " of " + std::to_string(rows) +
                 " changes and no more come; see " + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bus.finish();
  proc->stop();  // the sink runs alone
}

// The sinks file of the run: one destination, the table masked as a customer table would be.
sinks::DestinationSpec write_sinks_config(const std::string& path, const std::string& name,
                                          const std::string& type, const std::string& url) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << "destinations:\n"
        << "  - name: " << name << "\n"
        << "    type: " << type << "\n"
        << "    url: " << nlohmann::json(url).dump() << "\n"
        << "    tables:\n"
        << "      - source: " << kTable << "\n"
        << "        columns:\n"
        << "          email: {mask: email-domain, pii: true}\n"
        << "          card: {mask: partial, keep_last: 4, pii: true}\n"
        << "          name: {mask: hmac-sha256, pii: true}\n"
        << "          note: {mask: sha256}\n";
    if (!out) bench_fail("cannot write " + path);
  }
  auto config = sinks::load_sinks_config(path);
  if (!config) bench_fail(config.error().message);
  const sinks::DestinationSpec* dest = config->destination(name);
  if (dest == nullptr) bench_fail("no destination " + name + " in " + path);
  return *dest;
}

int run_sink_bench(const Config& cfg, const SinkBenchOptions& opt) {
  WorkDir work;
  auto stack = BenchStack::start(cfg, !opt.no_durable);
  if (!stack) bench_fail(stack.error().message);
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) bench_fail(owner.error().message);
  // The in-process sink logs at info what the bench's progress already says.
  if (log_level() == LogLevel::kInfo) set_log_level(LogLevel::kWarn);

  // The destination first: a missing clickhouse-server fails before any work.
  Logger log("bench");
  std::unique_ptr<sinks::LocalClickHouse> clickhouse;
  std::string dest_url;
  if (opt.destination == "clickhouse") {
    sinks::LocalClickHouseOptions where;
    where.data_dir = work.path() + "/clickhouse";
    auto ch = sinks::LocalClickHouse::start(where, log);
    if (!ch) bench_fail("clickhouse destination: " + ch.error().message);
    clickhouse = std::move(*ch);
    dest_url = clickhouse->url() + "/" + kDestDatabase;
  } else {
    (void)owner->exec(std::string("DROP DATABASE IF EXISTS ") + kDestDatabase + " WITH (FORCE)");
    if (auto r = owner->exec(std::string("CREATE DATABASE ") + kDestDatabase); !r) {
      bench_fail("postgres destination: " + r.error().message);
    }
    dest_url = with_database((*stack)->database_url(), kDestDatabase);
  }

  fill_bus(**stack, *owner, opt.rows);

  const std::string name = "bench-" + opt.destination;
  auto keys = sinks::load_masking_keys(work.path() + "/secrets", true);
  if (!keys) bench_fail("masking keys: " + keys.error().message);
  sinks::SinkOptions so;
  so.destination = write_sinks_config(work.path() + "/sinks.yaml", name, opt.destination, dest_url);
  so.bus.kind = bus::BusKind::kRedis;
  so.bus.redis_url = (*stack)->redis_url();
  so.consumer_name = sinks::sink_group(name) + "-" + std::to_string(::getpid());
  so.bus.client_id = so.consumer_name;
  so.keys = std::move(*keys);
  so.source_database_url = (*stack)->database_url();  // the table's key and types
  const std::size_t batch = opt.batch > 0 ? static_cast<std::size_t>(opt.batch)
                                          : sinks::default_batch_size(so.destination.type);
  so.batch_size = batch;
  so.poll_timeout = std::chrono::milliseconds(100);
  so.request_snapshots = false;  // the rows are on the bus already

  Metrics metrics;
  sinks::Sink sink(std::move(so), metrics, Logger("sink"));
  Status result;
  std::atomic<bool> returned{false};
  const auto target = static_cast<std::uint64_t>(opt.rows);
  Progress progress("sink " + opt.destination);
  const std::int64_t t0 = mono_now_ns();
  const CpuTimes cpu_before = cpu_times();
  CpuTimes cpu_after;
  std::int64_t first_ns = 0;
  std::int64_t last_ns = 0;
  {
    std::jthread runner([&](std::stop_token stop) {
      result = sink.run(stop);
      returned = true;
    });
    std::uint64_t seen = 0;
    std::int64_t seen_ns = t0;
    for (;;) {
      const std::uint64_t applied = sink.stats().applied.load();
      const std::int64_t now = mono_now_ns();
      if (applied > 0 && first_ns == 0) first_ns = now;
      if (applied >= target) {
        last_ns = now;
        cpu_after = cpu_times();
        break;
      }
      progress.update(static_cast<double>(applied), static_cast<double>(target), "rows applied");
      if (applied != seen) {
        seen = applied;
        seen_ns = now;
      }
      if (returned) {
        bench_fail("the sink stopped: " +
                   (result ? std::string("without an error") : result.error().message));
      }
      if (now - seen_ns > kStallNs) {
        bench_fail("the sink applied " + std::to_string(applied) + " of " + std::to_string(target) +
                   " rows and no more come");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    progress.update(static_cast<double>(target), static_cast<double>(target), "rows applied");
    progress.finish();
  }  // the sink stops here (its batch in hand finishes)
  if (!result) bench_fail("the sink: " + result.error().message);
  if (const auto parked = sink.stats().parked.load(); parked > 0) {
    bench_fail(std::to_string(parked) + " changes parked as dead letters");
  }

  // The destination holds every row once.
  std::int64_t count = -1;
  if (clickhouse) {
    auto r =
        clickhouse_query(clickhouse->url(), std::string("SELECT count() FROM ") + kDestDatabase +
                                                ".bench_sink FINAL WHERE _is_deleted = 0");
    if (!r) bench_fail(r.error().message);
    count = std::strtoll(r->c_str(), nullptr, 10);
  } else {
    auto dest = pg::Connection::connect(dest_url);
    if (!dest) bench_fail(dest.error().message);
    auto r = dest->exec("SELECT count(*) FROM bench_sink WHERE NOT _deleted");
    if (!r) bench_fail(r.error().message);
    count = r->int64(0, 0);
  }
  if (count != opt.rows) {
    bench_fail("the destination holds " + std::to_string(count) + " rows, not " +
               std::to_string(opt.rows));
  }

  const double seconds = static_cast<double>(last_ns - t0) / 1e9;
  nlohmann::ordered_json out;
  out["rows"] = opt.rows;
  out["rows_per_s"] = std::round(static_cast<double>(opt.rows) / seconds);
  out["destination"] = opt.destination;
  out["masking"] = true;
  out["seconds"] = round_to(seconds, 3);
  out["first_to_last_ms"] = round_to(static_cast<double>(last_ns - first_ns) / 1e6, 1);
  out["batch"] = batch;
  out["batches"] = sink.stats().batches.load();
  out["bus"] = "redis";
  out["durable"] = (*stack)->durable();
  add_cpu_fields(out, cpu_before, cpu_after);
  std::printf("%s\n", out.dump().c_str());
  return kExitOk;
}

}  // namespace

void add_bench_sink(CLI::App& bench, Flags& flags) {
  auto* cmd = bench.add_subcommand(
      "sink", "sink rows/s from a backlog on the bus into PostgreSQL or ClickHouse, masked");
  auto opt = std::make_shared<SinkBenchOptions>();
  cmd->add_option("--rows", opt->rows, "rows inserted (changes on the bus)")
      ->check(CLI::Range(1L, 100'000'000L));
  cmd->add_option("--destination", opt->destination, "postgres or clickhouse")
      ->check(CLI::IsMember({"postgres", "clickhouse"}));
  cmd->add_option("--batch", opt->batch,
                  "changes per sink batch (default: 5000; 20000 for ClickHouse)")
      ->check(CLI::Range(1, 100000));
  cmd->add_flag("--json", opt->json, "print the result as JSON (always one line)");
  cmd->add_flag("--no-durable", opt->no_durable,
                "private servers without fsync (PostgreSQL fsync off, Redis appendfsync no)");
  cmd->callback([&flags, opt] { throw Exit{run_sink_bench(load_config(flags), *opt)}; });
}

}  // namespace hi::cli
