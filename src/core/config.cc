#include "core/config.h"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace hi {
namespace {

using K = SettingKind;

// The order here is the order of .env.example.
constexpr SettingSpec kSettings[] = {
    // --- general
    {"HI_DATA_DIR", "",
     "data directory of the embedded stack (default ./var, or /var/lib/hashinsight as root)",
     K::kString, 0, 0, "", "general"},
    {"HI_PORT_BASE", "0",
     "first port of the embedded stack: PostgreSQL N, Redis N+1, API N+2 (0 = free ports, "
     "remembered in up.json)",
     K::kInt, 0, 65000, "", "general"},
    {"HI_FAILPOINTS", "",
     "failpoints to arm, name=[N*]crash|error|sleep(MS),... (tests; see docs/failpoints.md)",
     K::kString, 0, 0, "", "general"},
    {"LOG_LEVEL", "info", "debug, info, warn or error", K::kEnum, 0, 0, "debug,info,warn,error",
     "general"},
    {"LOG_FORMAT", "json", "json (one object per line) or text", K::kEnum, 0, 0, "json,text",
     "general"},
    // --- database
    {"DATABASE_URL", "",
     "PostgreSQL URL of the owner role (migrations); empty = the embedded private cluster",
     K::kPgUrl, 0, 0, "", "database"},
    {"RELAY_DATABASE_URL", "",
     "PostgreSQL URL for the relay's replication connection; empty = DATABASE_URL", K::kPgUrl, 0, 0,
     "", "database"},
    {"DB_APP_ROLE", "hashinsight_app",
     "role the API and workers SET ROLE to (subject to row-level security)", K::kString, 0, 0, "",
     "database"},
    // --- redis
    {"REDIS_URL", "",
     "Redis URL (cache, locks, streams bus); empty = the embedded private redis-server",
     K::kRedisUrl, 0, 0, "", "redis"},
    {"CACHE_REDIS_URL", "",
     "Redis for what may be lost (the API's cache, rate limits and sessions, the workers' locks, "
     "live notices, status): kept off the bus Redis so that none of it waits for the bus's "
     "appendfsync; empty = REDIS_URL's server when REDIS_URL is given, else a second embedded "
     "redis-server without persistence",
     K::kRedisUrl, 0, 0, "", "redis"},
    {"REDIS_APPENDFSYNC", "always",
     "AOF fsync of the embedded redis-server: always (an acknowledged event survives a machine "
     "crash), everysec or no",
     K::kEnum, 0, 0, "always,everysec,no", "redis"},
    // --- bus
    {"BUS", "redis", "event bus: redis (Redis Streams) or kafka", K::kEnum, 0, 0, "redis,kafka",
     "bus"},
    {"KAFKA_BROKERS", "",
     "Kafka bootstrap servers host:port,...; empty with BUS=kafka under `up` = in-memory mock "
     "cluster",
     K::kBrokers, 0, 0, "", "bus"},
    {"KAFKA_PARTITIONS", "6", "partitions of each topic the platform creates", K::kInt, 1, 1024, "",
     "bus"},
    {"KAFKA_REPLICATION_FACTOR", "1", "replication factor of created topics", K::kInt, 1, 16, "",
     "bus"},
    {"KAFKA_COMPRESSION", "lz4", "producer compression codec", K::kEnum, 0, 0,
     "none,lz4,zstd,gzip,snappy", "bus"},
    {"KAFKA_PRODUCER_PROPERTIES", "",
     "extra librdkafka producer properties: name=value,... (applied last)", K::kString, 0, 0, "",
     "bus"},
    {"KAFKA_CONSUMER_PROPERTIES", "",
     "extra librdkafka consumer properties: name=value,... (applied last; `up` sets "
     "fetch.wait.max.ms=5 when it hosts the mock cluster)",
     K::kString, 0, 0, "", "bus"},
    {"KAFKA_LINGER_MS", "0",
     "producer linger in ms; 0 sends what is ready at once (batches still form under load)",
     K::kInt, 0, 1000, "", "bus"},
    // --- api
    {"HTTP_PORT", "8080", "API listen port", K::kInt, 1, 65535, "", "api"},
    {"HTTP_ADDRESS", "127.0.0.1", "API listen address (0.0.0.0: every interface)", K::kString, 0, 0,
     "", "api"},
    {"METRICS_PORT", "0",
     "port of a relay's or worker's /metrics and /alive (loopback); 0 = none (up assigns one)",
     K::kInt, 0, 65535, "", "api"},
    {"API_WORKERS", "8", "threads that run the API's database work; also its database connections",
     K::kInt, 1, 256, "", "api"},
    {"JWT_SECRET", "",
     "HMAC secret of API tokens; empty = generated into DATA_DIR/secrets on first run", K::kString,
     0, 0, "", "api"},
    {"CACHE_PORTFOLIO_TTL_S", "600",
     "GET /api/portfolio: a cached answer younger than this is fresh; older it is served stale "
     "and refreshed once; it expires at twice this",
     K::kInt, 1, 86400, "", "api"},
    {"CACHE_FORECAST_TTL_S", "1800",
     "GET /api/intelligence/forecast: as CACHE_PORTFOLIO_TTL_S, for the forecast", K::kInt, 1,
     86400, "", "api"},
    {"WEB_DIR", "",
     "serve the dashboard's files from this directory (web/) instead of the copy built into the "
     "binary: for working on the page",
     K::kString, 0, 0, "", "api"},
    {"STREAM_HEARTBEAT_MS", "15000",
     "GET /api/portfolio/stream: a comment line this often keeps idle streams open", K::kInt, 100,
     3600000, "", "api"},
    {"HEALTH_DB_MS", "100", "health: a database answering slower than this (ms) is degraded",
     K::kInt, 1, 60000, "", "api"},
    {"HEALTH_OUTBOX_BACKLOG", "1000",
     "health: more events than this committed and not yet on the bus is degraded", K::kInt, 1,
     1LL << 40, "", "api"},
    {"HEALTH_CONSUMER_LAG", "1000", "health: a consumer group this many events behind is degraded",
     K::kInt, 1, 1LL << 40, "", "api"},
    {"HEALTH_RELAY_LAG_BYTES", "67108864",
     "health: a replication slot retaining this much WAL (bytes) behind the server is degraded",
     K::kInt, 1, 1LL << 50, "", "api"},
    {"HEALTH_DLQ", "10", "health: this many parked (dead-lettered) events is degraded", K::kInt, 1,
     1LL << 40, "", "api"},
    {"HEALTH_FORECAST_AGE_S", "172800",
     "health: a newest forecast older than this (seconds) is degraded", K::kInt, 1, 1LL << 40, "",
     "api"},
    // --- relay
    {"RELAY_MODE", "cdc",
     "cdc (logical replication) or poll (FOR UPDATE SKIP LOCKED + LISTEN/NOTIFY)", K::kEnum, 0, 0,
     "cdc,poll", "relay"},
    {"RELAY_SLOT", "hashinsight_outbox", "logical replication slot name", K::kString, 0, 0, "",
     "relay"},
    {"RELAY_PUBLICATION", "hashinsight_outbox", "publication name", K::kString, 0, 0, "", "relay"},
    {"RELAY_FORMAT", "envelope",
     "message format: envelope (ours) or debezium (outbox EventRouter shape)", K::kEnum, 0, 0,
     "envelope,debezium", "relay"},
    {"RELAY_ROUTES", "",
     "route table overriding kind-prefix routing: prefix=topic,... (e.g. miner=outbox.event.miner)",
     K::kString, 0, 0, "", "relay"},
    {"RELAY_UNKNOWN_TOPIC", "events.dlq", "topic for events whose kind prefix has no route",
     K::kString, 0, 0, "", "relay"},
    {"RELAY_CAPTURE_TABLES", "",
     "extra tables captured as cdc.<schema>.<table> events: schema.table,...", K::kString, 0, 0, "",
     "relay"},
    {"RELAY_HEARTBEAT_MS", "10000", "idle heartbeat interval (pg_logical_emit_message); 0 = off",
     K::kInt, 0, 3600000, "", "relay"},
    {"RELAY_SNAPSHOT_PAUSE_MS", "0",
     "pause between two chunks of a snapshot (`hashinsight snapshot`), to spare a busy database",
     K::kInt, 0, 600000, "", "relay"},
    {"RELAY_LAG_WARN_BYTES", "67108864", "log a warning when the slot retains more WAL than this",
     K::kInt, 0, 1LL << 50, "", "relay"},
    {"RELAY_MAX_INFLIGHT", "50000",
     "events in flight to the bus before the relay stops reading WAL", K::kInt, 1, 10000000, "",
     "relay"},
    {"STREAM_RETENTION_HOURS", "24",
     "Redis Streams: acknowledged entries are trimmed once older than this (never unread ones)",
     K::kInt, 0, 87600, "", "relay"},
    {"RELAY_POLL_BATCH", "500", "rows claimed per batch in poll mode", K::kInt, 1, 100000, "",
     "relay"},
    {"OUTBOX_RETENTION_HOURS", "168", "relayed outbox rows older than this are deleted; 0 = keep",
     K::kInt, 0, 87600, "", "relay"},
    // --- consumers
    {"CONSUMER_MAX_ATTEMPTS", "3", "attempts before an event is dead-lettered", K::kInt, 1, 100, "",
     "consumers"},
    {"CONSUMER_MAX_CRASHES", "3",
     "deliveries of a message that each killed its consumer before it is dead-lettered unattempted",
     K::kInt, 1, 100, "", "consumers"},
    {"CONSUMER_BATCH_SIZE", "4096",
     "most events taken per batch (a batch is what is ready: no waiting to fill it)", K::kInt, 1,
     100000, "", "consumers"},
    {"CONSUMER_CLAIM_IDLE_MS", "30000",
     "Redis Streams: reclaim entries pending longer than this from dead consumers", K::kInt, 100,
     86400000, "", "consumers"},
    {"LOCK_LEASE_MS", "10000", "lease of lock:recalc:{user_id}", K::kInt, 10, 3600000, "",
     "consumers"},
    {"CRM_WEBHOOK_URL", "", "where the crm worker delivers events", K::kHttpUrl, 0, 0, "",
     "consumers"},
    {"CRM_WEBHOOK_TIMEOUT_MS", "5000", "crm webhook timeout", K::kInt, 1, 600000, "", "consumers"},
};

bool has_scheme(std::string_view v, std::string_view scheme) {
  return v.size() > scheme.size() && v.substr(0, scheme.size()) == scheme;
}

std::optional<std::string> check_host_port(std::string_view hp) {
  const auto colon = hp.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return "expected host:port";
  const auto port = hp.substr(colon + 1);
  int p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
    return "bad port '" + std::string(port) + "'";
  }
  return std::nullopt;
}

const SettingSpec* find_spec(std::string_view name) {
  for (const auto& s : kSettings) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

}  // namespace

std::span<const SettingSpec> settings() { return kSettings; }

EnvLookup process_env() {
  return [](const char* name) { return std::getenv(name); };
}

std::optional<std::string> validate_setting(const SettingSpec& spec, std::string_view v) {
  switch (spec.kind) {
    case K::kString:
      return std::nullopt;
    case K::kInt: {
      std::int64_t n = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (v.empty() || ec != std::errc() || ptr != v.data() + v.size()) {
        return "not an integer";
      }
      if (n < spec.min || n > spec.max) {
        return "out of range " + std::to_string(spec.min) + ".." + std::to_string(spec.max);
      }
      return std::nullopt;
    }
    case K::kEnum: {
      std::string_view choices = spec.choices;
      while (!choices.empty()) {
        const auto comma = choices.find(',');
        if (choices.substr(0, comma) == v) return std::nullopt;
        if (comma == std::string_view::npos) break;
        choices.remove_prefix(comma + 1);
      }
      std::string allowed(spec.choices);
      for (auto& c : allowed) {
        if (c == ',') c = '|';
      }
      return "must be one of " + allowed;
    }
    case K::kPgUrl:
      if (v.empty() || has_scheme(v, "postgresql://") || has_scheme(v, "postgres://")) {
        return std::nullopt;
      }
      return "must be a postgresql:// URL";
    case K::kRedisUrl:
      if (v.empty() || has_scheme(v, "redis://")) return std::nullopt;
      return "must be a redis:// URL";
    case K::kHttpUrl:
      if (v.empty() || has_scheme(v, "http://") || has_scheme(v, "https://")) return std::nullopt;
      return "must be an http:// or https:// URL";
    case K::kBrokers: {
      std::string_view rest = v;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        if (auto bad = check_host_port(rest.substr(0, comma))) return bad;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

Result<Config> Config::load(const EnvLookup& env,
                            const std::map<std::string, std::string>& overrides) {
  Config cfg;
  std::string errors;
  auto add_error = [&](std::string_view name, std::string_view value, std::string_view why) {
    if (!errors.empty()) errors += "; ";
    errors += std::string(name) + "='" + std::string(value) + "': " + std::string(why);
  };
  for (const auto& [name, value] : overrides) {
    if (find_spec(name) == nullptr) add_error(name, value, "unknown setting");
  }
  for (const auto& spec : kSettings) {
    std::string value(spec.default_value);
    if (const char* e = env(std::string(spec.name).c_str()); e != nullptr) value = e;
    if (auto it = overrides.find(std::string(spec.name)); it != overrides.end()) {
      value = it->second;
    }
    if (auto bad = validate_setting(spec, value)) add_error(spec.name, value, *bad);
    cfg.values_.emplace(std::string(spec.name), std::move(value));
  }
  if (!errors.empty()) return invalid_argument("invalid configuration: " + errors);
  return cfg;
}

const std::string& Config::str(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    throw std::logic_error("unknown setting " + std::string(name));  // a programming error
  }
  return it->second;
}

std::int64_t Config::integer(std::string_view name) const {
  return std::strtoll(str(name).c_str(), nullptr, 10);  // validated at load
}

std::string env_example() {
  std::string out =
      "# Every setting of HashInsight CDC with its default. Flags of the `hashinsight` command\n"
      "# override these; an invalid value stops start-up with exit code 2 naming the variable.\n";
  std::string_view group;
  for (const auto& s : kSettings) {
    if (s.group != group) {
      group = s.group;
      out += "\n# --- " + std::string(group) + "\n";
    }
    out += "# " + std::string(s.help) + "\n";
    out += std::string(s.name) + "=" + std::string(s.default_value) + "\n";
  }
  return out;
}

}  // namespace hi
