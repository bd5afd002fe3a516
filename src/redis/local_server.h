// A private redis-server started and stopped by this program (`hashinsight up`, tests,
// benchmarks): loopback only, data in its own directory, AOF on with appendfsync always by
// default (so an acknowledged stream entry survives a crash of the server or of the machine).
#pragma once

#include <memory>
#include <string>

#include "core/log.h"
#include "core/process.h"
#include "core/result.h"

namespace hi::redis {

struct LocalServerOptions {
  std::string data_dir;
  std::string log_path;  // empty = data_dir/../logs/redis.log
  int port = 0;
  bool durable = true;  // false: no AOF (tests that do not restart the server)
  // AOF fsync policy: "always" (an acknowledged write survives a crash of the machine),
  // "everysec" (loses up to a second of acknowledged writes then) or "no".
  std::string appendfsync = "always";
  // Required of every client (AUTH); empty = none. Kept out of the command line (`ps`): it
  // goes in a mode-600 config file in data_dir. URL-safe characters only.
  std::string password;
};

class LocalServer {
 public:
  static Result<std::unique_ptr<LocalServer>> start(const LocalServerOptions& options,
                                                    const Logger& log);
  ~LocalServer();
  // redis://:PASSWORD@127.0.0.1:PORT/0
  std::string url() const {
    return "redis://" + (options_.password.empty() ? "" : ":" + options_.password + "@") +
           "127.0.0.1:" + std::to_string(options_.port) + "/0";
  }
  int port() const { return options_.port; }
  Process& process() { return process_; }
  void stop();

 private:
  LocalServer(LocalServerOptions options, Process process)
      : options_(std::move(options)), process_(std::move(process)) {}
  LocalServerOptions options_;
  Process process_;
};

}  // namespace hi::redis
