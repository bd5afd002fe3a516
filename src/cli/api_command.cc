// `hashinsight api`: the HTTP API (src/api) on HTTP_ADDRESS:HTTP_PORT until SIGTERM, then a
// graceful stop that answers what is in flight.
#include <sys/resource.h>

#include <condition_variable>
#include <mutex>

#include "api/service.h"
#include "cli/common.h"
#include "core/metrics.h"
#include "http/server.h"

namespace hi::cli {

api::ServiceOptions api_options(const Config& cfg, const StackUrls& urls) {
  api::ServiceOptions o;
  o.database_url = urls.database_url;
  o.db_role = cfg.str("DB_APP_ROLE");
  o.redis_url = urls.cache_redis();
  o.db_connections = static_cast<std::size_t>(cfg.integer("API_WORKERS"));
  o.bus = bus_options(cfg, urls);
  o.secrets_dir = data_dir(cfg) + "/secrets";
  o.database_ms_degraded = static_cast<double>(cfg.integer("HEALTH_DB_MS"));
  o.outbox_backlog_degraded = cfg.integer("HEALTH_OUTBOX_BACKLOG");
  o.consumer_lag_degraded = cfg.integer("HEALTH_CONSUMER_LAG");
  o.relay_lag_degraded_bytes = cfg.integer("HEALTH_RELAY_LAG_BYTES");
  o.dlq_degraded = cfg.integer("HEALTH_DLQ");
  o.forecast_age_degraded_s = cfg.integer("HEALTH_FORECAST_AGE_S");
  o.portfolio_cache_ttl = std::chrono::seconds(cfg.integer("CACHE_PORTFOLIO_TTL_S"));
  o.forecast_cache_ttl = std::chrono::seconds(cfg.integer("CACHE_FORECAST_TTL_S"));
  o.stream_heartbeat = std::chrono::milliseconds(cfg.integer("STREAM_HEARTBEAT_MS"));
  o.web_dir = cfg.str("WEB_DIR");
  return o;
}

void add_api_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("api", "serve the HTTP API");
  cmd->add_option_function<std::string>(
      "--port", [&flags](const std::string& v) { flags.overrides["HTTP_PORT"] = v; },
      "listen port (HTTP_PORT)");
  cmd->add_option_function<std::string>(
      "--address", [&flags](const std::string& v) { flags.overrides["HTTP_ADDRESS"] = v; },
      "listen address (HTTP_ADDRESS)");
  cmd->callback([&flags] {
    const Config cfg = load_config(flags);
    arm_failpoints_for(cfg, "api");
    const StackUrls urls = stack_urls(cfg);
    if (urls.database_url.empty()) {
      fail(kExitUsage, "DATABASE_URL is not set and no running stack was found");
    }
    if (urls.redis_url.empty()) fail(kExitUsage, "REDIS_URL is not set");
    Logger log("api");
    // Thousands of open streams need thousands of descriptors: take the hard limit.
    if (rlimit nofile{};
        ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    api::ServiceOptions o = api_options(cfg, urls);
    o.tokens.secret = cfg.is_set("JWT_SECRET")
                          ? cfg.str("JWT_SECRET")
                          : read_or_create_secret(data_dir(cfg), "jwt_secret", 32);
    // Before any thread starts (the service's refresher): they inherit the blocked signals.
    std::stop_source stop;
    auto signals = stop_on_signals(stop);
    Metrics metrics;
    api::Service service(o, metrics, log);
    http::Router router;
    service.add_routes(router);
    http::ServerOptions so;
    so.address = cfg.str("HTTP_ADDRESS");
    so.port = static_cast<std::uint16_t>(cfg.integer("HTTP_PORT"));
    so.workers = o.db_connections;
    so.metrics = &metrics;
    auto server = http::Server::start(so, std::move(router), log);
    if (!server) fail(kExitFailure, "api: " + server.error().message);
    log.info("api listening", {{"address", so.address}, {"port", (*server)->port()}});
    std::mutex mu;
    std::condition_variable cv;
    std::stop_callback wake(stop.get_token(), [&] { cv.notify_all(); });
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stop.stop_requested(); });
    }
    (*server)->stop();
    signals.request_stop();
    log.info("api stopped", {});
  });
}

}  // namespace hi::cli
