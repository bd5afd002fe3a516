// `hashinsight sink --config FILE --destination NAME`: one destination's sink (sinks/sink.h).
// `hashinsight sink check --config FILE`: validates the file and prints the capture list.
// `hashinsight sink rotate-key`: a new HMAC masking key version (every destination at once).
//
// SIGTERM/SIGINT finish the batch in hand and exit 0.
#include <unistd.h>

#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/ids.h"
#include "core/metrics.h"
#include "http/part_endpoint.h"
#include "sinks/config.h"
#include "sinks/destination.h"
#include "sinks/masking.h"
#include "sinks/sink.h"

namespace hi::cli {
namespace {

struct SinkFlags {
  std::string config;
  std::string destination;
  std::int64_t batch = 0;  // 0: sinks::default_batch_size() of the destination's type
  std::int64_t poll_ms = 500;
  bool no_snapshot = false;
};

sinks::SinksConfig load_or_fail(const Config& cfg, const std::string& given) {
  const std::string path = given.empty() ? data_dir(cfg) + "/sinks.yaml" : given;
  auto c = sinks::load_sinks_config(path);
  if (!c) fail(kExitUsage, c.error().message);
  return std::move(*c);
}

}  // namespace

void add_sink_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand(
      "sink", "replicate captured tables to a destination (PostgreSQL or ClickHouse), masked");
  auto sf = std::make_shared<SinkFlags>();
  cmd->add_option("--config", sf->config, "the sinks file (default: DIR/sinks.yaml)");
  cmd->add_option("--destination", sf->destination, "the destination to run (its name)");
  cmd->add_option("--batch-size", sf->batch,
                  "changes per batch (default: 5000; 20000 for ClickHouse)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--poll-ms", sf->poll_ms, "longest wait for a batch")
      ->check(CLI::Range(1, 60000));
  cmd->add_flag("--no-snapshot", sf->no_snapshot,
                "do not request a snapshot of a table the destination does not have yet");
  cmd->add_option_function<std::string>(
      "--metrics-port", [&flags](const std::string& v) { flags.overrides["METRICS_PORT"] = v; },
      "serve /metrics and /alive here (METRICS_PORT)");
  cmd->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; },
      "redis or kafka (BUS)");

  auto* check =
      cmd->add_subcommand("check", "validate the sinks file; print the tables to capture");
  check->fallthrough();
  check->callback([&flags, sf] {
    const Config cfg = load_config(flags);
    const auto config = load_or_fail(cfg, sf->config);
    nlohmann::json out = {{"destinations", nlohmann::json::array()},
                          {"capture", config.source_tables()}};
    for (const auto& d : config.destinations) {
      out["destinations"].push_back({{"name", d.name},
                                     {"type", std::string(sinks::to_string(d.type))},
                                     {"tables", d.tables.size()}});
    }
    std::cout << out.dump() << "\n";
  });

  auto* letters = cmd->add_subcommand(
      "dead-letters",
      "the changes a destination parked, newest first: one JSON object per line (masked as "
      "stored)");
  letters->fallthrough();
  auto limit = std::make_shared<std::int64_t>(100);
  letters->add_option("--limit", *limit, "at most N (default 100)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}));
  letters->callback([&flags, sf, limit] {
    const Config cfg = load_config(flags);
    if (sf->destination.empty()) fail(kExitUsage, "sink dead-letters: --destination is required");
    const auto config = load_or_fail(cfg, sf->config);
    const sinks::DestinationSpec* spec = config.destination(sf->destination);
    if (spec == nullptr) {
      fail(kExitUsage, "sink: no destination '" + sf->destination + "' in the sinks file");
    }
    const sinks::DestinationOptions d{spec->name, spec->url, spec->tls};
    auto dest = spec->type == sinks::DestinationType::kPostgres
                    ? sinks::make_postgres_destination(d)
                    : sinks::make_clickhouse_destination(d);
    if (!dest) fail(kExitFailure, dest.error().message);
    if (auto s = (*dest)->connect(); !s) fail(kExitFailure, s.error().message);
    auto parked = (*dest)->parked(*limit);
    if (!parked)
      fail(kExitFailure, "dead letters of " + spec->name + ": " + parked.error().message);
    // The key and the change as JSON (null when none was stored).
    auto as_json = [](const std::string& text) {
      if (text.empty()) return nlohmann::json(nullptr);
      auto j = nlohmann::json::parse(text, nullptr, false);
      return j.is_discarded() ? nlohmann::json(text) : j;
    };
    for (const auto& l : *parked) {
      const nlohmann::json j = {{"destination", spec->name}, {"source_table", l.source_table},
                                {"target", l.target},        {"change_id", l.change_id},
                                {"key", as_json(l.key)},     {"change", as_json(l.change)},
                                {"reason", l.reason},        {"parked_at", l.parked_at}};
      std::cout << j.dump() << "\n";
    }
  });

  auto* rotate = cmd->add_subcommand(
      "rotate-key",
      "add a masking HMAC key version: every destination masks with it from its "
      "next start");
  rotate->fallthrough();
  rotate->callback([&flags] {
    const Config cfg = load_config(flags);
    const std::string secrets = data_dir(cfg) + "/secrets";
    if (auto k = sinks::load_masking_keys(secrets, true); !k) fail(kExitFailure, k.error().message);
    auto v = sinks::rotate_masking_key(secrets);
    if (!v) fail(kExitFailure, v.error().message);
    std::cout << nlohmann::json{{"hmac_version", *v}}.dump() << "\n";
  });

  cmd->callback([&flags, sf, cmd] {
    if (!cmd->get_subcommands().empty()) return;
    const Config cfg = load_config(flags);
    if (sf->destination.empty()) fail(kExitUsage, "sink: --destination NAME is required");
    arm_failpoints_for(cfg, "sink-" + sf->destination);
    const auto config = load_or_fail(cfg, sf->config);
    const sinks::DestinationSpec* dest = config.destination(sf->destination);
    if (dest == nullptr) {
      fail(kExitUsage, "sink: no destination '" + sf->destination + "' in the sinks file");
    }
    const StackUrls urls = stack_urls(cfg);
    if (cfg.str("BUS") == "kafka" && urls.kafka_brokers.empty()) {
      fail(kExitUsage, "BUS=kafka needs KAFKA_BROKERS");
    }
    if (cfg.str("BUS") != "kafka" && urls.redis_url.empty()) {
      fail(kExitUsage, "REDIS_URL is not set and no running stack was found");
    }
    auto keys = sinks::load_masking_keys(data_dir(cfg) + "/secrets", true);
    if (!keys) fail(kExitFailure, "masking keys: " + keys.error().message);

    Logger log("sink");
    sinks::SinkOptions o;
    o.destination = *dest;
    o.bus = bus_options(cfg, urls);
    o.keys = std::move(*keys);
    o.source_database_url = urls.database_url;
    o.status_redis_url = urls.cache_redis();
    o.batch_size =
        sf->batch > 0 ? static_cast<std::size_t>(sf->batch) : sinks::default_batch_size(dest->type);
    o.poll_timeout = std::chrono::milliseconds(sf->poll_ms);
    o.request_snapshots = !sf->no_snapshot;
    o.consumer_name = sinks::sink_group(dest->name) + "-" + host_name() + "-" +
                      std::to_string(::getpid()) + "-" + random_hex(2);
    o.bus.client_id = o.consumer_name;

    // Signals first: threads started later inherit the mask, so SIGTERM reaches the waiter.
    std::stop_source stop;
    auto signals = stop_on_signals(stop);
    Metrics metrics;
    auto endpoint =
        http::start_part_endpoint(static_cast<int>(cfg.integer("METRICS_PORT")), metrics, log);
    if (!endpoint) fail(kExitFailure, "metrics endpoint: " + endpoint.error().message);
    sinks::Sink sink(std::move(o), metrics, log);
    Status s = sink.run(stop.get_token());
    signals.request_stop();
    if (!s) fail(kExitFailure, "sink " + sf->destination + ": " + s.error().message);
  });
}

}  // namespace hi::cli
