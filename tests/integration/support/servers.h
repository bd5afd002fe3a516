// Real servers for integration tests: a private PostgreSQL cluster and redis-server on free
// loopback ports in a temporary directory, removed when the test binary ends.
//
// One TestServers per test binary (gtest Environment) keeps start-up cost down; tests that
// need isolation use their own slot, stream and table names.
#pragma once

#include <memory>
#include <string>

#include "pg/connection.h"
#include "pg/local_server.h"
#include "redis/local_server.h"

namespace hi::test {

// A directory under /tmp that the postgres user can traverse; removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TestServers {
 public:
  // Starts PostgreSQL (migrated unless `migrate` is false) and Redis. Fails the test on error.
  static TestServers& get();

  const std::string& database_url() const { return database_url_; }
  const std::string& redis_url() const { return redis_url_; }
  const std::string& dir() const { return dir_; }
  // The relay role's password (the servers take passwords, as `up`'s do).
  const std::string& relay_password() const { return relay_password_; }
  int pg_port() const;
  int redis_port() const;

  // An owner connection (superuser of the private cluster).
  pg::Connection owner();
  // A connection acting as hashinsight_app (row-level security applies).
  pg::Connection app();

  // Stops / restarts Redis (bus outage tests).
  void stop_redis();
  void start_redis();
  // Kills Redis with SIGKILL (AOF on: what it acknowledged survives) and starts it again on the
  // same port.
  void kill_and_restart_redis();
  // Stops PostgreSQL as `pg_ctl stop -m immediate` does (SIGQUIT: no shutdown checkpoint, crash
  // recovery at the next start) and starts it again on the same port.
  void restart_postgres_immediately();

  ~TestServers();

 private:
  TestServers() = default;
  TempDir tmp_;  // first member: removed after the servers stopped
  std::string dir_;
  std::string database_url_;
  std::string redis_url_;
  std::string redis_password_;
  std::string relay_password_;
  int redis_port_ = 0;
  pg::LocalServerOptions pg_options_;
  std::unique_ptr<pg::LocalServer> pg_;
  std::unique_ptr<redis::LocalServer> redis_;
};

int free_port();
// The first of `count` consecutive loopback ports that are free now, below the kernel's
// ephemeral range (where any outgoing connection of a parallel test could take one of them
// between this check and the bind).
int free_port_block(int count);

// The whole text of the file at `path` ("" when it cannot be read): logs, for failure messages.
std::string file_text(const std::string& path);

// The hashinsight binary under test.
std::string hashinsight_binary();

}  // namespace hi::test
