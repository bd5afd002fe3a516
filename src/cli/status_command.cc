// `hashinsight status [--json] [--watch] [--url URL]`: the pipeline's health (CONTRACTS "Health
// JSON") as a terminal table, one row per check. It asks the API (`GET /api/health`); when the
// API does not answer, this process makes the same checks itself (api::Service's own health
// code) against the stack's database, Redis and bus, and adds an unhealthy `api` check.
//
// Exit code: 0 healthy, 1 degraded, 2 unhealthy or the API unreachable. `--watch` redraws every
// 2 s until SIGINT/SIGTERM and then exits 0, as watch(1) does.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/service.h"
#include "cli/common.h"
#include "core/metrics.h"
#include "core/time.h"
#include "http/client.h"
#include "http/router.h"

namespace hi::cli {
namespace {

using nlohmann::json;

constexpr auto kWatchPeriod = std::chrono::seconds(2);
// Longer than the API's own slowest check (a pooled connection waits 2 s, the bus probe 1 s).
constexpr auto kFetchTimeout = std::chrono::seconds(5);

struct StatusFlags {
  bool json = false;
  bool watch = false;
  std::string url;
};

// The API's base URL: --url, else the running stack's (DIR/up.json), else HTTP_ADDRESS:HTTP_PORT.
std::string api_base_url(const Config& cfg, const std::string& flag) {
  std::string url = !flag.empty() ? flag : up_json_field(cfg, "api_url");
  if (url.empty()) {
    std::string host = cfg.str("HTTP_ADDRESS");
    if (host == "0.0.0.0") host = "127.0.0.1";
    url = "http://" + host + ":" + cfg.str("HTTP_PORT");
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// The API's answer to GET /api/health (200 and 503 both carry it), or why there is none.
Result<json> fetch_health(const std::string& base) {
  auto url = http::parse_url(base + "/api/health");
  if (!url) return url.error();
  http::ClientRequest request;
  request.url = *url;
  request.timeout = kFetchTimeout;
  auto r = http::fetch(request);
  if (!r) return r.error();
  json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("checks") || !j["checks"].is_object()) {
    return unavailable("HTTP " + std::to_string(r->status) + " without a health answer");
  }
  return j;
}

// The checks made by this process when the API does not answer: the API's own code, run here
// against the stack's servers. The cache check is left out (it counts the API process's reads).
json direct_health(const Config& cfg, const std::string& api_url, const std::string& why) {
  const json api_check = {{"status", "unhealthy"}, {"url", api_url}, {"error", why}};
  const StackUrls urls = stack_urls(cfg);
  if (urls.database_url.empty() || urls.redis_url.empty()) {
    return {{"status", "unhealthy"},
            {"source", "direct"},
            {"checks", {{"api", api_check}}},
            {"error",
             "no DATABASE_URL / REDIS_URL and no running stack (DIR/up.json) to check directly"},
            {"time", format_rfc3339_us(unix_now_us())}};
  }
  api::ServiceOptions o = api_options(cfg, urls);
  // The bus the stack runs on, unless BUS is given here (its default is not a choice).
  if (const std::string bus = up_json_field(cfg, "bus");
      !bus.empty() && o.bus && process_env()("BUS") == nullptr) {
    if (auto kind = bus::parse_bus_kind(bus); kind) o.bus->kind = *kind;
  }
  o.db_connections = 1;
  // The service's warnings (a server down is what this path is for) would tear the table.
  if (log_level() != LogLevel::kDebug) set_log_level(LogLevel::kError);
  Metrics metrics;
  api::Service service(std::move(o), metrics, Logger("status"));
  http::Router router;
  service.add_routes(router);
  const http::RouteMatch match = router.match("GET", {"api", "health"});
  json j;
  if (match.route != nullptr) {
    http::Request request;
    request.method = "GET";
    request.target = request.path = request.route = "/api/health";
    j = json::parse(match.route->handler(request).body, nullptr, false);
  }
  if (!j.is_object() || !j.contains("checks") || !j["checks"].is_object()) {
    j = {{"checks", json::object()}, {"time", format_rfc3339_us(unix_now_us())}};
  }
  j["checks"].erase("cache");
  j["checks"]["api"] = api_check;
  j["status"] = "unhealthy";
  j["source"] = "direct";
  return j;
}

json check_health(const Config& cfg, const std::string& base) {
  auto answer = fetch_health(base);
  if (answer) return std::move(*answer);
  return direct_health(cfg, base, answer.error().message);
}

int exit_code(const json& health) {
  const std::string s = health.value("status", "");
  return s == "healthy" ? kExitOk : s == "degraded" ? kExitFailure : 2;
}

// ---- the table -------------------------------------------------------------------------------

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string milliseconds(const json& v) {
  return v.is_number() ? fixed(v.get<double>(), 2) + " ms" : "-";
}

std::string byte_size(double n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (std::fabs(n) >= 1024 && unit < 4) {
    n /= 1024;
    ++unit;
  }
  return unit == 0 ? fixed(n, 0) + " B" : fixed(n, 1) + " " + kUnits[unit];
}

std::string duration(double seconds) {
  if (seconds < 10) return fixed(seconds, 1) + " s";
  if (seconds < 120) return fixed(seconds, 0) + " s";
  if (seconds < 7200) return fixed(seconds / 60, 0) + " min";
  if (seconds < 2 * 86400) return fixed(seconds / 3600, 1) + " h";
  return fixed(seconds / 86400, 1) + " d";
}

std::string scalar(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// The figures of check `name` in words; fields the table does not know are shown as name=value.
std::string detail_of(const std::string& name, const json& c) {
  std::vector<std::string> parts;
  auto num = [&](const char* field) -> const json& {
    static const json kNull;
    const auto it = c.find(field);
    return it != c.end() && it->is_number() ? *it : kNull;
  };
  if (name == "database" || name == "redis") {
    if (c.contains("response_time_ms")) parts.push_back(milliseconds(c["response_time_ms"]));
  } else if (name == "bus") {
    if (c.contains("kind")) parts.push_back(scalar(c["kind"]));
    if (c.contains("response_time_ms")) parts.push_back(milliseconds(c["response_time_ms"]));
  } else if (name == "outbox") {
    if (!num("backlog").is_null()) parts.push_back("backlog " + num("backlog").dump());
    if (c.contains("oldest") && c["oldest"].is_string()) {
      parts.push_back("oldest " + c["oldest"].get<std::string>());
    }
  } else if (name == "relay") {
    if (!num("lag_bytes").is_null()) {
      parts.push_back("slot lag " + byte_size(num("lag_bytes").get<double>()));
    }
    if (c.contains("wal_status") && c["wal_status"].is_string() &&
        !c["wal_status"].get<std::string>().empty()) {
      parts.push_back("wal " + c["wal_status"].get<std::string>());
    }
    if (c.contains("last_ack_age_ms")) {
      const json& age = num("last_ack_age_ms");
      parts.push_back(age.is_null() ? "no bus ack yet"
                                    : "last ack " + duration(age.get<double>() / 1000) + " ago");
    }
    if (!num("in_flight").is_null()) parts.push_back(num("in_flight").dump() + " in flight");
    if (c.contains("durable") && c["durable"].is_boolean()) {
      parts.push_back(c["durable"].get<bool>() ? "durable" : "NOT durable");
    }
  } else if (name == "consumer") {
    const json& lag = num("lag");
    parts.push_back(lag.is_null() || lag.get<std::int64_t>() < 0 ? "lag unknown"
                                                                 : "lag " + lag.dump());
  } else if (name == "dlq") {
    if (!num("count").is_null()) parts.push_back(num("count").dump() + " parked");
  } else if (name == "forecast") {
    if (c.contains("freshness_sec")) {
      const json& age = num("freshness_sec");
      parts.push_back(age.is_null() ? "no forecast yet"
                                    : "fitted " + duration(age.get<double>()) + " ago");
    }
  } else if (name == "cache") {
    const json& rate = num("hit_rate");
    const json& lookups = num("lookups");
    if (rate.is_null()) {
      parts.push_back("no reads yet");
    } else {
      parts.push_back("hit rate " + fixed(rate.get<double>() * 100, 1) + " %" +
                      (lookups.is_null() ? "" : " of " + lookups.dump() + " reads"));
    }
  } else if (name == "sink") {
    const json& lag = num("lag_seconds");
    if (!lag.is_null()) parts.push_back("lag " + duration(lag.get<double>()));
  } else if (name == "api") {
    if (c.contains("url") && !c.contains("error")) parts.push_back(scalar(c["url"]));
  } else {
    for (const auto& [k, v] : c.items()) {
      if (k != "status" && k != "error") parts.push_back(k + "=" + scalar(v));
    }
  }
  if (c.contains("error")) parts.push_back("error: " + scalar(c["error"]));
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

struct Row {
  std::string check;
  std::string status;
  std::string detail;
};

// One row per check, in the order of the pipeline; checks this table does not know come last.
std::vector<Row> rows_of(const json& checks) {
  std::vector<Row> rows;
  auto add = [&](const std::string& label, const std::string& kind, const json& c) {
    if (!c.is_object()) {
      rows.push_back({label, "-", scalar(c)});
      return;
    }
    rows.push_back({label, c.value("status", "-"), detail_of(kind, c)});
  };
  auto group = [&](const std::string& key, const std::string& kind, const std::string& none) {
    const auto it = checks.find(key);
    if (it == checks.end()) return;
    if (!it->is_object() || it->empty()) {
      rows.push_back({key, "-", none});
      return;
    }
    for (const auto& [name, c] : it->items()) add(kind + " " + name, kind, c);
  };
  static const std::vector<std::string> kOrder = {"api",      "database", "redis",     "bus",
                                                  "outbox",   "relay",    "consumers", "dlq",
                                                  "forecast", "cache",    "sinks"};
  for (const std::string& key : kOrder) {
    if (key == "consumers") {
      group(key, "consumer", "no consumer group reports its status");
    } else if (key == "sinks") {
      group(key, "sink", "no sink reports its status");
    } else if (checks.contains(key)) {
      add(key, key, checks[key]);
    }
  }
  for (const auto& [key, c] : checks.items()) {
    if (std::find(kOrder.begin(), kOrder.end(), key) == kOrder.end()) add(key, key, c);
  }
  return rows;
}

bool use_color() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) != 0 && std::getenv("NO_COLOR") == nullptr &&
         (term == nullptr || std::string(term) != "dumb");
}

std::string painted(const std::string& status, bool color) {
  if (!color) return status;
  const char* code = status == "healthy"     ? "\033[32m"
                     : status == "degraded"  ? "\033[33m"
                     : status == "unhealthy" ? "\033[1;31m"
                                             : "";
  return *code ? code + status + "\033[0m" : status;
}

std::string pad(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

std::string render(const json& health, const std::string& base, bool color) {
  const std::string overall = health.value("status", "unhealthy");
  std::string out = "pipeline " + painted(overall, color);
  if (health.value("source", "") == "direct") {
    out += "  (the API at " + base + " does not answer: the other checks are this command's own)";
  } else {
    out += "  (" + base + "/api/health, version " + health.value("version", "?") + ")";
  }
  out += "\n";
  if (health.contains("time") && health["time"].is_string()) {
    out += "at " + health["time"].get<std::string>() + "\n";
  }
  if (health.contains("error")) out += scalar(health["error"]) + "\n";
  out += "\n";
  const std::vector<Row> rows =
      rows_of(health.contains("checks") ? health["checks"] : json::object());
  std::size_t check_w = 5, status_w = 6;
  for (const Row& r : rows) {
    check_w = std::max(check_w, r.check.size());
    status_w = std::max(status_w, r.status.size());
  }
  out += pad("CHECK", check_w) + "  " + pad("STATUS", status_w) + "  DETAIL\n";
  for (const Row& r : rows) {
    // Pad before painting: the escape codes take no columns.
    out += pad(r.check, check_w) + "  " + painted(r.status, color) +
           std::string(status_w - r.status.size(), ' ') + "  " + r.detail + "\n";
  }
  return out;
}

std::string one_line(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void run_status(const Config& cfg, const StatusFlags& f) {
  const std::string base = api_base_url(cfg, f.url);
  if (!f.watch) {
    const json health = check_health(cfg, base);
    if (f.json) {
      std::printf("%s\n", one_line(health).c_str());
    } else {
      std::fputs(render(health, base, use_color()).c_str(), stdout);
    }
    std::fflush(stdout);
    if (const int code = exit_code(health); code != kExitOk) throw Exit{code};
    return;
  }
  // Before any thread starts (the direct checks' service): they inherit the blocked signals.
  std::stop_source stop;
  auto signals = stop_on_signals(stop);
  const bool color = use_color();
  std::mutex mu;
  std::condition_variable_any cv;
  while (!stop.stop_requested()) {
    const json health = check_health(cfg, base);
    if (f.json) {
      std::printf("%s\n", one_line(health).c_str());
    } else {
      // Home and clear, then the whole screen in one write: no flicker.
      const std::string screen =
          "\033[H\033[2J" + std::string("every ") + std::to_string(kWatchPeriod.count()) +
          " s: hashinsight status (Ctrl-C to stop)\n\n" + render(health, base, color);
      std::fputs(screen.c_str(), stdout);
    }
    std::fflush(stdout);
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop.get_token(), kWatchPeriod, [] { return false; });
  }
  signals.request_stop();
}

}  // namespace

void add_status_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand(
      "status", "the pipeline's health as a table (exit 0 healthy, 1 degraded, 2 unhealthy)");
  auto sf = std::make_shared<StatusFlags>();
  cmd->add_flag("--json", sf->json, "print the health JSON as one line");
  cmd->add_flag("--watch", sf->watch, "redraw every 2 s until Ctrl-C");
  cmd->add_option("--url", sf->url,
                  "the API's base URL (default: the running stack's, from DIR/up.json, else "
                  "http://HTTP_ADDRESS:HTTP_PORT)");
  cmd->add_option_function<std::string>(
      "--data-dir", [&flags](const std::string& v) { flags.overrides["HI_DATA_DIR"] = v; },
      "the running stack's data directory (HI_DATA_DIR)");
  cmd->callback([&flags, sf] { run_status(load_config(flags), *sf); });
}

}  // namespace hi::cli
