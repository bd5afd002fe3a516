// A private PostgreSQL cluster started and stopped by this program (`hashinsight up`, tests,
// benchmarks): initdb on first use, wal_level=logical, listening on 127.0.0.1 only.
//
// PostgreSQL refuses to run as root; when we are root, the server runs as the `postgres`
// system user, which must be able to traverse every parent of the data directory (a checkout
// under a mode-700 home cannot be used; the error says so).
//
// The superuser is `hashinsight`. With a password (what `up` and the tests use) every login,
// replication included, needs it (SCRAM); a cluster made earlier without one is converted on
// its next start. Without a password, loopback is trusted (throwaway benchmark clusters).
// Production points DATABASE_URL at a real server instead.
#pragma once

#include <memory>
#include <string>

#include "core/log.h"
#include "core/process.h"
#include "core/result.h"

namespace hi::pg {

struct LocalServerOptions {
  std::string data_dir;  // the cluster lives in data_dir (created if missing)
  std::string log_path;  // server log; empty = data_dir/../logs/postgres.log
  int port = 0;
  bool durable = true;  // false: fsync=off etc., for tests and throwaway benchmarks
  std::string database = "hashinsight";
  std::string password;  // the superuser's; empty = trust loopback (URL-safe characters only)
};

class LocalServer {
 public:
  static Result<std::unique_ptr<LocalServer>> start(const LocalServerOptions& options,
                                                    const Logger& log);
  ~LocalServer();

  // postgresql://hashinsight:PASSWORD@127.0.0.1:PORT/hashinsight
  std::string url() const;
  std::string url_for(const std::string& database, bool with_password) const;
  int port() const { return options_.port; }
  Process& process() { return process_; }
  // Fast shutdown; waits for the server to exit.
  void stop();

 private:
  LocalServer(LocalServerOptions options, Process process, Logger log)
      : options_(std::move(options)), process_(std::move(process)), log_(std::move(log)) {}
  LocalServerOptions options_;
  Process process_;
  Logger log_;
};

// PostgreSQL's bin directory: `pg_config --bindir`, else /usr/lib/postgresql/15/bin.
std::string postgres_bindir();

// Waits until a server answers at `conninfo` (PQping), up to `timeout`.
Status wait_until_ready(const std::string& conninfo, std::chrono::milliseconds timeout);

}  // namespace hi::pg
