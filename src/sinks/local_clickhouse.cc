#include "sinks/local_clickhouse.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/net.h"
#include "http/client.h"

namespace hi::sinks {
namespace {

constexpr const char* kServer = "/usr/sbin/clickhouse-server";

Status write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) return unavailable("cannot write " + path);
  return {};
}

}  // namespace

Result<std::unique_ptr<LocalClickHouse>> LocalClickHouse::start(LocalClickHouseOptions options,
                                                                const Logger& log) {
  if (::access(kServer, X_OK) != 0) {
    return not_found(
        "clickhouse-server is not installed (Debian: apt-get install "
        "clickhouse-server; scripts/bootstrap does)");
  }
  std::error_code ec;
  for (const char* sub : {"", "/data", "/tmp", "/user_files", "/format_schemas"}) {
    std::filesystem::create_directories(options.data_dir + sub, ec);
    if (ec) return unavailable("cannot create " + options.data_dir + sub + ": " + ec.message());
  }
  if (options.http_port == 0) options.http_port = free_loopback_port();
  if (options.tcp_port == 0) options.tcp_port = free_loopback_port();
  const std::string& d = options.data_dir;
  std::string https;
  if (!options.tls_cert_file.empty()) {
    if (options.https_port == 0) options.https_port = free_loopback_port();
    https = "  <https_port>" + std::to_string(options.https_port) +
            "</https_port>\n"
            "  <openSSL><server><certificateFile>" +
            options.tls_cert_file + "</certificateFile><privateKeyFile>" + options.tls_key_file +
            "</privateKeyFile><verificationMode>none</verificationMode>"
            "<loadDefaultCAFile>false</loadDefaultCAFile>"
            "<disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>"
            "</server></openSSL>\n";
  }
  const std::string config =
      "<?xml version=\"1.0\"?>\n<yandex>\n"
      "  <logger><level>warning</level><log>" +
      d +
      "/clickhouse.log</log>"
      "<errorlog>" +
      d +
      "/clickhouse.err.log</errorlog></logger>\n"
      "  <http_port>" +
      std::to_string(options.http_port) +
      "</http_port>\n"
      "  <tcp_port>" +
      std::to_string(options.tcp_port) + "</tcp_port>\n" + https +
      "  <listen_host>127.0.0.1</listen_host>\n"
      "  <path>" +
      d +
      "/data/</path>\n"
      "  <tmp_path>" +
      d +
      "/tmp/</tmp_path>\n"
      "  <user_files_path>" +
      d +
      "/user_files/</user_files_path>\n"
      "  <format_schema_path>" +
      d +
      "/format_schemas/</format_schema_path>\n"
      "  <users_config>" +
      d +
      "/users.xml</users_config>\n"
      "  <default_profile>default</default_profile>\n"
      "  <default_database>default</default_database>\n"
      "  <mark_cache_size>268435456</mark_cache_size>\n"
      "  <uncompressed_cache_size>268435456</uncompressed_cache_size>\n"
      "  <max_concurrent_queries>50</max_concurrent_queries>\n"
      "</yandex>\n";
  const std::string users =
      "<?xml version=\"1.0\"?>\n<yandex>\n"
      "  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>\n"
      "  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip>"
      "</networks><profile>default</profile><quota>default</quota></default></users>\n"
      "  <quotas><default></default></quotas>\n"
      "</yandex>\n";
  if (auto s = write_file(d + "/config.xml", config); !s) return s.error();
  if (auto s = write_file(d + "/users.xml", users); !s) return s.error();
  std::unique_ptr<LocalClickHouse> server(new LocalClickHouse(std::move(options)));
  if (auto s = server->spawn_and_wait(); !s) return s.error();
  log.info("clickhouse started", {{"url", server->url()}, {"dir", server->options_.data_dir}});
  return server;
}

Status LocalClickHouse::spawn_and_wait() {
  SpawnOptions o;
  o.argv = {kServer, "--config-file=" + options_.data_dir + "/config.xml"};
  o.output_path = options_.data_dir + "/clickhouse.out";
  o.cwd = options_.data_dir;
  auto p = Process::spawn(o);
  if (!p) return p.error();
  process_ = std::move(*p);
  auto ping = http::parse_url(url() + "/ping");
  if (!ping) return ping.error();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process_.running()) {
      return unavailable("clickhouse-server exited at start; see " + options_.data_dir +
                         "/clickhouse.err.log");
    }
    http::ClientRequest req;
    req.url = *ping;
    req.timeout = std::chrono::milliseconds(1000);
    if (auto r = http::fetch(req); r && r->status == 200) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return unavailable("clickhouse-server did not answer /ping within 60 s; see " +
                     options_.data_dir + "/clickhouse.err.log");
}

void LocalClickHouse::stop() {
  if (process_.valid()) process_.stop(std::chrono::milliseconds(10000));
}

Status LocalClickHouse::start_again() { return spawn_and_wait(); }

LocalClickHouse::~LocalClickHouse() { stop(); }

}  // namespace hi::sinks
