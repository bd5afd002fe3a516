// `hashinsight bench snapshot --rows N [--chunk C] [--live-rate R] --json`: the relay's
// snapshot of a captured table into Redis Streams, beside `COPY (SELECT ...) TO STDOUT` of the
// same rows in the same run; then a second snapshot while R one-row updates per second change
// the table, whose commit-to-bus latency (the relay's own histogram, which leaves snapshot rows
// out) shows what a snapshot costs the live stream.
#include <libpq-fe.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cdc/slot.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "core/process.h"
#include "core/time.h"
#include "pg/connection.h"
#include "redis/client.h"

namespace hi::cli {
namespace {

constexpr const char* kTable = "public.bench_snapshot";

struct SnapshotBenchOptions {
  long rows = 1'000'000;
  int chunk = 10000;
  int live_rate = 500;
  bool json = false;
  bool no_durable = false;
};

[[noreturn]] void bench_fail(const std::string& what) {
  fail(kExitFailure, "bench snapshot: " + what);
}

// Rows per second of COPY (SELECT * ... ORDER BY id) TO STDOUT, read to the end.
double copy_rows_per_s(pg::Connection& conn, long rows) {
  const std::int64_t t0 = mono_now_ns();
  PGresult* res =
      PQexec(conn.native(), "COPY (SELECT * FROM bench_snapshot ORDER BY id) TO STDOUT");
  if (PQresultStatus(res) != PGRES_COPY_OUT) bench_fail(PQerrorMessage(conn.native()));
  PQclear(res);
  long lines = 0;
  char* buf = nullptr;
  int n;
  while ((n = PQgetCopyData(conn.native(), &buf, 0)) > 0) {
    ++lines;
    PQfreemem(buf);
  }
  while ((res = PQgetResult(conn.native())) != nullptr) PQclear(res);
  const double secs = static_cast<double>(mono_now_ns() - t0) / 1e9;
  if (lines != rows) bench_fail("COPY returned " + std::to_string(lines) + " rows");
  return static_cast<double>(lines) / secs;
}

struct SnapshotRun {
  double seconds = 0;
  std::int64_t rows = 0;
  std::int64_t excluded = 0;
};

// Requests a snapshot and follows it to the end (progress on a terminal).
SnapshotRun run_snapshot(pg::Connection& owner, int chunk, const std::string& label) {
  auto req = owner.exec(
      "INSERT INTO relay_snapshots (table_name, chunk_size) VALUES ($1, $2) RETURNING id",
      {kTable, std::to_string(chunk)});
  if (!req) bench_fail(req.error().message);
  const std::string id = std::to_string(req->int64(0, 0));
  Progress progress(label);
  for (;;) {
    auto r = owner.exec(
        "SELECT state, rows_done, coalesce(rows_estimated, 0), keys_excluded, "
        "extract(epoch FROM finished_at - requested_at), coalesce(error, '') "
        "FROM relay_snapshots WHERE id = $1",
        {id});
    if (!r || r->empty()) bench_fail("snapshot row vanished");
    const std::string state(r->text(0, 0));
    progress.update(static_cast<double>(r->int64(0, 1)), static_cast<double>(r->int64(0, 2)),
                    "rows");
    if (state == "done") {
      progress.finish();
      return {r->float64(0, 4), r->int64(0, 1), r->int64(0, 3)};
    }
    if (state != "requested" && state != "running") {
      bench_fail("snapshot " + state + ": " + std::string(r->text(0, 5)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int run_snapshot_bench(const Config& cfg, const SnapshotBenchOptions& opt) {
  auto stack = BenchStack::start(cfg, !opt.no_durable);
  if (!stack) bench_fail(stack.error().message);
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) bench_fail(owner.error().message);
  (void)owner->exec(
      "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = "
      "'hashinsight_outbox' AND NOT active");
  (void)owner->exec("DELETE FROM relay_settings WHERE name = 'backfill:hashinsight_outbox'");
  (void)owner->exec("DELETE FROM relay_snapshots");
  // A row shaped like a user's miner: key, owner, model, counts, a decimal, a time, a status.
  if (auto s = owner->exec_script(
          "DROP TABLE IF EXISTS bench_snapshot; CREATE TABLE bench_snapshot (id bigint PRIMARY "
          "KEY, user_id text NOT NULL, model_id int NOT NULL, quantity int NOT NULL, "
          "hashrate_ths numeric(12, 3), status text NOT NULL, updated_at timestamptz NOT NULL)");
      !s) {
    bench_fail(s.error().message);
  }
  Progress fill("fill");
  for (long done = 0; done < opt.rows;) {
    const long n = std::min<long>(100000, opt.rows - done);
    auto r = owner->exec(
        "INSERT INTO bench_snapshot SELECT g, 'user-' || (g % 5000), 1 + g % 40, 1 + g % 7, "
        "(g % 100000) / 7.0, 'active', now() FROM generate_series($1::bigint, $2::bigint) g",
        {std::to_string(done + 1), std::to_string(done + n)});
    if (!r) bench_fail(r.error().message);
    done += n;
    fill.update(static_cast<double>(done), static_cast<double>(opt.rows), "rows written");
  }
  fill.finish();
  (void)owner->exec("VACUUM ANALYZE bench_snapshot");
  if (auto s = cdc::set_capture_tables(*owner, "hashinsight_outbox", {kTable}); !s) {
    bench_fail(s.error().message);
  }
  auto redis = redis::Client::connect((*stack)->redis_url());
  if (!redis) bench_fail(redis.error().message);
  (void)redis->command({"FLUSHALL"});

  nlohmann::ordered_json out;
  out["rows"] = opt.rows;
  out["chunk"] = opt.chunk;
  out["bus"] = "redis";
  out["durable"] = (*stack)->durable();
  out["copy_rows_per_s"] = std::round(copy_rows_per_s(*owner, opt.rows));

  SpawnOptions relay;
  relay.argv = {self_exe(), "relay"};
  relay.env = {"DATABASE_URL=" + (*stack)->database_url(),
               "REDIS_URL=" + (*stack)->redis_url(),
               "BUS=redis",
               "RELAY_CAPTURE_TABLES=" + std::string(kTable),
               "LOG_FORMAT=text",
               "HI_DATA_DIR=/nonexistent"};
  const std::string log = ((*stack)->dir().empty() ? std::string("/tmp") : (*stack)->dir()) +
                          "/bench-snapshot-relay.log";
  relay.output_path = log;
  auto proc = Process::spawn(relay);
  if (!proc) bench_fail(proc.error().message);
  for (int i = 0;; ++i) {  // until the relay streams (its status hash says so)
    auto r = redis->command({"HGET", "hi:status:relay", "streaming"});
    if (r && r->str == "1") break;
    if (!proc->running() || i > 3000) bench_fail("the relay did not start; see " + log);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // 1. An idle table.
  const SnapshotRun idle = run_snapshot(*owner, opt.chunk, "snapshot (idle table)");
  out["rows_per_s"] = std::round(static_cast<double>(idle.rows) / idle.seconds);
  out["seconds"] = round_to(idle.seconds, 3);
  auto len = redis->command({"XLEN", "cdc.public.bench_snapshot"});
  out["events"] = len ? len->integer : -1;

  // 2. Again, while one-row updates commit at live_rate per second.
  if (opt.live_rate > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // a fresh metrics scrape
    auto before = redis->command({"GET", "hi:metrics:relay"});
    const char* h = "hashinsight_relay_commit_to_ack_seconds";
    const HistogramBuckets b0 = histogram_buckets(before ? before->str : "", h);
    std::atomic<bool> writing{true};
    std::atomic<long> writes{0};
    std::jthread writer([&] {
      auto conn = pg::Connection::connect((*stack)->database_url());
      if (!conn) return;
      std::mt19937 rng(7);
      const auto t0 = std::chrono::steady_clock::now();
      for (long i = 0; writing.load(); ++i) {
        std::this_thread::sleep_until(
            t0 + std::chrono::nanoseconds(static_cast<long>(i * 1e9 / opt.live_rate)));
        (void)conn->exec(
            "UPDATE bench_snapshot SET quantity = quantity + 1, updated_at = now() "
            "WHERE id = $1",
            {std::to_string(1 + rng() % opt.rows)});
        ++writes;
      }
    });
    const SnapshotRun busy = run_snapshot(*owner, opt.chunk, "snapshot (live writes)");
    writing = false;
    writer.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    auto after = redis->command({"GET", "hi:metrics:relay"});
    const HistogramBuckets d = histogram_delta(histogram_buckets(after ? after->str : "", h), b0);
    out["live_rate"] = opt.live_rate;
    out["live_writes"] = writes.load();
    out["live_rows_per_s"] = std::round(static_cast<double>(busy.rows) / busy.seconds);
    out["live_keys_excluded"] = busy.excluded;
    out["live_p50_ms"] = round_to(histogram_quantile(d, 0.50) * 1e3, 3);
    out["live_p99_ms"] = round_to(histogram_quantile(d, 0.99) * 1e3, 3);
  }
  proc->stop();
  std::printf("%s\n", out.dump().c_str());
  return kExitOk;
}

}  // namespace

void add_bench_snapshot(CLI::App& bench, Flags& flags) {
  auto* cmd = bench.add_subcommand(
      "snapshot", "relay snapshot rows/s beside COPY, and live latency during a snapshot");
  auto opt = std::make_shared<SnapshotBenchOptions>();
  cmd->add_option("--rows", opt->rows, "rows in the table")->check(CLI::Range(1L, 100'000'000L));
  cmd->add_option("--chunk", opt->chunk, "rows per chunk")->check(CLI::Range(1, 1'000'000));
  cmd->add_option("--live-rate", opt->live_rate,
                  "one-row updates per second during the second snapshot (0: skip it)")
      ->check(CLI::Range(0, 100'000));
  cmd->add_flag("--json", opt->json, "print the result as JSON (always one line)");
  cmd->add_flag("--no-durable", opt->no_durable,
                "private servers without fsync (PostgreSQL fsync off, Redis appendfsync no)");
  cmd->callback([&flags, opt] { throw Exit{run_snapshot_bench(load_config(flags), *opt)}; });
}

}  // namespace hi::cli
