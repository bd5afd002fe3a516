// The `hashinsight` command as a user runs it: `up` starts the stack and stops it cleanly,
// bad configuration gives a clear error and exit code 2.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/auth.h"
#include "core/process.h"
#include "http/client.h"
#include "pg/connection.h"
#include "pg/local_server.h"
#include "pg/transaction.h"
#include "redis/client.h"
#include "schema/outbox.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {
namespace fs = std::filesystem;

CommandResult run(std::vector<std::string> args, std::vector<std::string> env = {}) {
  SpawnOptions o;
  o.argv = {test::hashinsight_binary()};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  // Nothing of the caller's environment may point the command at another stack.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  o.env.insert(o.env.end(), env.begin(), env.end());
  auto r = run_command(o, std::chrono::seconds(120));
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : CommandResult{};
}

// Every live process whose command line mentions `needle`.
std::vector<int> processes_mentioning(const std::string& needle) {
  std::vector<int> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    // A process that exits while it is read fails the read (ESRCH), which libstdc++'s filebuf
    // throws: it is gone, so it mentions nothing.
    std::string cmd;
    try {
      std::ifstream in(entry.path() / "cmdline");
      cmd.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } catch (const std::exception&) {
      continue;
    }
    for (auto& c : cmd) {
      if (c == '\0') c = ' ';
    }
    if (cmd.find(needle) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

TEST(Cli, BadDatabaseUrlIsAClearErrorWithExitCode2) {
  auto bad = run({"migrate"}, {"DATABASE_URL=mysql://db.example/x"});
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("DATABASE_URL='mysql://db.example/x': must be a postgresql:// URL"),
            std::string::npos)
      << bad.output;

  const int closed = test::free_port();
  auto unreachable =
      run({"migrate"}, {"DATABASE_URL=postgresql://nobody@127.0.0.1:" + std::to_string(closed) +
                        "/none?connect_timeout=3"});
  EXPECT_EQ(unreachable.status, 2) << unreachable.output;
  EXPECT_NE(unreachable.output.find("cannot reach DATABASE_URL"), std::string::npos)
      << unreachable.output;
  EXPECT_NE(unreachable.output.find("127.0.0.1"), std::string::npos) << unreachable.output;
}

TEST(Cli, InvalidSettingNamesTheVariable) {
  auto r = run({"up", "--bus", "rabbit"}, {"HTTP_PORT=http"});
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("BUS='rabbit'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HTTP_PORT='http': not an integer"), std::string::npos) << r.output;
}

TEST(Cli, MigrateAndSeedThroughTheCommandAreRepeatable) {
  auto& servers = test::TestServers::get();
  const std::string url = "DATABASE_URL=" + servers.database_url();
  auto m1 = run({"migrate"}, {url});
  ASSERT_EQ(m1.status, 0) << m1.output;
  EXPECT_NE(m1.output.find("0 applied"), std::string::npos) << m1.output;  // fixture migrated
  auto s1 = run({"seed"}, {url});
  ASSERT_EQ(s1.status, 0) << s1.output;
  auto s2 = run({"seed"}, {url});
  ASSERT_EQ(s2.status, 0) << s2.output;
  EXPECT_NE(s2.output.find("0 new network snapshots"), std::string::npos) << s2.output;
}

TEST(Cli, UpStartsAnswersAndStopsOnSigtermLeavingNothingBehind) {
  test::TempDir dir;
  const std::string data = dir.path() + "/stack";
  const int base = test::free_port_block(3);
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(), "up", "--data-dir", data, "--port-base",
            std::to_string(base)};
  // Redis stays down 3 s when killed, long enough to see the API not ready without it.
  // A database answering slowly (a sanitizer build under parallel tests) is not what this test
  // is about: a threshold no run reaches keeps `status` and /ready about the checks themselves.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "LOG_FORMAT=text", "HEALTH_DB_MS=60000",
           "HI_FAILPOINTS=up.before_redis_restart=sleep(3000)"};
  o.output_path = dir.path() + "/up.out";
  auto up = Process::spawn(o);
  ASSERT_TRUE(up.ok());

  nlohmann::json ready;
  for (int i = 0; i < 1200; ++i) {
    std::ifstream in(data + "/up.json");
    if (in) {
      try {
        ready = nlohmann::json::parse(in);
        if (ready.value("pid", 0) == up->pid()) break;
      } catch (const nlohmann::json::exception&) {
      }
    }
    ASSERT_TRUE(up->running()) << "up exited early:\n" << test::file_text(o.output_path);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(ready.value("pid", 0), up->pid()) << "no ready signal";
  for (const char* key : {"api_url", "dashboard_url", "database_url", "redis_url", "bus"}) {
    EXPECT_TRUE(ready.contains(key)) << key;
  }
  // Passwords everywhere: generated into the secrets directory (mode 600), required by both
  // servers, and the URLs in up.json (mode 600) carry them.
  auto read_secret = [&](const std::string& name) {
    const std::string path = data + "/secrets/" + name;
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << path;
    std::ifstream in(path);
    std::string value;
    std::getline(in, value);
    return value;
  };
  const std::string pg_password = read_secret("postgres_password");
  const std::string redis_password = read_secret("redis_password");
  ASSERT_GE(pg_password.size(), 32u);
  ASSERT_GE(redis_password.size(), 32u);
  EXPECT_EQ(ready["database_url"], "postgresql://hashinsight:" + pg_password +
                                       "@127.0.0.1:" + std::to_string(base) + "/hashinsight");
  EXPECT_EQ(ready["redis_url"],
            "redis://:" + redis_password + "@127.0.0.1:" + std::to_string(base + 1) + "/0");
  struct stat up_json {};
  ASSERT_EQ(::stat((data + "/up.json").c_str(), &up_json), 0);
  EXPECT_EQ(up_json.st_mode & 0777, 0600u);
  const std::string port = std::to_string(base);
  for (const char* who : {"hashinsight", "hashinsight_relay", "hashinsight_app"}) {
    auto refused = pg::Connection::connect(std::string("postgresql://") + who +
                                           "@127.0.0.1:" + port + "/hashinsight");
    ASSERT_FALSE(refused.ok()) << who << " logged in without a password";
    EXPECT_NE(refused.error().message.find("password"), std::string::npos)
        << refused.error().message;
    auto wrong = pg::Connection::connect(std::string("postgresql://") + who +
                                         ":wrong@127.0.0.1:" + port + "/hashinsight");
    EXPECT_FALSE(wrong.ok()) << who << " logged in with a wrong password";
  }
  {
    auto anonymous = redis::Client::connect("redis://127.0.0.1:" + std::to_string(base + 1) + "/0");
    ASSERT_TRUE(anonymous.ok());
    auto denied = anonymous->command({"GET", "x"});
    ASSERT_TRUE(denied.ok());
    EXPECT_TRUE(denied->str.starts_with("NOAUTH")) << denied->str;
  }
  // Nothing printed or logged shows a password.
  std::vector<std::string> outputs = {o.output_path};
  for (const auto& f : std::filesystem::directory_iterator(data + "/logs")) {
    outputs.push_back(f.path().string());
  }
  for (const std::string& file : outputs) {
    std::ifstream in(file);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text.find(pg_password), std::string::npos) << file;
    EXPECT_EQ(text.find(redis_password), std::string::npos) << file;
  }
  // It answers: the database is migrated and seeded, Redis replies.
  auto db = pg::Connection::connect(ready["database_url"].get<std::string>());
  ASSERT_TRUE(db.ok()) << db.error().message;
  auto models = db->exec("SELECT count(*) FROM miner_models");
  ASSERT_TRUE(models.ok());
  EXPECT_GE(models->int64(0, 0), 42);
  db = pg::Connection();
  auto redis = redis::Client::connect(ready["redis_url"].get<std::string>());
  ASSERT_TRUE(redis.ok());
  auto pong = redis->command({"PING"});
  ASSERT_TRUE(pong.ok());
  EXPECT_EQ(pong->str, "PONG");
  // What may be lost (cache, locks, notices, status) has a server of its own, with the same
  // password and no persistence; the bus Redis keeps its AOF.
  ASSERT_TRUE(ready.contains("cache_redis_url"));
  EXPECT_NE(ready["cache_redis_url"], ready["redis_url"]);
  auto cache = redis::Client::connect(ready["cache_redis_url"].get<std::string>());
  ASSERT_TRUE(cache.ok());
  auto aof = cache->command({"CONFIG", "GET", "appendonly"});
  ASSERT_TRUE(aof.ok());
  ASSERT_EQ(aof->elements.size(), 2u);
  EXPECT_EQ(aof->elements[1].str, "no");
  auto bus_aof = redis->command({"CONFIG", "GET", "appendfsync"});
  ASSERT_TRUE(bus_aof.ok());
  ASSERT_EQ(bus_aof->elements.size(), 2u);
  EXPECT_EQ(bus_aof->elements[1].str, "always");
  // The relay runs as a supervised child and streams.
  auto relay_pid = cache->command({"HGET", "hi:status:relay", "pid"});
  ASSERT_TRUE(relay_pid.ok());
  ASSERT_EQ(relay_pid->type, redis::Reply::Type::kString) << "relay status missing";
  const int relay = std::stoi(relay_pid->str);
  EXPECT_TRUE(fs::exists("/proc/" + std::to_string(relay)));
  // The API answers on its port (a supervised part too).
  auto alive_url = http::parse_url(ready["api_url"].get<std::string>() + "/alive");
  ASSERT_TRUE(alive_url.ok());
  http::ClientRequest alive;
  alive.url = *alive_url;
  EXPECT_TRUE(test::eventually([&] {
    auto r = http::fetch(alive);
    return r.ok() && r->status == 200;
  })) << "the API does not answer on "
      << ready["api_url"];
  // Every long-running part serves Prometheus text where up.json says.
  ASSERT_TRUE(ready.contains("metrics_urls")) << ready.dump();
  for (const char* part : {"api", "relay", "worker-portfolio", "worker-intel"}) {
    ASSERT_TRUE(ready["metrics_urls"].contains(part)) << part;
  }
  for (const auto& [part, url] : ready["metrics_urls"].items()) {
    auto parsed = http::parse_url(url.get<std::string>());
    ASSERT_TRUE(parsed.ok()) << url;
    http::ClientRequest scrape;
    scrape.url = *parsed;
    std::string body;
    EXPECT_TRUE(test::eventually([&] {
      auto r = http::fetch(scrape);
      if (!r.ok() || r->status != 200) return false;
      body = r->body;
      return true;
    })) << part
        << " does not serve " << url;
    EXPECT_NE(body.find("hashinsight_"), std::string::npos) << part << ": " << body.substr(0, 200);
  }

  // End to end through the supervised parts: a miner added in one transaction with its event
  // becomes the user's portfolio, with through_seq covering the event.
  {
    auto app = pg::Connection::connect(ready["database_url"].get<std::string>(), "hashinsight_app");
    ASSERT_TRUE(app.ok());
    pg::Transaction tx(*app);
    ASSERT_TRUE(tx.begin("1"));
    ASSERT_TRUE(app->exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) "
                          "VALUES (1, 101, 1, 4)")
                    .ok());
    auto ev =
        schema::append_event(*app, {"1", "101", "miner.added", std::nullopt,
                                    R"({"model_id":1,"quantity":4})", std::nullopt, std::nullopt});
    ASSERT_TRUE(ev.ok()) << ev.error().message;
    ASSERT_TRUE(tx.commit());
    auto owner = pg::Connection::connect(ready["database_url"].get<std::string>());
    ASSERT_TRUE(owner.ok());
    bool visible = false;
    for (int i = 0; i < 300 && !visible; ++i) {
      auto r = owner->exec(
          "SELECT units, through_seq FROM user_portfolio WHERE tenant_id = 1 AND user_id = 101");
      visible = r.ok() && !r->empty() && r->int64(0, 0) == 4 && r->int64(0, 1) >= ev->seq;
      if (!visible) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(visible) << "the portfolio never reflected the write";
    auto status = cache->command({"HGET", "hi:status:consumer:portfolio-recalc-group", "applied"});
    ASSERT_TRUE(status.ok());
    EXPECT_EQ(status->type, redis::Reply::Type::kString) << "no consumer status";
  }
  // `status` finds the running stack through DIR/up.json: `--json` is the API's health JSON,
  // the table has a row for each of its checks, and both exit 0 while the stack is healthy.
  {
    const std::string data_env = "HI_DATA_DIR=" + data;
    CommandResult json_run, table;
    for (int i = 0; i < 150; ++i) {
      json_run = run({"status", "--json"}, {data_env});
      table = run({"status"}, {data_env});
      if (json_run.status == 0 && table.status == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_EQ(json_run.status, 0) << json_run.output;
    ASSERT_EQ(table.status, 0) << table.output;
    const auto health = nlohmann::json::parse(json_run.output, nullptr, false);
    ASSERT_TRUE(health.is_object()) << json_run.output;
    EXPECT_EQ(json_run.output.find('\n'), json_run.output.size() - 1) << "not one line";
    EXPECT_EQ(health["status"], "healthy") << json_run.output;
    auto url = http::parse_url(ready["api_url"].get<std::string>() + "/api/health");
    ASSERT_TRUE(url.ok());
    http::ClientRequest get;
    get.url = *url;
    auto api = http::fetch(get);
    ASSERT_TRUE(api.ok());
    const auto api_health = nlohmann::json::parse(api->body, nullptr, false);
    ASSERT_TRUE(api_health.is_object()) << api->body;
    for (const char* check :
         {"database", "redis", "bus", "outbox", "relay", "consumers", "dlq", "forecast", "cache"}) {
      EXPECT_TRUE(api_health["checks"].contains(check)) << check << ": " << api->body;
    }
    for (const auto& [name, check] : api_health["checks"].items()) {
      ASSERT_TRUE(health["checks"].contains(name)) << name << ": " << json_run.output;
      if (name == "consumers" || name == "sinks") {
        for (const auto& [member, _] : check.items()) {
          EXPECT_TRUE(health["checks"][name].contains(member)) << member;
          const std::string row = (name == "consumers" ? "\nconsumer " : "\nsink ") + member + " ";
          EXPECT_NE(table.output.find(row), std::string::npos) << row << "\n" << table.output;
        }
      } else {
        EXPECT_NE(table.output.find("\n" + name + " "), std::string::npos) << name << "\n"
                                                                           << table.output;
      }
    }
    EXPECT_TRUE(health["checks"]["consumers"].contains("portfolio-recalc-group"))
        << json_run.output;
    // Without the API it checks the servers itself, and says the pipeline is unhealthy.
    auto direct = run({"status", "--url", "http://127.0.0.1:" + std::to_string(test::free_port())},
                      {data_env, "HEALTH_DB_MS=60000"});
    EXPECT_EQ(direct.status, 2) << direct.output;
    EXPECT_NE(direct.output.find("\napi "), std::string::npos) << direct.output;
    const auto at = direct.output.find("\ndatabase ");
    ASSERT_NE(at, std::string::npos) << direct.output;
    const std::string row = direct.output.substr(at + 1, direct.output.find('\n', at + 1) - at - 1);
    EXPECT_NE(row.find(" healthy "), std::string::npos) << row;
  }
  // `up` heals itself: PostgreSQL and Redis killed with SIGKILL come back on the same ports,
  // the parts reconnect, and a write still becomes the portfolio.
  {
    std::ifstream pidfile(data + "/pg/postmaster.pid");
    int pg_pid = 0;
    pidfile >> pg_pid;
    ASSERT_GT(pg_pid, 0);
    auto info = redis->command({"INFO", "server"});
    ASSERT_TRUE(info.ok());
    const auto at = info->str.find("process_id:");
    ASSERT_NE(at, std::string::npos);
    const int redis_pid = std::stoi(info->str.substr(at + 11));
    ::kill(pg_pid, SIGKILL);
    ::kill(redis_pid, SIGKILL);
    // /ready says so while Redis is down, and is 200 again once `up` has restarted it.
    auto ready_url = http::parse_url(ready["api_url"].get<std::string>() + "/ready");
    ASSERT_TRUE(ready_url.ok());
    http::ClientRequest probe;
    probe.url = *ready_url;
    probe.timeout = std::chrono::seconds(5);
    std::string seen;
    EXPECT_TRUE(test::eventually(
        [&] {
          auto r = http::fetch(probe);
          if (!r.ok()) return false;
          seen = r->body;
          const auto b = nlohmann::json::parse(r->body, nullptr, false);
          // The bus Redis: the API's own Redis (cache, sessions) is the other server.
          return r->status == 503 && b.is_object() && b["checks"]["bus"]["status"] == "unhealthy";
        },
        std::chrono::seconds(10)))
        << "last /ready: " << seen;
    EXPECT_TRUE(test::eventually(
        [&] {
          auto r = http::fetch(probe);
          if (r.ok()) seen = r->body;
          return r.ok() && r->status == 200;
        },
        std::chrono::seconds(60)))
        << "last /ready: " << seen;
    auto log_text = [&] { return test::file_text(o.output_path); };
    bool healed = false;
    for (int i = 0; i < 600 && !healed; ++i) {
      const std::string text = log_text();
      healed = text.find("postgres restarted") != std::string::npos &&
               text.find("redis restarted") != std::string::npos;
      if (!healed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(healed) << log_text();
    EXPECT_TRUE(up->running());
    auto app = pg::Connection::connect(ready["database_url"].get<std::string>(), "hashinsight_app");
    ASSERT_TRUE(app.ok()) << app.error().message;
    pg::Transaction tx(*app);
    ASSERT_TRUE(tx.begin("1"));
    ASSERT_TRUE(app->exec("INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) "
                          "VALUES (1, 101, 1, 6)")
                    .ok());
    auto ev =
        schema::append_event(*app, {"1", "101", "miner.added", std::nullopt,
                                    R"({"model_id":1,"quantity":6})", std::nullopt, std::nullopt});
    ASSERT_TRUE(ev.ok()) << ev.error().message;
    ASSERT_TRUE(tx.commit());
    auto owner = pg::Connection::connect(ready["database_url"].get<std::string>());
    ASSERT_TRUE(owner.ok());
    bool visible = false;
    for (int i = 0; i < 1200 && !visible; ++i) {
      // Expected units from the raw rows, not from the worker: 4 + 6.
      auto r = owner->exec(
          "SELECT p.units, p.through_seq, (SELECT sum(quantity) FROM user_miners m "
          "WHERE m.tenant_id = 1 AND m.user_id = 101) FROM user_portfolio p "
          "WHERE p.tenant_id = 1 AND p.user_id = 101");
      visible = r.ok() && !r->empty() && r->int64(0, 0) == r->int64(0, 2) && r->int64(0, 2) == 10 &&
                r->int64(0, 1) >= ev->seq;
      if (!visible) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(visible) << "no portfolio after the servers came back\n" << log_text();
    auto again = redis::Client::connect(ready["redis_url"].get<std::string>());
    ASSERT_TRUE(again.ok());
    redis = std::move(again);
  }
  // Every child, by pid: the parts from up.json and both servers.
  std::vector<int> children;
  {
    std::ifstream in(data + "/up.json");
    const auto j = nlohmann::json::parse(in);
    for (const auto& [name, pid] : j["parts"].items()) children.push_back(pid.get<int>());
    EXPECT_TRUE(j["parts"].contains("relay"));
    EXPECT_TRUE(j["parts"].contains("worker-portfolio"));
    EXPECT_FALSE(j["parts"].contains("worker-audit")) << "audit worker started with no tables";
    std::ifstream pidfile(data + "/pg/postmaster.pid");
    int pg_pid = 0;
    pidfile >> pg_pid;
    children.push_back(pg_pid);
    auto info = redis->command({"INFO", "server"});
    ASSERT_TRUE(info.ok());
    children.push_back(std::stoi(info->str.substr(info->str.find("process_id:") + 11)));
  }
  // The secrets exist and are private.
  EXPECT_EQ(fs::status(data + "/secrets/jwt_secret").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  EXPECT_FALSE(processes_mentioning(data).empty());
  up->signal(SIGTERM);
  auto status = up->wait_for(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "up did not stop on SIGTERM";
  EXPECT_EQ(*status, 0);
  // No postgres, redis or part of the platform survives.
  std::vector<int> left;
  for (int i = 0; i < 50; ++i) {
    left = processes_mentioning(data);
    if (left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(left.empty()) << left.size() << " processes left behind";
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(relay))) << "the relay survived";
  for (int pid : children) {
    EXPECT_FALSE(fs::exists("/proc/" + std::to_string(pid))) << "child " << pid << " survived";
  }

  // A second `up`, detached as `make up` starts it, reuses the data (no initdb, same seed) and
  // returns once the stack is ready, although the stopped stack left "pid": null in up.json.
  SpawnOptions detached = o;
  detached.argv.push_back("--detach");
  detached.output_path = dir.path() + "/up-detach.out";
  auto again = Process::spawn(detached);
  ASSERT_TRUE(again.ok());
  const auto launched = again->wait_for(std::chrono::seconds(300));
  std::ifstream said_in(detached.output_path);
  const std::string said((std::istreambuf_iterator<char>(said_in)),
                         std::istreambuf_iterator<char>());
  ASSERT_EQ(launched.value_or(-1), 0) << said;
  EXPECT_NE(said.find("hashinsight is up"), std::string::npos) << said;
  std::ifstream ready_in(data + "/up.json");
  const nlohmann::json ready_again = nlohmann::json::parse(ready_in, nullptr, false);
  ASSERT_TRUE(ready_again.contains("pid") && ready_again["pid"].is_number_integer())
      << ready_again.dump();
  const int supervisor = ready_again["pid"].get<int>();
  std::ifstream log(o.output_path);
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  std::ifstream detached_log(data + "/logs/up.log");
  text.append((std::istreambuf_iterator<char>(detached_log)), std::istreambuf_iterator<char>());
  const auto first = text.find("initdb");
  EXPECT_NE(first, std::string::npos);
  EXPECT_EQ(text.find("initdb", first + 1), std::string::npos) << "initdb ran twice";
  // `down` stops it as Ctrl-C stops `up`, and returns once it has; a second finds nothing.
  const CommandResult down = run({"down", "--data-dir", data});
  EXPECT_EQ(down.status, 0) << down.output;
  EXPECT_NE(down.output.find("stopping hashinsight (pid " + std::to_string(supervisor) + ","),
            std::string::npos)
      << down.output;
  std::ifstream stopped_in(data + "/up.json");
  const nlohmann::json stopped = nlohmann::json::parse(stopped_in, nullptr, false);
  EXPECT_TRUE(stopped.contains("pid") && stopped["pid"].is_null()) << stopped.dump();
  const CommandResult down_again = run({"down", "--data-dir", data});
  EXPECT_EQ(down_again.status, 0) << down_again.output;
  EXPECT_NE(down_again.output.find("hashinsight is not running"), std::string::npos)
      << down_again.output;
  for (int i = 0; i < 600; ++i) {
    left = processes_mentioning(data);
    if (left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(left.empty()) << left.size() << " processes left behind by the detached stack";
}

// A cluster made before passwords (trusting loopback) requires them from its next start with
// one: the stack of an earlier version keeps its data and stops letting anyone in.
TEST(Cli, AClusterMadeWithoutPasswordsRequiresThemFromTheNextStart) {
  test::TempDir dir;
  pg::LocalServerOptions o;
  o.data_dir = dir.path() + "/pg";
  o.port = test::free_port();
  o.durable = false;
  const std::string port = std::to_string(o.port);
  const std::string bare = "postgresql://hashinsight@127.0.0.1:" + port + "/hashinsight";
  {
    auto trusting = pg::LocalServer::start(o, Logger("test"));
    ASSERT_TRUE(trusting.ok()) << trusting.error().message;
    auto c = pg::Connection::connect(bare);
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_TRUE(c->exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)").ok());
  }
  o.password = "converted1";
  auto secured = pg::LocalServer::start(o, Logger("test"));
  ASSERT_TRUE(secured.ok()) << secured.error().message;
  auto refused = pg::Connection::connect(bare);
  ASSERT_FALSE(refused.ok()) << "logged in without a password after the conversion";
  EXPECT_NE(refused.error().message.find("password"), std::string::npos) << refused.error().message;
  auto c = pg::Connection::connect((*secured)->url());
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto kept = c->exec("SELECT x FROM kept");
  ASSERT_TRUE(kept.ok() && !kept->empty());
  EXPECT_EQ(kept->int64(0, 0), 7);
  // Replication logins need it too.
  auto replication = pg::Connection::connect(bare + "?replication=database");
  EXPECT_FALSE(replication.ok());
}

// `hashinsight token` signs what the user's roles allow, and nothing more.
TEST(Cli, TokenCarriesOnlyScopesTheUsersRolesGrant) {
  auto& servers = test::TestServers::get();
  const std::string url = "DATABASE_URL=" + servers.database_url();
  ASSERT_EQ(run({"seed"}, {url}).status, 0);
  const std::string key = "JWT_SECRET=cli-test-secret";
  auto last_line = [](const std::string& out) {
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s.substr(s.rfind('\n') == std::string::npos ? 0 : s.rfind('\n') + 1);
  };
  // Alice (101) is an admin of tenant 1 (docs/seed.md).
  auto ok = run({"token", "--user", "101", "--tenant", "1", "--scopes",
                 "miners:write,portfolio:read", "--ttl", "600"},
                {url, key});
  ASSERT_EQ(ok.status, 0) << ok.output;
  api::TokenOptions options;
  options.secret = "cli-test-secret";
  auto who = api::verify_token(options, last_line(ok.output), std::time(nullptr));
  ASSERT_TRUE(who.ok()) << who.error().message << "\n" << ok.output;
  EXPECT_EQ(who->user_id, "101");
  EXPECT_EQ(who->tenant_id, "1");
  EXPECT_EQ(who->scopes, (std::vector<std::string>{"miners:write", "portfolio:read"}));
  EXPECT_LE(who->expires_at, std::time(nullptr) + 600);
  // Erin (105) is a viewer: no miners:write.
  auto viewer =
      run({"token", "--user", "105", "--tenant", "1", "--scopes", "miners:write"}, {url, key});
  EXPECT_EQ(viewer.status, 2) << viewer.output;
  EXPECT_NE(viewer.output.find("scopes outside the roles of user 105"), std::string::npos)
      << viewer.output;
  EXPECT_NE(viewer.output.find("miners:write"), std::string::npos) << viewer.output;
  // Alice is not a user of tenant 2.
  auto stranger =
      run({"token", "--user", "101", "--tenant", "2", "--scopes", "portfolio:read"}, {url, key});
  EXPECT_EQ(stranger.status, 2) << stranger.output;
  EXPECT_NE(stranger.output.find("does not exist in tenant 2"), std::string::npos)
      << stranger.output;
  // Without JWT_SECRET, the key of DIR/secrets (created on first use, as `up` does).
  test::TempDir dir;
  auto from_dir = run({"token", "--user", "101", "--tenant", "1", "--scopes", "portfolio:read"},
                      {url, "HI_DATA_DIR=" + dir.path()});
  ASSERT_EQ(from_dir.status, 0) << from_dir.output;
  std::ifstream in(dir.path() + "/secrets/jwt_secret");
  std::getline(in, options.secret);
  ASSERT_FALSE(options.secret.empty());
  EXPECT_TRUE(api::verify_token(options, last_line(from_dir.output), std::time(nullptr)).ok());
}

}  // namespace
}  // namespace hi
