// `hashinsight relay`: the CDC relay (logical replication, or the polling fallback).
#include <signal.h>

#include <cstdio>
#include <memory>
#include <thread>

#include "cdc/poller.h"
#include "cdc/relay.h"
#include "cli/common.h"
#include "core/metrics.h"
#include "core/strings.h"
#include "http/part_endpoint.h"

namespace hi::cli {

bus::BusOptions bus_options(const Config& cfg, const StackUrls& urls) {
  bus::BusOptions b;
  auto kind = bus::parse_bus_kind(cfg.str("BUS"));
  if (!kind) fail(kExitUsage, "BUS: " + kind.error().message);
  b.kind = *kind;
  b.redis_url = urls.redis_url;
  b.kafka_brokers = urls.kafka_brokers;
  b.kafka_partitions = static_cast<int>(cfg.integer("KAFKA_PARTITIONS"));
  b.kafka_replication_factor = static_cast<int>(cfg.integer("KAFKA_REPLICATION_FACTOR"));
  b.kafka_compression = cfg.str("KAFKA_COMPRESSION");
  b.kafka_linger_ms = static_cast<int>(cfg.integer("KAFKA_LINGER_MS"));
  for (auto [setting, into] :
       {std::pair{"KAFKA_PRODUCER_PROPERTIES", &b.kafka_producer_properties},
        std::pair{"KAFKA_CONSUMER_PROPERTIES", &b.kafka_consumer_properties}}) {
    for (const std::string& item : split_list(cfg.str(setting))) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0) {
        fail(kExitUsage, std::string(setting) + ": '" + item + "' is not name=value");
      }
      into->emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
  }
  return b;
}

cdc::RelayOptions relay_options(const Config& cfg) {
  const StackUrls urls = stack_urls(cfg);
  if (urls.database_url.empty()) {
    fail(kExitUsage, "DATABASE_URL is not set and no running stack was found");
  }
  if (cfg.str("BUS") == "redis" && urls.redis_url.empty()) {
    fail(kExitUsage, "BUS=redis needs REDIS_URL");
  }
  if (cfg.str("BUS") == "kafka" && urls.kafka_brokers.empty()) {
    fail(kExitUsage, "BUS=kafka needs KAFKA_BROKERS (only `hashinsight up` hosts a mock cluster)");
  }
  cdc::RelayOptions o;
  // The relay logs in as hashinsight_relay (REPLICATION, BYPASSRLS, the outbox only) through
  // RELAY_DATABASE_URL, for its replication and its ordinary connection alike.
  o.database_url =
      cfg.is_set("RELAY_DATABASE_URL") ? cfg.str("RELAY_DATABASE_URL") : urls.database_url;
  o.replication_url = o.database_url;
  o.redis_url = urls.cache_redis();
  o.slot = cfg.str("RELAY_SLOT");
  o.publication = cfg.str("RELAY_PUBLICATION");
  for (const std::string& t : split_list(cfg.str("RELAY_CAPTURE_TABLES"))) {
    o.capture_tables.push_back(t.find('.') == std::string::npos ? "public." + t : t);
  }
  o.routes = cfg.str("RELAY_ROUTES");
  o.unknown_topic = cfg.str("RELAY_UNKNOWN_TOPIC");
  o.format =
      cfg.str("RELAY_FORMAT") == "debezium" ? cdc::Format::kDebezium : cdc::Format::kEnvelope;
  o.max_inflight = static_cast<std::size_t>(cfg.integer("RELAY_MAX_INFLIGHT"));
  o.heartbeat = std::chrono::milliseconds(cfg.integer("RELAY_HEARTBEAT_MS"));
  o.lag_warn_bytes = cfg.integer("RELAY_LAG_WARN_BYTES");
  o.snapshot_pause = std::chrono::milliseconds(cfg.integer("RELAY_SNAPSHOT_PAUSE_MS"));
  o.retention_hours = static_cast<int>(cfg.integer("OUTBOX_RETENTION_HOURS"));
  o.stream_keep = std::chrono::hours(cfg.integer("STREAM_RETENTION_HOURS"));
  o.bus = bus_options(cfg, urls);
  if (auto routes = cdc::RouteTable::parse(o.routes, o.unknown_topic); !routes) {
    fail(kExitUsage, routes.error().message);
  }
  return o;
}

// Blocks SIGTERM/SIGINT and returns a thread that requests `stop` when one arrives.
std::jthread stop_on_signals(std::stop_source stop) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return std::jthread([stop, set](std::stop_token token) mutable {
    while (!token.stop_requested()) {
      timespec t{0, 200'000'000};
      const int sig = sigtimedwait(&set, nullptr, &t);
      if (sig == SIGTERM || sig == SIGINT) {
        stop.request_stop();
        return;
      }
      if (stop.stop_requested()) return;
    }
  });
}

void add_relay_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("relay", "stream the outbox (and captured tables) to the bus");
  auto recreate = std::make_shared<bool>(false);
  cmd->add_option_function<std::string>(
      "--mode", [&flags](const std::string& v) { flags.overrides["RELAY_MODE"] = v; },
      "cdc (logical replication) or poll (RELAY_MODE)");
  cmd->add_option_function<std::string>(
      "--format", [&flags](const std::string& v) { flags.overrides["RELAY_FORMAT"] = v; },
      "envelope or debezium (RELAY_FORMAT)");
  cmd->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; }, "redis or kafka");
  cmd->add_option_function<std::string>(
      "--slot", [&flags](const std::string& v) { flags.overrides["RELAY_SLOT"] = v; },
      "replication slot (RELAY_SLOT)");
  cmd->add_option_function<std::string>(
      "--publication", [&flags](const std::string& v) { flags.overrides["RELAY_PUBLICATION"] = v; },
      "publication (RELAY_PUBLICATION)");
  cmd->add_option_function<std::string>(
      "--capture", [&flags](const std::string& v) { flags.overrides["RELAY_CAPTURE_TABLES"] = v; },
      "tables to capture as cdc.<schema>.<table>: schema.table,... (RELAY_CAPTURE_TABLES)");
  cmd->add_option_function<std::string>(
      "--metrics-port", [&flags](const std::string& v) { flags.overrides["METRICS_PORT"] = v; },
      "serve /metrics and /alive here (METRICS_PORT)");
  cmd->add_flag("--recreate-slot", *recreate,
                "drop an invalidated slot, recreate it and republish the outbox from a snapshot");
  cmd->callback([&flags, recreate] {
    const Config cfg = load_config(flags);
    arm_failpoints_for(cfg, "relay");
    cdc::RelayOptions options = relay_options(cfg);
    options.recreate_slot = *recreate;
    // Signals first: the endpoint's thread inherits the mask, so SIGTERM reaches the waiter
    // (delivered to a thread that does not block it, it would end the process at once).
    std::stop_source stop;
    auto signals = stop_on_signals(stop);
    Metrics metrics;
    Logger log("relay");
    auto endpoint =
        http::start_part_endpoint(static_cast<int>(cfg.integer("METRICS_PORT")), metrics, log);
    if (!endpoint) fail(kExitFailure, "metrics endpoint: " + endpoint.error().message);
    Status s;
    if (cfg.str("RELAY_MODE") == "poll") {
      cdc::Poller poller(options, static_cast<std::size_t>(cfg.integer("RELAY_POLL_BATCH")),
                         metrics, log);
      s = poller.run(stop.get_token());
    } else {
      cdc::Relay relay(options, metrics, log);
      s = relay.run(stop.get_token());
    }
    signals.request_stop();
    if (!s) fail(kExitFailure, "relay: " + s.error().message);
    log.info("relay stopped", {});
  });
}

}  // namespace hi::cli
