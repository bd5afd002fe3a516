#include "pg/local_server.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/ids.h"

namespace hi::pg {
namespace fs = std::filesystem;

namespace {

constexpr const char* kSystemUser = "postgres";

Status chown_tree(const fs::path& dir, const UserIds& ids) {
  std::error_code ec;
  if (::chown(dir.c_str(), ids.uid, ids.gid) != 0) {
    return unavailable("chown " + dir.string() + " to postgres failed");
  }
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    (void)::lchown(it->path().c_str(), ids.uid, ids.gid);
  }
  return {};
}

// Password logins on loopback only (the server listens on 127.0.0.1 and no Unix socket).
constexpr const char* kScramHba =
    "# written by hashinsight: password (SCRAM) logins on loopback only\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host replication all 127.0.0.1/32 scram-sha-256\n";

// True when pg_hba.conf lets anyone in without a password (a cluster initialised before
// passwords, or by initdb --auth=trust).
bool hba_trusts(const fs::path& data) {
  std::ifstream in(data / "pg_hba.conf");
  std::string line;
  while (std::getline(in, line)) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    std::istringstream fields(line);
    std::string word, last;
    while (fields >> word) last = word;
    if (last == "trust") return true;
  }
  return false;
}

std::string quote_literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

Status exec_once(const std::string& conninfo, const std::string& sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string err = PQerrorMessage(c);
    PQfinish(c);
    return unavailable("postgres: " + err);
  }
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  std::string err = PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return internal_error("postgres: " + err);
  return {};
}

}  // namespace

std::string postgres_bindir() {
  SpawnOptions opts;
  opts.argv = {"pg_config", "--bindir"};
  opts.parent_death_signal = 0;
  if (auto r = run_command(opts, std::chrono::seconds(10)); r && r->status == 0) {
    std::string dir = r->output;
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
    if (fs::exists(fs::path(dir) / "initdb")) return dir;
  }
  return "/usr/lib/postgresql/15/bin";
}

Status wait_until_ready(const std::string& conninfo, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (PQping(conninfo.c_str()) == PQPING_OK) return {};
    if (std::chrono::steady_clock::now() > deadline) {
      return unavailable("postgres did not become ready within " + std::to_string(timeout.count()) +
                         " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<std::unique_ptr<LocalServer>> LocalServer::start(const LocalServerOptions& in,
                                                        const Logger& log) {
  LocalServerOptions options = in;
  const fs::path data = fs::absolute(options.data_dir);
  options.data_dir = data.string();
  if (options.log_path.empty()) options.log_path = (data.parent_path() / "logs" / "postgres.log");
  std::error_code ec;
  fs::create_directories(data, ec);
  fs::create_directories(fs::path(options.log_path).parent_path(), ec);
  const std::string bindir = postgres_bindir();
  if (!fs::exists(fs::path(bindir) / "postgres")) {
    return not_found("postgres server binaries not found in " + bindir +
                     " (install postgresql-15: scripts/bootstrap)");
  }

  std::string run_as;
  if (running_as_root()) {
    auto ids = lookup_user(kSystemUser);
    if (!ids) return not_found("running as root but there is no 'postgres' system user");
    if (auto blocked = first_untraversable_dir(data.string(), *ids)) {
      return failed_precondition("data directory " + data.string() +
                                 " is not reachable by the postgres user: " + *blocked +
                                 " is not traversable (mode 700?); choose --data-dir under "
                                 "/var/lib or /tmp, or set HI_DATA_DIR");
    }
    if (auto s = chown_tree(data, *ids); !s) return s.error();
    run_as = kSystemUser;
  }
  ::chmod(data.c_str(), 0700);

  if (!fs::exists(data / "PG_VERSION")) {
    log.info("initdb", {{"data_dir", data.string()}});
    SpawnOptions init;
    init.argv = {bindir + "/initdb", "-D",       data.string(), "-U", "hashinsight", "-E", "UTF8",
                 "--no-locale",      "--no-sync"};
    // With a password the superuser has it from the first moment: no window of trust.
    const fs::path pwfile = data.parent_path() / (".initdb-" + random_hex(8));
    if (!options.password.empty()) {
      {
        std::ofstream out(pwfile);
        out << options.password << "\n";
      }
      ::chmod(pwfile.c_str(), 0600);
      if (!run_as.empty()) {
        const auto ids = lookup_user(kSystemUser);
        (void)!::chown(pwfile.c_str(), ids->uid, ids->gid);
      }
      init.argv.push_back("--auth=scram-sha-256");
      init.argv.push_back("--pwfile=" + pwfile.string());
    } else {
      init.argv.push_back("--auth=trust");
    }
    init.run_as_user = run_as;
    auto r = run_command(init, std::chrono::minutes(3));
    fs::remove(pwfile, ec);
    if (!r) return r.error().wrap("initdb");
    if (r->status != 0) return internal_error("initdb failed: " + r->output);
    if (!options.password.empty()) {
      std::ofstream hba(data / "pg_hba.conf", std::ios::trunc);
      hba << kScramHba;
    }
    std::ofstream conf(data / "postgresql.auto.conf", std::ios::app);
    conf << "# written by hashinsight on first start\n"
            "wal_level = logical\n"
            "max_replication_slots = 32\n"
            "max_wal_senders = 32\n"
            "max_connections = 300\n"
            "shared_buffers = 256MB\n"
            "wal_sender_timeout = 60s\n"
            "logical_decoding_work_mem = 64MB\n"
            "max_slot_wal_keep_size = 10GB\n"
            // Every write is a commit that waits for the WAL to reach the disk, and the full
            // page images after each checkpoint were most of that WAL: rarer checkpoints
            // (by size as by time) and compressed images keep the flushes short.
            "max_wal_size = 4GB\n"
            "checkpoint_timeout = 15min\n"
            "wal_compression = lz4\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n";
    conf.close();
    if (!run_as.empty()) (void)chown_tree(data, *lookup_user(kSystemUser));
  }

  SpawnOptions srv;
  srv.argv = {bindir + "/postgres",
              "-D",
              data.string(),
              "-p",
              std::to_string(options.port),
              "-c",
              "listen_addresses=127.0.0.1",
              "-c",
              "unix_socket_directories="};
  if (!options.durable) {
    // synchronous_commit stays on: with it off, WAL reaches the walsender only when the WAL
    // writer flushes (every 200 ms), which would dominate every latency we measure.
    for (const char* c : {"fsync=off", "full_page_writes=off"}) {
      srv.argv.push_back("-c");
      srv.argv.push_back(c);
    }
  }
  srv.run_as_user = run_as;
  srv.output_path = options.log_path;
  auto proc = Process::spawn(srv);
  if (!proc) return proc.error().wrap("start postgres");
  auto server = std::unique_ptr<LocalServer>(new LocalServer(options, std::move(*proc), log));
  const std::string url = server->url();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (PQping(url.c_str()) != PQPING_OK) {
    if (!server->process_.running()) {
      return unavailable("postgres exited during start-up (status " +
                         std::to_string(server->process_.exit_status().value_or(-1)) + "); see " +
                         options.log_path);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return unavailable("postgres did not answer within 60 s; see " + options.log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // A cluster made before passwords (trusting loopback) gets the superuser's password and
  // password-only logins, once.
  if (!options.password.empty() && hba_trusts(data)) {
    if (auto s = exec_once(server->url_for("postgres", false),
                           "ALTER ROLE hashinsight PASSWORD " + quote_literal(options.password));
        !s) {
      return s.error().wrap("set the superuser's password");
    }
    {
      std::ofstream hba(data / "pg_hba.conf", std::ios::trunc);
      hba << kScramHba;
    }
    if (!run_as.empty()) (void)chown_tree(data, *lookup_user(kSystemUser));
    if (auto s = exec_once(server->url_for("postgres", true), "SELECT pg_reload_conf()"); !s) {
      return s.error().wrap("reload pg_hba.conf");
    }
    log.info("postgres now requires passwords (SCRAM)", {{"data_dir", data.string()}});
  }
  // The database of the platform; CREATE DATABASE cannot run in a transaction block.
  const std::string admin = server->url_for("postgres", true);
  if (PGconn* c = PQconnectdb(admin.c_str())) {
    const std::string check =
        "SELECT 1 FROM pg_database WHERE datname = '" + options.database + "'";
    PGresult* r = PQexec(c, check.c_str());
    const bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!exists) {
      PGresult* cr = PQexec(c, ("CREATE DATABASE \"" + options.database + "\"").c_str());
      const bool ok = PQresultStatus(cr) == PGRES_COMMAND_OK;
      std::string err = PQresultErrorMessage(cr);
      PQclear(cr);
      if (!ok) {
        PQfinish(c);
        return internal_error("create database " + options.database + ": " + err);
      }
    }
    PQfinish(c);
  }
  log.info("postgres ready", {{"url", server->url_for(options.database, false)},
                              {"data_dir", data.string()},
                              {"pid", server->process_.pid()}});
  return server;
}

LocalServer::~LocalServer() { stop(); }

std::string LocalServer::url() const { return url_for(options_.database, true); }

std::string LocalServer::url_for(const std::string& database, bool with_password) const {
  const std::string auth = with_password && !options_.password.empty()
                               ? "hashinsight:" + options_.password
                               : "hashinsight";
  return "postgresql://" + auth + "@127.0.0.1:" + std::to_string(options_.port) + "/" + database;
}

void LocalServer::stop() {
  if (!process_.valid() || !process_.running()) return;
  process_.signal(SIGINT);  // fast shutdown: roll back open transactions, checkpoint, exit
  if (!process_.wait_for(std::chrono::seconds(30))) process_.stop();
}

}  // namespace hi::pg
