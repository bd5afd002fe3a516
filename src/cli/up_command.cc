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

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "bus/bus.h"
#include "bus/kafka_mock.h"
#include "cli/common.h"
#include "core/ids.h"
#include "core/process.h"
#include "core/time.h"
#include "pg/connection.h"
#include "pg/local_server.h"
#include "redis/client.h"
#include "redis/local_server.h"
#include "schema/migrations.h"
#include "schema/seed.h"

namespace hi::cli {

int run_migrate(pg::Connection& conn, const Logger& log);

namespace {
namespace fs = std::filesystem;

struct UpOptions {
  bool detach = false;
};

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return nlohmann::json::object();
  }
}

void write_json_atomic(const fs::path& path, const nlohmann::json& j) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
  }
  fs::rename(tmp, path);
}

// Reads a secret from DIR/secrets/NAME, generating it (mode 600) on first use.
std::string secret(const fs::path& dir, const std::string& name, std::size_t bytes) {
  const fs::path file = dir / "secrets" / name;
  if (std::ifstream in(file); in) {
    std::string s;
    std::getline(in, s);
    if (!s.empty()) return s;
  }
  fs::create_directories(file.parent_path());
  ::chmod(file.parent_path().c_str(), 0700);
  const std::string value = random_hex(bytes);
  {
    std::ofstream out(file);
    out << value << "\n";
  }
  ::chmod(file.c_str(), 0600);
  return value;
}

struct Ports {
  int pg = 0;
  int redis = 0;
  int api = 0;
};

Ports choose_ports(const Config& cfg, const nlohmann::json& previous) {
  Ports p;
  if (const auto base = cfg.integer("HI_PORT_BASE"); base > 0) {
    p = {static_cast<int>(base), static_cast<int>(base) + 1, static_cast<int>(base) + 2};
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

// One supervised part of the platform.
struct Part {
  std::string name;
  std::vector<std::string> args;  // subcommand and its arguments
  Process process;
  int restarts = 0;
  std::int64_t restart_at_ms = 0;  // when the next restart is due (backoff)
  std::int64_t started_at_ms = 0;
};

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("hashinsight") : p.string();
}

std::int64_t now_ms() { return mono_now_ns() / 1'000'000; }

class Supervisor {
 public:
  Supervisor(fs::path dir, std::vector<std::string> env, Logger log)
      : dir_(std::move(dir)), env_(std::move(env)), log_(std::move(log)) {}

  void add(std::string name, std::vector<std::string> args) {
    parts_.push_back(Part{std::move(name), std::move(args), {}, 0, 0, 0});
  }

  Status start_all() {
    for (auto& p : parts_) {
      if (auto s = start(p); !s) return s;
    }
    return {};
  }

  // Restarts parts that died (with backoff); returns when `stop` is set.
  void tick() {
    const std::int64_t now = now_ms();
    for (auto& p : parts_) {
      if (p.process.valid() && p.process.running()) continue;
      if (p.restart_at_ms == 0) {
        // Just died: schedule a restart. A part that ran for a minute resets its backoff.
        if (now - p.started_at_ms > 60'000) p.restarts = 0;
        const std::int64_t backoff =
            std::min<std::int64_t>(30'000, 250LL << std::min(p.restarts, 7));
        p.restart_at_ms = now + backoff;
        log_.warn("part exited; restarting", {{"part", p.name},
                                              {"status", p.process.exit_status().value_or(-1)},
                                              {"restarts", p.restarts},
                                              {"backoff_ms", backoff}});
      } else if (now >= p.restart_at_ms) {
        ++p.restarts;
        if (auto s = start(p); !s) {
          log_.error("restart failed", {{"part", p.name}, {"error", s.error().message}});
          p.restart_at_ms = 0;
        }
      }
    }
  }

  void stop_all() {
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) it->process.signal(SIGTERM);
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) {
      if (it->process.valid()) {
        const int st = it->process.stop(std::chrono::seconds(15));
        log_.info("part stopped", {{"part", it->name}, {"status", st}});
      }
    }
  }

 private:
  Status start(Part& p) {
    SpawnOptions opts;
    opts.argv = {self_exe()};
    opts.argv.insert(opts.argv.end(), p.args.begin(), p.args.end());
    opts.env = env_;
    opts.output_path = (dir_ / "logs" / (p.name + ".log")).string();
    auto proc = Process::spawn(opts);
    if (!proc) return proc.error().wrap("start " + p.name);
    p.process = std::move(*proc);
    p.started_at_ms = now_ms();
    p.restart_at_ms = 0;
    log_.info("part started",
              {{"part", p.name}, {"pid", p.process.pid()}, {"log", opts.output_path}});
    return {};
  }

  fs::path dir_;
  std::vector<std::string> env_;
  Logger log_;
  std::vector<Part> parts_;
};

int run_up(const Config& cfg) {
  Logger log("up");
  const fs::path dir = data_dir(cfg);
  std::error_code ec;
  fs::create_directories(dir / "logs", ec);
  if (ec) fail(kExitUsage, "cannot create data directory " + dir.string() + ": " + ec.message());
  const nlohmann::json previous = read_json(dir / "up.json");
  const Ports ports = choose_ports(cfg, previous);

  // Signals are handled synchronously in this thread: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGCHLD);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<pg::LocalServer> pg_server;
  std::unique_ptr<redis::LocalServer> redis_server;
  std::string database_url = cfg.str("DATABASE_URL");
  std::string redis_url = cfg.str("REDIS_URL");
  if (database_url.empty()) {
    pg::LocalServerOptions o;
    o.data_dir = (dir / "pg").string();
    o.log_path = (dir / "logs" / "postgres.log").string();
    o.port = ports.pg;
    auto s = pg::LocalServer::start(o, log);
    if (!s) fail(kExitFailure, "postgres: " + s.error().message);
    pg_server = std::move(*s);
    database_url = pg_server->url();
  } else {
    log.info("using DATABASE_URL", {});
  }
  if (redis_url.empty()) {
    redis::LocalServerOptions o;
    o.data_dir = (dir / "redis").string();
    o.log_path = (dir / "logs" / "redis.log").string();
    o.port = ports.redis;
    auto s = redis::LocalServer::start(o, log);
    if (!s) fail(kExitFailure, "redis: " + s.error().message);
    redis_server = std::move(*s);
    redis_url = redis_server->url();
  }

  auto conn = pg::Connection::connect(database_url);
  if (!conn) fail(kExitUsage, "cannot reach DATABASE_URL: " + conn.error().message);
  if (run_migrate(*conn, log) != kExitOk) fail(kExitFailure, "migrations failed");
  auto seeded = conn->exec("SELECT count(*) FROM tenants");
  if (seeded && seeded->int64(0, 0) == 0) {
    auto r = schema::seed(*conn, log);
    if (!r) fail(kExitFailure, "seed failed: " + r.error().message);
  }

  const std::string jwt_secret =
      cfg.is_set("JWT_SECRET") ? cfg.str("JWT_SECRET") : secret(dir, "jwt_secret", 32);
  (void)secret(dir, "master_key_v1", 32);

  // The children get the resolved configuration through their environment.
  std::vector<std::string> env;
  for (const auto& [k, v] : cfg.values()) env.push_back(k + "=" + v);
  env.push_back("DATABASE_URL=" + database_url);
  env.push_back("REDIS_URL=" + redis_url);
  env.push_back("JWT_SECRET=" + jwt_secret);
  env.push_back("HI_DATA_DIR=" + dir.string());
  env.push_back("HTTP_PORT=" + std::to_string(ports.api));

  // Kafka without brokers: host librdkafka's mock cluster here and hand its address to the
  // children. It lives in this process's memory: not durable, for demos and tests only.
  std::unique_ptr<bus::MockCluster> mock;
  std::string kafka_brokers = cfg.str("KAFKA_BROKERS");
  if (cfg.str("BUS") == "kafka" && kafka_brokers.empty()) {
    auto m = bus::MockCluster::start(3);
    if (!m) fail(kExitFailure, "kafka mock cluster: " + m.error().message);
    mock = std::move(*m);
    kafka_brokers = mock->bootstrap();
    std::vector<std::string> topics = bus::standard_topics();
    for (const auto& t : topics) {
      if (auto s = mock->create_topic(t, static_cast<int>(cfg.integer("KAFKA_PARTITIONS")), 3);
          !s) {
        fail(kExitFailure, "kafka mock cluster: " + s.error().message);
      }
    }
    log.warn(
        "kafka: in-memory mock cluster (NOT durable; events are lost when `up` stops); set "
        "KAFKA_BROKERS for a real cluster",
        {{"bootstrap", kafka_brokers}});
  }
  env.push_back("KAFKA_BROKERS=" + kafka_brokers);

  Supervisor sup(dir, env, log);
  sup.add("relay", {"relay"});
  sup.add("worker-portfolio", {"worker", "portfolio"});
  sup.add("worker-intel", {"worker", "intel"});
  sup.add("worker-audit", {"worker", "audit"});
  if (cfg.is_set("CRM_WEBHOOK_URL")) {
    sup.add("worker-crm", {"worker", "crm"});
  } else {
    log.info("worker crm not started: CRM_WEBHOOK_URL is not set", {});
  }
  // The API joins here with its issue.
  if (auto s = sup.start_all(); !s) fail(kExitFailure, s.error().message);

  // Ready means every part answers: the relay reports streaming in its status hash.
  if (auto rc = redis::Client::connect(redis_url)) {
    bool streaming = false;
    for (int i = 0; i < 600 && !streaming; ++i) {
      auto r = rc->command({"HGET", "hi:status:relay", "streaming"});
      streaming = r && r->str == "1";
      if (!streaming) {
        sup.tick();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    if (!streaming)
      log.warn("the relay is not streaming yet; see its log",
               {{"log", (dir / "logs" / "relay.log").string()}});
  }

  const std::string api_url = "http://127.0.0.1:" + std::to_string(ports.api);
  nlohmann::json ready = {{"api_url", api_url},
                          {"dashboard_url", api_url + "/analytics/main"},
                          {"database_url", database_url},
                          {"redis_url", redis_url},
                          {"kafka_brokers", kafka_brokers},
                          {"bus", cfg.str("BUS")},
                          {"pid", ::getpid()},
                          {"pg_port", ports.pg},
                          {"redis_port", ports.redis},
                          {"api_port", ports.api},
                          {"data_dir", dir.string()}};
  write_json_atomic(dir / "up.json", ready);
  std::printf(
      "hashinsight is up (data in %s)\n"
      "  api        %s\n"
      "  dashboard  %s/analytics/main\n"
      "  postgres   %s   (psql '%s')\n"
      "  redis      %s   (redis-cli -u %s)\n"
      "  bus        %s\n"
      "  logs       %s/logs/*.log\n"
      "Ctrl-C or SIGTERM stops everything.\n",
      dir.c_str(), api_url.c_str(), api_url.c_str(), database_url.c_str(), database_url.c_str(),
      redis_url.c_str(), redis_url.c_str(), cfg.str("BUS").c_str(), dir.c_str());
  std::fflush(stdout);
  log.info("ready", ready);

  // Wait for a stop signal; reap and restart parts on SIGCHLD; maintain partitions daily.
  std::int64_t next_maintenance = now_ms() + 3600'000;
  for (;;) {
    timespec timeout{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      log.info("stopping", {{"signal", sig}});
      break;
    }
    sup.tick();
    if (pg_server && !pg_server->process().running()) {
      log.error("postgres exited; stopping the stack", {});
      break;
    }
    if (redis_server && !redis_server->process().running()) {
      log.error("redis exited; stopping the stack", {});
      break;
    }
    if (now_ms() >= next_maintenance) {
      next_maintenance = now_ms() + 3600'000;
      if (auto r = conn->exec("SELECT ensure_all_partitions()"); !r) {
        log.warn("partition maintenance failed", {{"error", r.error().message}});
      }
    }
  }
  sup.stop_all();
  conn = pg::Connection();  // close before the server stops
  redis_server.reset();
  pg_server.reset();
  ready["pid"] = nullptr;
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
    if (j.value("pid", 0) == child) {
      std::printf("hashinsight is up (pid %d); URLs in %s/up.json, logs in %s/logs\n", child,
                  dir.c_str(), dir.c_str());
      std::printf("api %s\npostgres %s\nredis %s\n", j.value("api_url", "").c_str(),
                  j.value("database_url", "").c_str(), j.value("redis_url", "").c_str());
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

}  // namespace

void add_up_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("up", "run the whole stack locally (private PostgreSQL + Redis)");
  static UpOptions opts;
  cmd->add_option_function<std::string>(
      "--data-dir", [&flags](const std::string& v) { flags.overrides["HI_DATA_DIR"] = v; },
      "data directory (HI_DATA_DIR)");
  cmd->add_option_function<std::string>(
      "--port-base", [&flags](const std::string& v) { flags.overrides["HI_PORT_BASE"] = v; },
      "PostgreSQL on N, Redis N+1, API N+2 (HI_PORT_BASE)");
  cmd->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; },
      "redis or kafka (BUS)");
  cmd->add_flag("--detach", opts.detach, "return once the stack is ready");
  cmd->callback([&flags] {
    const Config cfg = load_config(flags);
    if (opts.detach) {
      const int rc = detach_and_wait(cfg);
      if (rc >= 0) throw Exit{rc};
    }
    throw Exit{run_up(cfg)};
  });
}

}  // namespace hi::cli
