#include "redis/local_server.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/strings.h"
#include "redis/client.h"

namespace hi::redis {
namespace fs = std::filesystem;

Result<std::unique_ptr<LocalServer>> LocalServer::start(const LocalServerOptions& in,
                                                        const Logger& log) {
  LocalServerOptions options = in;
  const fs::path data = fs::absolute(options.data_dir);
  options.data_dir = data.string();
  if (options.log_path.empty()) options.log_path = data.parent_path() / "logs" / "redis.log";
  std::error_code ec;
  fs::create_directories(data, ec);
  fs::create_directories(fs::path(options.log_path).parent_path(), ec);
  // Settings the command line would show to every local user.
  const fs::path conf = data / "hashinsight.conf";
  {
    std::ofstream out(conf, std::ios::trunc);
    out << "# written by hashinsight at each start\n";
    if (!options.password.empty()) out << "requirepass " << options.password << "\n";
  }
  ::chmod(conf.c_str(), 0600);
  SpawnOptions srv;
  srv.argv = {"redis-server",
              conf.string(),
              "--port",
              std::to_string(options.port),
              "--bind",
              "127.0.0.1",
              "--dir",
              data.string(),
              "--appendonly",
              options.durable ? "yes" : "no",
              "--appendfsync",
              options.appendfsync,
              "--save",
              "",
              "--daemonize",
              "no",
              "--protected-mode",
              "yes",
              "--maxclients",
              "10000"};
  srv.output_path = options.log_path;
  auto proc = Process::spawn(srv);
  if (!proc)
    return proc.error().wrap("start redis-server (install redis-server: scripts/bootstrap)");
  auto server = std::unique_ptr<LocalServer>(new LocalServer(options, std::move(*proc)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (auto c = Client::connect(server->url(), std::chrono::milliseconds(200))) {
      if (auto r = c->command({"PING"}); r && r->str == "PONG") break;
    }
    if (!server->process_.running()) {
      return unavailable("redis-server exited during start-up (status " +
                         std::to_string(server->process_.exit_status().value_or(-1)) + "); see " +
                         options.log_path);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return unavailable("redis-server did not answer within 30 s; see " + options.log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  log.info("redis ready", {{"url", redact_url(server->url())}, {"pid", server->process_.pid()}});
  return server;
}

LocalServer::~LocalServer() { stop(); }

void LocalServer::stop() {
  if (process_.valid() && process_.running()) process_.stop(std::chrono::seconds(10));
}

}  // namespace hi::redis
