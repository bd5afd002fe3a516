#include "cli/common.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/calc_command.h"
#include "core/failpoint.h"
#include "core/ids.h"
#include "core/net.h"
#include "core/process.h"
#include "pg/connection.h"

namespace hi::cli {
namespace fs = std::filesystem;

int free_port() { return free_loopback_port(); }

void fail(int code, const std::string& message) {
  std::fprintf(stderr, "hashinsight: %s\n", message.c_str());
  throw Exit{code};
}

Config load_config(const Flags& flags) {
  auto cfg = Config::load(process_env(), flags.overrides);
  if (!cfg) fail(kExitUsage, cfg.error().message);
  const std::string& level = cfg->str("LOG_LEVEL");
  set_log_level(level == "debug"   ? LogLevel::kDebug
                : level == "warn"  ? LogLevel::kWarn
                : level == "error" ? LogLevel::kError
                                   : LogLevel::kInfo);
  set_log_format(cfg->str("LOG_FORMAT") == "text" ? LogFormat::kText : LogFormat::kJson);
  return std::move(*cfg);
}

void arm_failpoints_for(const Config& cfg, std::string_view part) {
  if (auto s = configure_failpoints(cfg.str("HI_FAILPOINTS"), part, data_dir(cfg)); !s) {
    fail(kExitUsage, s.error().message);
  }
}

std::string data_dir(const Config& cfg) {
  if (cfg.is_set("HI_DATA_DIR")) return fs::absolute(cfg.str("HI_DATA_DIR")).string();
  if (running_as_root()) return "/var/lib/hashinsight";
  return fs::absolute("var").string();
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nlohmann::json::object();
  auto j = nlohmann::json::parse(in, nullptr, false);
  return j.is_discarded() ? nlohmann::json::object() : j;
}

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("hashinsight") : p.string();
}

std::string read_or_create_secret(const std::string& dir, const std::string& name,
                                  std::size_t bytes) {
  const fs::path file = fs::path(dir) / "secrets" / name;
  if (std::ifstream in(file); in) {
    std::string s;
    std::getline(in, s);
    if (!s.empty()) return s;
  }
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  ::chmod(file.parent_path().c_str(), 0700);
  const std::string value = random_hex(bytes);
  {
    std::ofstream out(file);
    out << value << "\n";
  }
  ::chmod(file.c_str(), 0600);
  return value;
}

pg::Connection connect_owner(const Config& cfg) {
  const auto urls = stack_urls(cfg);
  if (urls.database_url.empty()) {
    fail(kExitUsage,
         "DATABASE_URL is not set and no running stack was found (start one with "
         "`hashinsight up`, or set DATABASE_URL)");
  }
  auto conn = pg::Connection::connect(urls.database_url);
  if (!conn) fail(kExitUsage, "cannot reach DATABASE_URL: " + conn.error().message);
  return std::move(*conn);
}

namespace {

// DIR/up.json of the running stack; null when there is none (or a torn or foreign file).
nlohmann::json read_up_json(const Config& cfg) {
  std::ifstream in(fs::path(data_dir(cfg)) / "up.json");
  if (!in) return nullptr;
  try {
    auto j = nlohmann::json::parse(in);
    return j.is_object() ? j : nlohmann::json(nullptr);
  } catch (const nlohmann::json::exception&) {
    return nullptr;
  }
}

std::string string_field(const nlohmann::json& j, const std::string& field) {
  if (!j.is_object()) return {};
  const auto it = j.find(field);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

StackUrls stack_urls(const Config& cfg) {
  StackUrls urls{cfg.str("DATABASE_URL"), cfg.str("REDIS_URL"), cfg.str("KAFKA_BROKERS"),
                 cfg.str("BUS"), cfg.str("CACHE_REDIS_URL")};
  if (!urls.database_url.empty() && !urls.redis_url.empty()) return urls;
  const nlohmann::json up = read_up_json(cfg);
  if (urls.database_url.empty()) urls.database_url = string_field(up, "database_url");
  if (urls.redis_url.empty()) {
    urls.redis_url = string_field(up, "redis_url");
    if (urls.cache_redis_url.empty()) urls.cache_redis_url = string_field(up, "cache_redis_url");
  }
  if (urls.kafka_brokers.empty()) urls.kafka_brokers = string_field(up, "kafka_brokers");
  return urls;
}

std::string up_json_field(const Config& cfg, const std::string& field) {
  return string_field(read_up_json(cfg), field);
}

void add_commands(CLI::App& app, Flags& flags) {
  add_up_command(app, flags);
  add_down_command(app, flags);
  add_db_commands(app, flags);
  add_config_command(app, flags);
  add_relay_command(app, flags);
  add_worker_command(app, flags);
  add_dlq_command(app, flags);
  add_audit_command(app, flags);
  add_bench_command(app, flags);
  add_calc_command(app);
  add_token_command(app, flags);
  add_api_command(app, flags);
  add_keys_command(app, flags);
  add_status_command(app, flags);
  add_chaos_command(app, flags);
  add_snapshot_command(app, flags);
  add_sink_command(app, flags);
}

int run_command_line(CLI::App& app, const std::function<void()>& parse, std::ostream& out,
                     std::ostream& err) {
  try {
    parse();
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e, out, err);
    return rc == 0 ? kExitOk : kExitUsage;
  } catch (const Exit& e) {
    return e.code;
  }
  return kExitOk;
}

void add_config_command(CLI::App& app, Flags&) {
  auto* cmd = app.add_subcommand("env-example", "print .env.example: every setting and default");
  cmd->callback([] { std::fputs(env_example().c_str(), stdout); });
}

}  // namespace hi::cli
