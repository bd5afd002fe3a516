// `hashinsight bench api [--duration S] [--users N] [--connections C] [--post-connections P]
// [--json]`: what the API sustains on the durable stack, beside what PostgreSQL sustains on the
// same database.
//
// One stack (BenchStack: a private durable PostgreSQL and Redis, or the given servers), N bench
// users on the plan "bench" (bench_stack.h), and `hashinsight api` (this binary) as a child process
// on a free loopback port, as in production. Runs of S seconds, one after the other:
//  1. pgbench, 8 clients: per transaction the one outbox row that POST /api/miners commits
//     (bench/outbox_insert.sql) -> pgbench_tps, the database's own rate for one-row commits;
//     then POST /api/miners' own transaction (api::kAddMinerSql: its row, event and audit row)
//     -> pgbench_post_tps, what the database alone sustains of the API's write;
//  2. wrk POST /api/miners (bench/post_miner.lua): a user_miners row, its outbox event and its
//     audit row per request, each its own durable commit -> post_rps, post_p99_ms; post_rows
//     counts the user_miners rows the run added (SQL), to check against the 2xx answers;
//  3. the users' portfolios recalculated as the portfolio worker does, fetched once each to warm
//     the cache, then wrk GET /api/portfolio (bench/get_portfolio.lua) rotating over the users'
//     tokens, auth and the limiter on -> get_rps, get_p99_ms; get_cache_hit_ratio from the API's
//     hashinsight_api_cache_total{cache="portfolio"} over the run (null without that metric).
// wrk runs on this machine with 2 threads: it shares the cores with the API, PostgreSQL and
// Redis, and the JSON says so (`load_generator`, `cores`). More than 1 % errors in a run is a
// failure (exit 1) after the JSON line. The wrk and pgbench scripts are compiled in
// (bench_scripts.h) and written into a temporary directory for the run.
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "api/auth.h"
#include "api/miner_sql.h"
#include "cli/bench_scripts.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "consume/portfolio_worker.h"
#include "core/ids.h"
#include "core/process.h"
#include "core/time.h"
#include "http/client.h"
#include "pg/local_server.h"
#include "pg/transaction.h"
#include "redis/client.h"

namespace hi::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

struct ApiBenchOptions {
  int duration_s = 10;
  int users = 100;
  int connections = 64;       // GET /api/portfolio
  int post_connections = 16;  // POST /api/miners
  bool json = false;
  bool no_durable = false;
};

constexpr int kPgbenchClients = 8;
constexpr int kLoadThreads = 2;  // wrk's and pgbench's threads
constexpr double kMaxErrorFraction = 0.01;

// A directory of its own for the run (scripts, tokens, the API's data and log), removed after.
class TempDir {
 public:
  static Result<TempDir> create() {
    char tmpl[] = "/tmp/hashinsight-bench-api-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return unavailable("bench api: cannot create a directory");
    ::chmod(tmpl, 0755);
    return TempDir(tmpl);
  }
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const fs::path p = fs::path(dir.empty() ? "." : dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return std::nullopt;
}

// The CPUs this process may run on (what the load generator and the servers share).
int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::thread::hardware_concurrency());
}

Status write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return unavailable("cannot write " + path);
  return {};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs a load generator for about `seconds`, showing progress, and returns its exit status and
// output (stdout and stderr).
CommandResult run_timed(SpawnOptions o, int seconds, const std::string& label,
                        const std::string& output_path) {
  o.output_path = output_path;
  Progress progress(label);
  auto proc = Process::spawn(o);
  if (!proc) fail(kExitFailure, label + ": " + proc.error().message);
  const std::int64_t t0 = mono_now_ns();
  const std::int64_t limit_ns = (static_cast<std::int64_t>(seconds) + 120) * 1'000'000'000;
  while (proc->running()) {
    const double elapsed = static_cast<double>(mono_now_ns() - t0) / 1e9;
    progress.update(std::min(elapsed, static_cast<double>(seconds)), seconds, "s");
    if (mono_now_ns() - t0 > limit_ns) {
      proc->stop();
      fail(kExitFailure, label + ": did not finish; see " + output_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  progress.update(seconds, seconds, "s");
  progress.finish();
  return {proc->exit_status().value_or(-1), read_file(output_path)};
}

// One wrk run, from the JSON line bench/wrk_report.lua prints.
struct LoadResult {
  std::int64_t requests = 0;       // responses received, any status
  std::int64_t status_errors = 0;  // of them, status 400 or more
  std::int64_t socket_errors = 0;  // connect, read and write errors, timeouts: no response
  double seconds = 0;
  double p50_ms = 0;
  double p99_ms = 0;

  std::int64_t ok() const { return requests - status_errors; }
  std::int64_t errors() const { return status_errors + socket_errors; }
  double rps() const { return seconds > 0 ? static_cast<double>(ok()) / seconds : 0; }
  double error_fraction() const {
    const auto attempts = std::max<std::int64_t>(1, requests + socket_errors);
    return static_cast<double>(errors()) / static_cast<double>(attempts);
  }
};

Result<LoadResult> parse_wrk(const std::string& output) {
  std::optional<json> report;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("{\"requests\":", 0) == 0) report = json::parse(line, nullptr, false);
  }
  if (!report || report->is_discarded()) return internal_error("no report from wrk: " + output);
  try {
    const json& r = *report;
    const json& e = r.at("errors");
    LoadResult out;
    out.requests = r.at("requests").get<std::int64_t>();
    out.status_errors = e.at("status").get<std::int64_t>();
    out.socket_errors = e.at("connect").get<std::int64_t>() + e.at("read").get<std::int64_t>() +
                        e.at("write").get<std::int64_t>() + e.at("timeout").get<std::int64_t>();
    out.seconds = r.at("duration_us").get<double>() / 1e6;
    out.p50_ms = round_to(r.at("latency_us").at("p50").get<double>() / 1e3, 3);
    out.p99_ms = round_to(r.at("latency_us").at("p99").get<double>() / 1e3, 3);
    return out;
  } catch (const json::exception& e) {
    return internal_error(std::string("wrk report: ") + e.what());
  }
}

// What the bench needs of the running API.
struct ApiUnderTest {
  std::string base;  // http://127.0.0.1:PORT

  Result<http::ClientResponse> get(const std::string& path, const std::string& token = "") const {
    auto url = http::parse_url(base + path);
    if (!url) return url.error();
    http::ClientRequest r;
    r.url = *url;
    if (!token.empty()) r.headers = {{"Authorization", "Bearer " + token}};
    return http::fetch(r);
  }
};

// The portfolio cache counters (result -> count) from /metrics text; none without the metric.
std::optional<std::map<std::string, double>> portfolio_cache_counts(const std::string& text) {
  std::optional<std::map<std::string, double>> out;
  std::istringstream in(text);
  const std::string name = "hashinsight_api_cache_total{";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.find("cache=\"portfolio\"") == std::string::npos) {
      continue;
    }
    const auto at = line.find("result=\"");
    const auto space = line.rfind(' ');
    if (at == std::string::npos || space == std::string::npos) continue;
    const auto begin = at + 8;
    const std::string result = line.substr(begin, line.find('"', begin) - begin);
    if (!out) out.emplace();
    (*out)[result] += std::strtod(line.c_str() + space + 1, nullptr);
  }
  return out;
}

// Recalculates and stores the bench users' portfolios the way the portfolio worker does (in
// each tenant's transaction), so that GET /api/portfolio answers a real one; then drops what
// the API may have cached of them.
Status refresh_portfolios(pg::Connection& owner, redis::Client& redis, int users) {
  for (const std::string tenant : {"1", "2"}) {
    consume::TenantBatch batch;
    batch.tenant_id = tenant;
    for (int g = tenant == "1" ? 0 : 1; g < users; g += 2) {
      batch.users.push_back({std::to_string(kFirstBenchUser + g), 0, {}});
    }
    if (batch.users.empty()) continue;
    pg::Transaction tx(owner);
    if (auto s = tx.begin(tenant); !s) return s;
    auto rows = consume::recalculate_rows(owner, batch);
    if (!rows) return rows.error().wrap("bench portfolios");
    if (auto w = consume::write_rows(owner, tenant, *rows); !w) return w.error();
    if (auto s = tx.commit(); !s) return s;
  }
  std::vector<std::string> del = {"DEL"};
  for (int g = 0; g < users; ++g) {
    del.push_back(consume::portfolio_cache_key(std::to_string(kFirstBenchUser + g)));
  }
  if (auto r = redis.command(del); !r) return r.error().wrap("bench portfolios");
  return {};
}

std::int64_t bench_miner_rows(pg::Connection& owner) {
  auto r = owner.exec("SELECT count(*) FROM user_miners WHERE user_id >= $1::bigint",
                      {std::to_string(kFirstBenchUser)});
  if (!r) fail(kExitFailure, r.error().message);
  return r->int64(0, 0);
}

// A pgbench script of POST /api/miners' own transaction (api::kAddMinerSql, its parameters
// filled in as post_miner.lua's requests fill them): what the database alone sustains of the
// API's write, the ceiling of post_rps.
std::string post_statement_script() {
  std::string sql = api::kAddMinerSql;
  // $10 before $1, so that "$1" does not match inside "$10".
  const std::pair<const char*, const char*> params[] = {
      {"$10", "'127.0.0.1'"},
      {"$9", "'pgbench'"},
      {"$8", "NULL"},
      {"$7", "lpad(txid_current()::text, 36, '0')"},  // unique, 36 characters like a UUID
      {"$6", "'active'"},
      {"$5", "NULL"},
      {"$4", "1"},
      {"$3", ":model"},
      {"$2", ":u"},
      {"$1", ":tenant"}};
  for (const auto& [from, to] : params) {
    for (auto at = sql.find(from); at != std::string::npos; at = sql.find(from, at)) {
      sql.replace(at, std::strlen(from), to);
      at += std::strlen(to);
    }
  }
  return "-- POST /api/miners' transaction for a random bench user and model (generated).\n"
         "\\set u :first + random(0, :users - 1)\n"
         "\\set tenant 1 + (:u - :first) % 2\n"
         "\\set model random(1, 49)\n"
         "BEGIN;\n"
         "SELECT set_config('app.tenant_id', :tenant::text, true);\n" +
         sql + ";\nCOMMIT;\n";
}

struct PgbenchResult {
  double tps = 0;
  std::int64_t transactions = 0;
};

// pgbench with `script` (in `dir`), kPgbenchClients clients, prepared statements.
PgbenchResult run_pgbench(const std::string& database_url, const std::string& dir,
                          const std::string& script, const ApiBenchOptions& opt) {
  SpawnOptions o;
  o.argv = {pg::postgres_bindir() + "/pgbench",
            "-n",
            "-M",
            "prepared",
            "-c",
            std::to_string(kPgbenchClients),
            "-j",
            std::to_string(kLoadThreads),
            "-T",
            std::to_string(opt.duration_s),
            "-D",
            "first=" + std::to_string(kFirstBenchUser),
            "-D",
            "users=" + std::to_string(opt.users),
            "-f",
            dir + "/" + script,
            database_url};
  const CommandResult r =
      run_timed(o, opt.duration_s, "pgbench " + script, dir + "/" + script + ".out");
  constexpr std::string_view kProcessed = "number of transactions actually processed: ";
  const auto at = r.output.find("tps = ");
  const auto processed = r.output.find(kProcessed);
  if (r.status != 0 || at == std::string::npos || processed == std::string::npos) {
    fail(kExitFailure, "pgbench failed (status " + std::to_string(r.status) + "): " + r.output);
  }
  return {std::strtod(r.output.c_str() + at + 6, nullptr),
          std::strtoll(r.output.c_str() + processed + kProcessed.size(), nullptr, 10)};
}

LoadResult run_wrk(const std::string& script, const std::string& url, int connections,
                   const std::string& dir, const ApiBenchOptions& opt, const std::string& label) {
  SpawnOptions o;
  o.argv = {"wrk",
            "-t",
            std::to_string(std::min(kLoadThreads, connections)),
            "-c",
            std::to_string(connections),
            "-d",
            std::to_string(opt.duration_s) + "s",
            "--timeout",
            "10s",
            "-s",
            script,
            url,
            "--",
            dir + "/tokens.txt"};
  o.cwd = dir;  // the scripts `require("wrk_report")` from here
  const CommandResult r = run_timed(o, opt.duration_s, label, dir + "/" + label + ".out");
  if (r.status != 0) fail(kExitFailure, "wrk failed: " + r.output);
  auto parsed = parse_wrk(r.output);
  if (!parsed) fail(kExitFailure, label + ": " + parsed.error().message);
  return *parsed;
}

int run_api_bench(const Config& cfg, const ApiBenchOptions& opt) {
  if (log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);  // stderr is for progress
  if (!find_in_path("wrk")) fail(kExitFailure, "bench api: wrk not found (scripts/bootstrap)");
  auto dir = TempDir::create();
  if (!dir) fail(kExitFailure, dir.error().message);
  const std::string& d = dir->path();
  for (const auto& [name, text] : bench_scripts()) {
    if (auto s = write_file(d + "/" + std::string(name), text); !s) {
      fail(kExitFailure, s.error().message);
    }
  }

  auto stack = BenchStack::start(cfg, !opt.no_durable);
  if (!stack) fail(kExitFailure, "bench api: " + stack.error().message);
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) fail(kExitFailure, owner.error().message);
  if (auto s = create_bench_users(*owner, opt.users); !s) fail(kExitFailure, s.error().message);
  auto redis = redis::Client::connect((*stack)->cache_redis_url());
  if (!redis) fail(kExitFailure, redis.error().message);

  // Tokens for every bench user, signed with a key of this run.
  api::TokenOptions token_options;
  token_options.secret = random_hex(32);
  std::vector<std::string> tokens;
  std::string token_lines;
  for (int g = 0; g < opt.users; ++g) {
    tokens.push_back(api::issue_token(token_options, std::to_string(kFirstBenchUser + g),
                                      std::to_string(1 + g % 2), {"miners:write", "portfolio:read"},
                                      std::chrono::hours(2), unix_now_us() / 1'000'000));
    token_lines += tokens.back() + "\n";
  }
  if (auto s = write_file(d + "/tokens.txt", token_lines); !s) {
    fail(kExitFailure, s.error().message);
  }

  // The API, as `up` runs it.
  const int port = free_port();
  SpawnOptions api_spawn;
  api_spawn.argv = {self_exe(), "api"};
  api_spawn.env = {"DATABASE_URL=" + (*stack)->database_url(),
                   "REDIS_URL=" + (*stack)->redis_url(),
                   "CACHE_REDIS_URL=" + (*stack)->cache_redis_url(),
                   "JWT_SECRET=" + token_options.secret,
                   "HTTP_ADDRESS=127.0.0.1",
                   "HTTP_PORT=" + std::to_string(port),
                   "HI_DATA_DIR=" + d,
                   "BUS=redis",
                   "LOG_FORMAT=text",
                   "LOG_LEVEL=warn"};
  api_spawn.output_path = d + "/api.log";
  auto api_proc = Process::spawn(api_spawn);
  if (!api_proc) fail(kExitFailure, "bench api: " + api_proc.error().message);
  const ApiUnderTest api{"http://127.0.0.1:" + std::to_string(port)};
  for (int i = 0;; ++i) {
    auto r = api.get("/alive");
    if (r && r->status == 200) break;
    if (!api_proc->running() || i > 600) {
      fail(kExitFailure,
           "bench api: the API did not start; its log:\n" + read_file(d + "/api.log"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  ordered_json out;
  // 1. pgbench on the same database: the one-row outbox insert, then the API's own statement.
  const double pgbench_tps = run_pgbench((*stack)->database_url(), d, "outbox_insert.sql", opt).tps;
  if (auto s = write_file(d + "/post_statement.sql", post_statement_script()); !s) {
    fail(kExitFailure, s.error().message);
  }
  const std::int64_t rows_before_pgbench = bench_miner_rows(*owner);
  const PgbenchResult pgbench_post =
      run_pgbench((*stack)->database_url(), d, "post_statement.sql", opt);
  // Each of its transactions adds one row (an unknown model would add none, and be fast).
  if (const std::int64_t added = bench_miner_rows(*owner) - rows_before_pgbench;
      added != pgbench_post.transactions) {
    fail(kExitFailure, "bench api: pgbench of POST's statement committed " +
                           std::to_string(pgbench_post.transactions) + " transactions but added " +
                           std::to_string(added) + " user_miners rows");
  }
  const double pgbench_post_tps = pgbench_post.tps;

  // 2. POST /api/miners.
  const std::int64_t rows_before = bench_miner_rows(*owner);
  const LoadResult post =
      run_wrk(d + "/post_miner.lua", api.base, opt.post_connections, d, opt, "post-miners");
  const std::int64_t post_rows = bench_miner_rows(*owner) - rows_before;

  // 3. GET /api/portfolio, cache warmed.
  if (auto s = refresh_portfolios(*owner, *redis, opt.users); !s) {
    fail(kExitFailure, s.error().message);
  }
  for (const auto& token : tokens) {
    auto r = api.get("/api/portfolio", token);
    if (!r || r->status != 200) {
      fail(kExitFailure, "bench api: warming GET /api/portfolio: " +
                             (r ? std::to_string(r->status) + " " + r->body : r.error().message));
    }
  }
  auto metrics_before = api.get("/metrics");
  const LoadResult get =
      run_wrk(d + "/get_portfolio.lua", api.base, opt.connections, d, opt, "get-portfolio");
  auto metrics_after = api.get("/metrics");
  json hit_ratio = nullptr;
  if (metrics_before && metrics_after) {
    const auto before = portfolio_cache_counts(metrics_before->body);
    const auto after = portfolio_cache_counts(metrics_after->body);
    if (after) {
      auto delta = [&](const char* result) {
        const double a = after->contains(result) ? after->at(result) : 0;
        const double b = before && before->contains(result) ? before->at(result) : 0;
        return a - b;
      };
      double all = 0;
      for (const auto& [result, count] : *after) all += delta(result.c_str());
      if (all > 0) hit_ratio = round_to((delta("fresh") + delta("stale")) / all, 4);
    }
  }
  // A graceful stop is part of the contract: checked, but after the JSON line.
  const int api_status = api_proc->stop();

  out["post_rps"] = std::round(post.rps());
  out["post_p99_ms"] = post.p99_ms;
  out["pgbench_tps"] = std::round(pgbench_tps);
  out["get_rps"] = std::round(get.rps());
  out["get_p99_ms"] = get.p99_ms;
  out["get_cache_hit_ratio"] = hit_ratio;
  out["post_vs_pgbench"] = pgbench_tps > 0 ? round_to(post.rps() / pgbench_tps, 2) : 0.0;
  out["pgbench_post_tps"] = std::round(pgbench_post_tps);
  out["post_vs_pgbench_post"] =
      pgbench_post_tps > 0 ? round_to(post.rps() / pgbench_post_tps, 2) : 0.0;
  out["post_p50_ms"] = post.p50_ms;
  out["post_requests"] = post.requests;
  out["post_requests_2xx"] = post.ok();
  out["post_errors"] = post.errors();
  out["post_rows"] = post_rows;
  out["post_connections"] = opt.post_connections;
  out["get_p50_ms"] = get.p50_ms;
  out["get_requests"] = get.requests;
  out["get_errors"] = get.errors();
  out["connections"] = opt.connections;
  out["pgbench_clients"] = kPgbenchClients;
  out["users"] = opt.users;
  out["duration_s"] = opt.duration_s;
  out["durable"] = (*stack)->durable();
  out["cores"] = usable_cores();
  out["load_generator"] = "wrk (same machine)";
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!opt.json) {
    std::fprintf(stderr,
                 "bench api: %s stack, %d cores shared with the load generator (wrk, %d threads), "
                 "%d s per run, %d users\n"
                 "  pgbench one-row outbox insert  %3d clients  %8.0f tps\n"
                 "  pgbench POST's own statement   %3d clients  %8.0f tps\n"
                 "  POST /api/miners               %3d conns    %8.0f req/s  p99 %8.2f ms  "
                 "(%.2fx pgbench, %.2fx its statement)\n"
                 "  GET /api/portfolio             %3d conns    %8.0f req/s  p99 %8.2f ms  "
                 "cache hit ratio %s\n",
                 (*stack)->durable() ? "durable" : "non-durable", usable_cores(), kLoadThreads,
                 opt.duration_s, opt.users, kPgbenchClients, pgbench_tps, kPgbenchClients,
                 pgbench_post_tps, opt.post_connections, post.rps(), post.p99_ms,
                 out["post_vs_pgbench"].get<double>(), out["post_vs_pgbench_post"].get<double>(),
                 opt.connections, get.rps(), get.p99_ms, hit_ratio.dump().c_str());
  }
  const std::pair<const char*, const LoadResult*> runs[] = {{"POST /api/miners", &post},
                                                            {"GET /api/portfolio", &get}};
  for (const auto& [label, run] : runs) {
    if (run->error_fraction() > kMaxErrorFraction) {
      fail(kExitFailure, std::string("bench api: ") + label + ": " + std::to_string(run->errors()) +
                             " errors in " + std::to_string(run->requests + run->socket_errors) +
                             " requests");
    }
  }
  if (api_status != 0) {
    const std::string log = read_file(d + "/api.log");
    fail(kExitFailure, "bench api: the API did not stop cleanly on SIGTERM (status " +
                           std::to_string(api_status) + "); the end of its log:\n" +
                           log.substr(log.size() - std::min<std::size_t>(log.size(), 2000)));
  }
  return kExitOk;
}

}  // namespace

void add_bench_api(CLI::App& bench, Flags& flags) {
  auto* cmd = bench.add_subcommand(
      "api", "POST /api/miners and cached GET /api/portfolio under wrk, beside pgbench");
  auto opt = std::make_shared<ApiBenchOptions>();
  cmd->add_option("--duration", opt->duration_s, "seconds of each run (pgbench, POST, GET)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--users", opt->users, "bench users (tokens the load rotates over)")
      ->check(CLI::Range(1, 100'000));
  cmd->add_option("--connections", opt->connections, "wrk connections for GET /api/portfolio")
      ->check(CLI::Range(1, 10'000));
  cmd->add_option("--post-connections", opt->post_connections,
                  "wrk connections for POST /api/miners")
      ->check(CLI::Range(1, 10'000));
  cmd->add_flag("--json", opt->json, "print only the JSON line (no table on stderr)");
  cmd->add_flag("--no-durable", opt->no_durable,
                "private servers without fsync (PostgreSQL fsync off, Redis appendfsync no)");
  cmd->callback([&flags, opt] { throw Exit{run_api_bench(load_config(flags), *opt)}; });
}

}  // namespace hi::cli
