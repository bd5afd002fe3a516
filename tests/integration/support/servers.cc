#include "support/servers.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/ids.h"
#include "core/net.h"
#include "schema/migrations.h"

namespace hi::test {
namespace fs = std::filesystem;

int free_port() { return free_loopback_port(); }

int free_port_block(int count) {
  std::minstd_rand rng(static_cast<unsigned>(::getpid()) * 7919u +
                       static_cast<unsigned>(::time(nullptr)));
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int base = 20000 + static_cast<int>(rng() % 12000);  // the ephemeral range starts higher
    bool free = true;
    for (int i = 0; i < count && free; ++i) free = loopback_port_free(base + i);
    if (free) return base;
  }
  return free_port();
}

std::string hashinsight_binary() { return HI_BINARY; }

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/hi-test-XXXXXX";
  const char* made = ::mkdtemp(tmpl);
  if (made == nullptr) std::abort();
  path_ = made;
  ::chmod(path_.c_str(), 0755);  // the postgres user must traverse it when we are root
}

TempDir::~TempDir() {
  std::error_code ec;
  if (std::getenv("HI_KEEP_TEST_DIRS") == nullptr) fs::remove_all(path_, ec);
}

TestServers& TestServers::get() {
  static std::unique_ptr<TestServers> servers = [] {
    // Tests kill servers their clients write to: a write to a closed socket is an error here,
    // as in the `hashinsight` binary, not a silent end of the test program.
    std::signal(SIGPIPE, SIG_IGN);
    std::unique_ptr<TestServers> s(new TestServers());
    s->dir_ = s->tmp_.path();
    Logger log("test");
    pg::LocalServerOptions po;
    po.data_dir = s->dir_ + "/pg";
    po.port = free_port();
    po.durable = false;
    po.password = random_hex(16);
    s->pg_options_ = po;
    auto pg = pg::LocalServer::start(po, log);
    if (!pg) {
      ADD_FAILURE() << pg.error().message;
      std::abort();
    }
    s->pg_ = std::move(*pg);
    s->database_url_ = s->pg_->url();
    s->redis_port_ = free_port();
    s->redis_password_ = random_hex(16);
    s->start_redis();
    auto conn = pg::Connection::connect(s->database_url_);
    if (!conn) {
      ADD_FAILURE() << conn.error().message;
      std::abort();
    }
    auto m = pg::migrate(*conn, schema::migrations(), log);
    if (!m) {
      ADD_FAILURE() << m.error().message;
      std::abort();
    }
    s->relay_password_ = random_hex(16);
    auto pw = conn->exec("ALTER ROLE hashinsight_relay PASSWORD " +
                         conn->quote_literal(s->relay_password_));
    if (!pw) {
      ADD_FAILURE() << pw.error().message;
      std::abort();
    }
    return s;
  }();
  return *servers;
}

TestServers::~TestServers() = default;

int TestServers::pg_port() const { return pg_->port(); }
int TestServers::redis_port() const { return redis_port_; }

pg::Connection TestServers::owner() {
  auto c = pg::Connection::connect(database_url_);
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return std::move(*c);
}

pg::Connection TestServers::app() {
  auto c = pg::Connection::connect(database_url_, "hashinsight_app");
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return std::move(*c);
}

void TestServers::stop_redis() { redis_.reset(); }

void TestServers::kill_and_restart_redis() {
  if (redis_) {
    redis_->process().signal(SIGKILL);
    (void)redis_->process().wait_for(std::chrono::seconds(10));
  }
  start_redis();
}

void TestServers::restart_postgres_immediately() {
  pg_->process().signal(SIGQUIT);
  (void)pg_->process().wait_for(std::chrono::seconds(30));
  pg_.reset();
  // The old server's backends may hold its shared memory for a moment: retry the start.
  for (int attempt = 0;; ++attempt) {
    auto pg = pg::LocalServer::start(pg_options_, Logger("test"));
    if (pg) {
      pg_ = std::move(*pg);
      return;
    }
    if (attempt == 50) {
      ADD_FAILURE() << pg.error().message;
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

void TestServers::start_redis() {
  redis::LocalServerOptions ro;
  ro.data_dir = dir_ + "/redis";
  ro.port = redis_port_;
  ro.durable = true;
  ro.password = redis_password_;
  auto r = redis::LocalServer::start(ro, Logger("test"));
  if (!r) {
    ADD_FAILURE() << r.error().message;
    std::abort();
  }
  redis_ = std::move(*r);
  redis_url_ = redis_->url();
}

}  // namespace hi::test
