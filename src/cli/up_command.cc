// `hashinsight up`: the whole stack on one machine.
//
// A small supervisor: starts (or reuses via DATABASE_URL / REDIS_URL) PostgreSQL and Redis,
// migrates, seeds on first run, then runs each part of the platform as its own child process,
// restarting a part that dies with exponential backoff, until SIGTERM/SIGINT stops them all.
// When every part is up it writes DIR/up.json (the ready signal) and prints the URLs.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "bus/bus.h"
#include "bus/kafka_mock.h"
#include "cli/common.h"
#include "cli/supervisor.h"
#include "core/backoff.h"
#include "core/failpoint.h"
#include "core/ids.h"
#include "core/process.h"
#include "core/strings.h"
#include "core/time.h"
#include "pg/connection.h"
#include "pg/local_server.h"
#include "redis/client.h"
#include "redis/local_server.h"
#include "schema/migrations.h"
#include "schema/seed.h"
#include "sinks/config.h"
#include "sinks/masking.h"

namespace hi::cli {

int run_migrate(pg::Connection& conn, const Logger& log);
int apply_capture_tables(pg::Connection& owner, const Config& cfg, const Logger& log);

namespace {
namespace fs = std::filesystem;

struct UpOptions {
  bool detach = false;
};

// Written mode 600: it holds the servers' URLs with their passwords.
void write_json_atomic(const fs::path& path, const nlohmann::json& j) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
  }
  ::chmod(tmp.c_str(), 0600);
  fs::rename(tmp, path);
}

std::string secret(const fs::path& dir, const std::string& name, std::size_t bytes) {
  return read_or_create_secret(dir.string(), name, bytes);
}

struct Ports {
  int pg = 0;
  int redis = 0;
  int api = 0;
  int cache_redis = 0;  // not part of HI_PORT_BASE's three: the kernel's choice, kept
};

Ports choose_ports(const Config& cfg, const nlohmann::json& previous) {
  Ports p;
  p.cache_redis = previous.value("cache_redis_port", 0);
  if (p.cache_redis == 0) p.cache_redis = free_port();
  if (const auto base = cfg.integer("HI_PORT_BASE"); base > 0) {
    p.pg = static_cast<int>(base);
    p.redis = static_cast<int>(base) + 1;
    p.api = static_cast<int>(base) + 2;
    return p;
  }
  p.pg = previous.value("pg_port", 0);
  p.redis = previous.value("redis_port", 0);
  p.api = previous.value("api_port", 0);
  if (p.pg == 0) p.pg = free_port();
  if (p.redis == 0) p.redis = free_port();
  if (p.api == 0) p.api = free_port();
  return p;
}

std::int64_t now_ms() { return mono_now_ns() / 1'000'000; }

// A private server that `up` keeps running: restarted on the same port when it dies, with
// backoff (a server that cannot start, e.g. while the old one's shared memory is still held,
// is retried), so the parts, which reconnect by themselves, carry on.
template <typename Server, typename Options>
class KeptServer {
 public:
  KeptServer(std::string name, Options options) : name_(std::move(name)), options_(options) {}

  Status start(const Logger& log) {
    auto s = Server::start(options_, log);
    if (!s) return s.error().wrap(name_);
    server_ = std::move(*s);
    return {};
  }
  // Called from the supervisor's loop: notices a death, restarts when the backoff is over.
  void keep_running(const Logger& log) {
    if (!server_ || server_->process().running()) return;
    const auto now = std::chrono::steady_clock::now();
    if (!down_) {
      down_ = true;
      const auto delay = backoff_.next();
      retry_at_ = now + delay;
      log.error(name_ + " exited; restarting",
                {{"status", server_->process().exit_status().value_or(-1)},
                 {"backoff_ms", delay.count()}});
      return;
    }
    if (now < retry_at_) return;
    // Tests hold a server down here to watch the stack without it (`sleep(MS)`).
    (void)failpoint(name_ == "redis" ? "up.before_redis_restart" : "up.before_postgres_restart");
    auto s = Server::start(options_, log);
    if (!s) {
      const auto delay = backoff_.next();
      retry_at_ = now + delay;
      log.warn(name_ + " restart failed; retrying",
               {{"error", s.error().message}, {"backoff_ms", delay.count()}});
      return;
    }
    server_ = std::move(*s);
    down_ = false;
    backoff_.reset();
    log.info(name_ + " restarted", {{"pid", server_->process().pid()}});
  }
  Server* get() const { return server_.get(); }
  void stop() { server_.reset(); }

 private:
  std::string name_;
  Options options_;
  std::unique_ptr<Server> server_;
  Backoff backoff_{std::chrono::milliseconds(500), std::chrono::seconds(10)};
  bool down_ = false;
  std::chrono::steady_clock::time_point retry_at_{};
};

// The servers `up` runs on: DATABASE_URL / REDIS_URL when given, else private ones it starts,
// keeps running and stops.
struct Servers {
  std::optional<KeptServer<pg::LocalServer, pg::LocalServerOptions>> pg;
  std::optional<KeptServer<redis::LocalServer, redis::LocalServerOptions>> redis;
  std::optional<KeptServer<redis::LocalServer, redis::LocalServerOptions>> cache_redis;
  std::string database_url;
  std::string redis_url;
  std::string cache_redis_url;  // empty: redis_url's server holds it all

  void keep_running(const Logger& log) {
    if (pg) pg->keep_running(log);
    if (redis) redis->keep_running(log);
    if (cache_redis) cache_redis->keep_running(log);
  }
  void stop() {
    if (cache_redis) cache_redis->stop();
    if (redis) redis->stop();
    if (pg) pg->stop();
  }
};

// Private servers take passwords generated into DIR/secrets: another local user cannot read
// or write the platform's data through the loopback ports.
Servers start_servers(const Config& cfg, const fs::path& dir, const Ports& ports,
                      const Logger& log) {
  Servers s{std::nullopt,         std::nullopt,
            std::nullopt,         cfg.str("DATABASE_URL"),
            cfg.str("REDIS_URL"), cfg.str("CACHE_REDIS_URL")};
  if (s.database_url.empty()) {
    pg::LocalServerOptions o;
    o.data_dir = (dir / "pg").string();
    o.log_path = (dir / "logs" / "postgres.log").string();
    o.port = ports.pg;
    o.password = secret(dir, "postgres_password", 24);
    s.pg.emplace("postgres", o);
    if (auto st = s.pg->start(log); !st) fail(kExitFailure, st.error().message);
    s.database_url = s.pg->get()->url();
  } else {
    log.info("using DATABASE_URL", {});
  }
  if (s.redis_url.empty()) {
    redis::LocalServerOptions o;
    o.data_dir = (dir / "redis").string();
    o.log_path = (dir / "logs" / "redis.log").string();
    o.port = ports.redis;
    o.appendfsync = cfg.str("REDIS_APPENDFSYNC");
    o.password = secret(dir, "redis_password", 24);
    s.redis.emplace("redis", o);
    if (auto st = s.redis->start(log); !st) fail(kExitFailure, st.error().message);
    s.redis_url = s.redis->get()->url();
    if (s.cache_redis_url.empty()) {
      // What may be lost gets a server of its own, without persistence: the cache, limits,
      // locks and notices then never wait for the bus's fsync.
      redis::LocalServerOptions c;
      c.data_dir = (dir / "cache-redis").string();
      c.log_path = (dir / "logs" / "cache-redis.log").string();
      c.port = ports.cache_redis;
      c.durable = false;
      c.password = secret(dir, "redis_password", 24);
      s.cache_redis.emplace("cache-redis", c);
      if (auto st = s.cache_redis->start(log); !st) fail(kExitFailure, st.error().message);
      s.cache_redis_url = s.cache_redis->get()->url();
    }
  }
  return s;
}

// Migrates, and seeds a database that has no tenant yet.
pg::Connection prepare_database(const std::string& database_url, const Config& cfg,
                                const Logger& log) {
  auto conn = pg::Connection::connect(database_url);
  if (!conn) fail(kExitUsage, "cannot reach DATABASE_URL: " + conn.error().message);
  if (run_migrate(*conn, log) != kExitOk) fail(kExitFailure, "migrations failed");
  if (apply_capture_tables(*conn, cfg, log) != kExitOk) {
    fail(kExitFailure, "capture publication failed");
  }
  auto seeded = conn->exec("SELECT count(*) FROM tenants");
  if (seeded && seeded->int64(0, 0) == 0) {
    auto r = schema::seed(*conn, log);
    if (!r) fail(kExitFailure, "seed failed: " + r.error().message);
  }
  return std::move(*conn);
}

// Kafka without brokers: host librdkafka's mock cluster here and hand its address to the
// children. It lives in this process's memory: not durable, for demos and tests only.
std::unique_ptr<bus::MockCluster> host_mock_kafka(const Config& cfg, const Logger& log) {
  if (cfg.str("BUS") != "kafka" || !cfg.str("KAFKA_BROKERS").empty()) return nullptr;
  auto m = bus::MockCluster::start_with_topics(
      3, bus::standard_topics(), static_cast<int>(cfg.integer("KAFKA_PARTITIONS")), 3);
  if (!m) fail(kExitFailure, "kafka mock cluster: " + m.error().message);
  log.warn(
      "kafka: in-memory mock cluster (NOT durable; events are lost when `up` stops); set "
      "KAFKA_BROKERS for a real cluster",
      {{"bootstrap", (*m)->bootstrap()}});
  return std::move(*m);
}

// DIR/sinks.yaml, when there is one: its destinations (a bad file stops `up` with the line and
// the reason).
std::optional<sinks::SinksConfig> sinks_config(const Config& cfg) {
  const std::string path = data_dir(cfg) + "/sinks.yaml";
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  auto c = sinks::load_sinks_config(path);
  if (!c) fail(kExitUsage, c.error().message);
  return std::move(*c);
}

// The sinks' source tables join the relay's capture list (RELAY_CAPTURE_TABLES), so the owner
// role puts them in the capture publication and the relay and the audit worker see them.
void with_sink_tables(Flags& flags) {
  const auto sinks = sinks_config(load_config(flags));
  if (!sinks) return;
  std::vector<std::string> tables;
  for (const auto& t : split_list(load_config(flags).str("RELAY_CAPTURE_TABLES"))) {
    tables.push_back(t.find('.') == std::string::npos ? "public." + t : t);
  }
  for (const auto& t : sinks->source_tables()) {
    if (std::find(tables.begin(), tables.end(), t) == tables.end()) tables.push_back(t);
  }
  std::string list;
  for (const auto& t : tables) list += (list.empty() ? "" : ",") + t;
  flags.overrides["RELAY_CAPTURE_TABLES"] = list;
}

// Every part, each long-running one with its /metrics port; returns {part: metrics URL}.
nlohmann::json add_parts(Supervisor& sup, const Config& cfg, const Logger& log,
                         const std::string& api_url) {
  const std::string exe = self_exe();
  nlohmann::json metrics_urls = nlohmann::json::object();
  auto add = [&](const std::string& name, std::vector<std::string> argv) {
    const int port = free_port();
    argv.insert(argv.end(), {"--metrics-port", std::to_string(port)});
    sup.add(name, std::move(argv));
    metrics_urls[name] = "http://127.0.0.1:" + std::to_string(port) + "/metrics";
  };
  add("relay", {exe, "relay"});
  // Workers keep their consumer name across restarts: a restarted one takes back at once what
  // its previous process was given and never acknowledged (Redis Streams), instead of it
  // waiting for another member to claim it after CONSUMER_CLAIM_IDLE_MS.
  const std::string member = "-" + host_name() + "-up";
  add("worker-portfolio", {exe, "worker", "portfolio", "--instance", "portfolio" + member});
  add("worker-intel", {exe, "worker", "intel", "--instance", "intel" + member});
  // A part with nothing to read is not started (it would exit and be restarted forever).
  if (!cfg.str("RELAY_CAPTURE_TABLES").empty()) {
    add("worker-audit", {exe, "worker", "audit", "--instance", "audit" + member});
  } else {
    log.info("worker audit not started: no captured tables (RELAY_CAPTURE_TABLES)", {});
  }
  if (cfg.is_set("CRM_WEBHOOK_URL")) {
    add("worker-crm", {exe, "worker", "crm", "--instance", "crm" + member});
  } else {
    log.info("worker crm not started: CRM_WEBHOOK_URL is not set", {});
  }
  // One sink per destination of DIR/sinks.yaml (none by default).
  if (const auto sinks = sinks_config(cfg)) {
    for (const auto& d : sinks->destinations) {
      add("sink-" + d.name, {exe, "sink", "--destination", d.name});
    }
    log.info("sinks started", {{"destinations", sinks->destinations.size()},
                               {"capture", cfg.str("RELAY_CAPTURE_TABLES")}});
  }
  sup.add("api", {exe, "api"});  // /metrics on its own port
  metrics_urls["api"] = api_url + "/metrics";
  return metrics_urls;
}

// Ready means every part answers: the relay reports streaming in its status hash.
void wait_until_streaming(Supervisor& sup, const std::string& redis_url, const fs::path& dir,
                          const Logger& log) {
  auto rc = redis::Client::connect(redis_url);
  if (!rc) return;
  for (int i = 0; i < 600; ++i) {
    auto r = rc->command({"HGET", "hi:status:relay", "streaming"});
    if (r && r->str == "1") return;
    sup.tick();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  log.warn("the relay is not streaming yet; see its log",
           {{"log", (dir / "logs" / "relay.log").string()}});
}

void print_ready(const nlohmann::json& ready, const fs::path& dir) {
  const std::string api = ready["api_url"], bus = ready["bus"];
  const std::string db = redact_url(ready.value("database_url", "")),
                    redis = redact_url(ready.value("redis_url", ""));
  const std::string up_json = (dir / "up.json").string();
  std::printf(
      "hashinsight is up (data in %s)\n"
      "  api        %s\n"
      "  dashboard  %s/analytics/main\n"
      "  postgres   %s   (psql \"$(jq -r .database_url %s)\")\n"
      "  redis      %s   (redis-cli -u \"$(jq -r .redis_url %s)\")\n"
      "  bus        %s\n"
      "  logs       %s/logs/*.log\n"
      "Passwords are in %s/secrets and the full URLs in %s (mode 600).\n"
      "Ctrl-C or SIGTERM stops everything.\n",
      dir.c_str(), api.c_str(), api.c_str(), db.c_str(), up_json.c_str(), redis.c_str(),
      up_json.c_str(), bus.c_str(), dir.c_str(), dir.c_str(), up_json.c_str());
  std::fflush(stdout);
}

int run_up(const Config& cfg) {
  Logger log("up");
  const fs::path dir = data_dir(cfg);
  std::error_code ec;
  fs::create_directories(dir / "logs", ec);
  if (ec) fail(kExitUsage, "cannot create data directory " + dir.string() + ": " + ec.message());
  const Ports ports = choose_ports(cfg, read_json(dir / "up.json"));

  // Signals are handled synchronously in this thread: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGCHLD, SIGHUP}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Servers servers = start_servers(cfg, dir, ports, log);
  pg::Connection conn = prepare_database(servers.database_url, cfg, log);
  const std::string jwt_secret =
      cfg.is_set("JWT_SECRET") ? cfg.str("JWT_SECRET") : secret(dir, "jwt_secret", 32);
  (void)secret(dir, "master_key_v1", 32);
  // The masking keys every sink shares (created here once, so no two sinks race to make them).
  if (sinks_config(cfg)) {
    if (auto k = sinks::load_masking_keys((dir / "secrets").string(), true); !k) {
      fail(kExitFailure, "masking keys: " + k.error().message);
    }
  }
  std::unique_ptr<bus::MockCluster> mock = host_mock_kafka(cfg, log);
  const std::string kafka_brokers = mock ? mock->bootstrap() : cfg.str("KAFKA_BROKERS");

  // The children get the resolved configuration through their environment.
  std::vector<std::string> env;
  for (const auto& [k, v] : cfg.values()) env.push_back(k + "=" + v);
  env.push_back("DATABASE_URL=" + servers.database_url);
  // The relay logs in as its own role, not as the owner (REPLICATION, the outbox only), with
  // its own password.
  if (!cfg.is_set("RELAY_DATABASE_URL") && servers.pg) {
    const std::string password = secret(dir, "relay_password", 24);
    if (auto r = conn.exec("ALTER ROLE hashinsight_relay PASSWORD " + conn.quote_literal(password));
        !r) {
      fail(kExitFailure, "set the relay role's password: " + r.error().message);
    }
    env.push_back("RELAY_DATABASE_URL=postgresql://hashinsight_relay:" + password +
                  "@127.0.0.1:" + std::to_string(servers.pg->get()->port()) + "/hashinsight");
  }
  env.push_back("REDIS_URL=" + servers.redis_url);
  if (!servers.cache_redis_url.empty()) env.push_back("CACHE_REDIS_URL=" + servers.cache_redis_url);
  env.push_back("JWT_SECRET=" + jwt_secret);
  env.push_back("HI_DATA_DIR=" + dir.string());
  env.push_back("HTTP_PORT=" + std::to_string(ports.api));
  env.push_back("KAFKA_BROKERS=" + kafka_brokers);
  if (mock && cfg.str("KAFKA_CONSUMER_PROPERTIES").empty()) {
    // The mock cluster answers an empty fetch only when fetch.wait.max.ms (500 ms) has passed,
    // even when data arrives meanwhile; a real broker answers as soon as there is data.
    env.push_back("KAFKA_CONSUMER_PROPERTIES=fetch.wait.max.ms=5");
  }

  Supervisor sup(dir / "logs", env, log);
  const std::string api_url = "http://127.0.0.1:" + std::to_string(ports.api);
  const nlohmann::json metrics_urls = add_parts(sup, cfg, log, api_url);
  if (auto s = sup.start_all(); !s) fail(kExitFailure, s.error().message);
  // The relay's status hash is in the cache Redis when there is one.
  wait_until_streaming(
      sup, servers.cache_redis_url.empty() ? servers.redis_url : servers.cache_redis_url, dir, log);

  nlohmann::json ready = {{"api_url", api_url},
                          {"dashboard_url", api_url + "/analytics/main"},
                          {"database_url", servers.database_url},
                          {"redis_url", servers.redis_url},
                          {"cache_redis_url", servers.cache_redis_url},
                          {"cache_redis_port", ports.cache_redis},
                          {"kafka_brokers", kafka_brokers},
                          {"bus", cfg.str("BUS")},
                          {"pid", ::getpid()},
                          {"parts", sup.pids()},
                          {"metrics_urls", metrics_urls},
                          {"pg_port", ports.pg},
                          {"redis_port", ports.redis},
                          {"api_port", ports.api},
                          {"data_dir", dir.string()}};
  write_json_atomic(dir / "up.json", ready);
  print_ready(ready, dir);
  nlohmann::json logged = ready;
  for (const char* k : {"database_url", "redis_url", "cache_redis_url"}) {
    logged[k] = redact_url(ready.value(k, ""));
  }
  log.info("ready", logged);

  // Wait for a stop signal; restart parts that die; maintain partitions hourly.
  std::int64_t next_maintenance = now_ms() + 3600'000;
  for (;;) {
    timespec timeout{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      log.info("stopping", {{"signal", sig}});
      break;
    }
    sup.tick();
    if (const auto pids = sup.pids(); nlohmann::json(pids) != ready["parts"]) {
      ready["parts"] = pids;
      write_json_atomic(dir / "up.json", ready);
    }
    servers.keep_running(log);
    if (now_ms() >= next_maintenance) {
      next_maintenance = now_ms() + 3600'000;
      if (auto r = conn.exec("SELECT ensure_all_partitions()"); !r) {
        log.warn("partition maintenance failed", {{"error", r.error().message}});
        // The server may have been restarted since: reconnect for the next round.
        if (auto c = pg::Connection::connect(servers.database_url)) conn = std::move(*c);
      }
    }
  }
  sup.stop_all();
  conn = pg::Connection();  // close before the server stops
  servers.stop();
  ready["pid"] = nullptr;
  ready["parts"] = nlohmann::json::object();
  write_json_atomic(dir / "up.json", ready);
  log.info("stopped", {});
  return kExitOk;
}

// --detach: the supervisor runs in a child in its own session; the caller returns once the
// child wrote up.json with its pid (or died).
int detach_and_wait(const Config& cfg) {
  const fs::path dir = data_dir(cfg);
  std::error_code ec;
  fs::create_directories(dir / "logs", ec);
  const pid_t child = ::fork();
  if (child < 0) fail(kExitFailure, "fork failed");
  if (child == 0) {
    ::setsid();
    const std::string out = (dir / "logs" / "up.log").string();
    std::FILE* f = std::freopen(out.c_str(), "a", stdout);
    if (f != nullptr) ::dup2(::fileno(stdout), 2);
    std::freopen("/dev/null", "r", stdin);
    return -1;  // continue as the supervisor
  }
  for (int i = 0; i < 3000; ++i) {
    const auto j = read_json(dir / "up.json");
    // A stack that stopped left "pid": null behind: that is not ours either.
    const auto pid = j.find("pid");
    if (pid != j.end() && pid->is_number_integer() && pid->get<pid_t>() == child) {
      std::printf("hashinsight is up (pid %d); URLs in %s/up.json, logs in %s/logs\n", child,
                  dir.c_str(), dir.c_str());
      std::printf("api %s\npostgres %s\nredis %s\n", j.value("api_url", "").c_str(),
                  redact_url(j.value("database_url", "")).c_str(),
                  redact_url(j.value("redis_url", "")).c_str());
      return kExitOk;
    }
    int status = 0;
    if (::waitpid(child, &status, WNOHANG) == child) {
      std::fprintf(stderr, "hashinsight: up failed; see %s/logs/up.log\n", dir.c_str());
      return kExitFailure;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::fprintf(stderr, "hashinsight: up did not become ready in 300 s; see %s/logs/up.log\n",
               dir.c_str());
  return kExitFailure;
}

// `down`: SIGTERM to the supervisor that DIR/up.json names, then wait, as Ctrl-C on `up` would.
// Nothing running is not an error, so that `down` can always be run before `up`.
int run_down(const Config& cfg, int timeout_s) {
  const fs::path dir = data_dir(cfg);
  const auto j = read_json((dir / "up.json").string());
  const auto at = j.find("pid");
  if (at == j.end() || !at->is_number_integer()) {
    std::printf("hashinsight is not running (data in %s)\n", dir.c_str());
    return kExitOk;
  }
  const auto pid = at->get<pid_t>();
  // After a crash of the machine the pid may belong to another program by now: only an `up`
  // is stopped. Its children would have died with it (parent-death signal).
  const auto args = process_arguments(pid);
  if (!process_alive(pid) || std::find(args.begin(), args.end(), "up") == args.end()) {
    std::printf(
        "hashinsight is not running (data in %s; up.json names pid %d, which is not "
        "a running hashinsight up)\n",
        dir.c_str(), pid);
    return kExitOk;
  }
  if (::kill(pid, SIGTERM) != 0) {
    fail(kExitFailure,
         "cannot signal hashinsight up (pid " + std::to_string(pid) + "): " + std::strerror(errno));
  }
  std::printf("stopping hashinsight (pid %d, data in %s)\n", pid, dir.c_str());
  std::fflush(stdout);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  for (int waited_ms = 0; process_alive(pid); waited_ms += 100) {
    const auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start)
            .count();
    if (seconds >= timeout_s) {
      if (tty) std::fputc('\n', stderr);
      std::fprintf(stderr,
                   "hashinsight: up (pid %d) did not stop within %d s; see %s/logs/up.log\n", pid,
                   timeout_s, dir.c_str());
      return kExitFailure;
    }
    if (tty && waited_ms % 1000 == 0) {
      std::fprintf(stderr, "\r  waiting for the parts, PostgreSQL and Redis to stop: %lld s",
                   static_cast<long long>(seconds));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (tty) std::fputc('\n', stderr);
  std::printf("stopped\n");
  return kExitOk;
}

}  // namespace

void add_down_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("down", "stop the stack that up --detach started");
  cmd->add_option_function<std::string>(
      "--data-dir", [&flags](const std::string& v) { flags.overrides["HI_DATA_DIR"] = v; },
      "data directory (HI_DATA_DIR)");
  auto timeout_s = std::make_shared<int>(120);
  cmd->add_option("--timeout", *timeout_s, "seconds to wait for everything to stop")
      ->check(CLI::Range(1, 3600));
  cmd->callback([&flags, timeout_s] { throw Exit{run_down(load_config(flags), *timeout_s)}; });
}

void add_up_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("up", "run the whole stack locally (private PostgreSQL + Redis)");
  auto opts = std::make_shared<UpOptions>();
  cmd->add_option_function<std::string>(
      "--data-dir", [&flags](const std::string& v) { flags.overrides["HI_DATA_DIR"] = v; },
      "data directory (HI_DATA_DIR)");
  cmd->add_option_function<std::string>(
      "--port-base", [&flags](const std::string& v) { flags.overrides["HI_PORT_BASE"] = v; },
      "PostgreSQL on N, Redis N+1, API N+2 (HI_PORT_BASE)");
  cmd->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; },
      "redis or kafka (BUS)");
  cmd->add_flag("--detach", opts->detach, "return once the stack is ready");
  cmd->callback([&flags, opts] {
    with_sink_tables(flags);
    const Config cfg = load_config(flags);
    if (opts->detach) {
      const int rc = detach_and_wait(cfg);
      if (rc >= 0) throw Exit{rc};
    }
    throw Exit{run_up(cfg)};
  });
}

}  // namespace hi::cli
