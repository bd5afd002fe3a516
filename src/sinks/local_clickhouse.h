// A private clickhouse-server (Debian's 18.16) started and stopped by this program: the
// ClickHouse destination of the sink tests and of `hashinsight bench sink`. Loopback only, data
// in its own directory, the `default` user without a password (nothing leaves the machine).
#pragma once

#include <memory>
#include <string>

#include "core/log.h"
#include "core/process.h"
#include "core/result.h"

namespace hi::sinks {

struct LocalClickHouseOptions {
  std::string data_dir;  // created when missing
  int http_port = 0;     // 0: a free port
  int tcp_port = 0;      // 0: a free port (the native protocol; unused, but it must listen)
  // Also serve HTTPS with this certificate and key (PEM) when set; https_port 0: a free port.
  std::string tls_cert_file;
  std::string tls_key_file;
  int https_port = 0;
};

class LocalClickHouse {
 public:
  // kNotFound when clickhouse-server is not installed; kUnavailable when it did not answer
  // /ping within 60 s (its log is in data_dir/clickhouse.log).
  static Result<std::unique_ptr<LocalClickHouse>> start(LocalClickHouseOptions options,
                                                        const Logger& log);
  ~LocalClickHouse();

  // http://127.0.0.1:PORT
  std::string url() const { return "http://127.0.0.1:" + std::to_string(options_.http_port); }
  int http_port() const { return options_.http_port; }
  // https://127.0.0.1:PORT, when started with a certificate.
  std::string https_url() const {
    return "https://127.0.0.1:" + std::to_string(options_.https_port);
  }
  Process& process() { return process_; }
  // Stops the server (SIGTERM, then SIGKILL); start_again() brings it back on the same ports
  // with the same data.
  void stop();
  Status start_again();

 private:
  explicit LocalClickHouse(LocalClickHouseOptions options) : options_(std::move(options)) {}
  Status spawn_and_wait();

  LocalClickHouseOptions options_;
  Process process_;
};

}  // namespace hi::sinks
