// What every subcommand shares: configuration from env + flags, the data directory, the URLs
// of the running stack, and the exit-code convention (0 ok, 1 runtime failure, 2 bad
// configuration or usage).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "bus/bus.h"
#include "core/config.h"
#include "core/log.h"
#include "core/process.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::api {
struct ServiceOptions;
}  // namespace hi::api

namespace hi::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Thrown by subcommands to end the program with a code after printing their message. It is
// the one way a subcommand ends the program: run_command_line() turns it into the exit code.
struct Exit {
  int code;
};

// Flags that override settings: each subcommand binds its flags into `overrides` under the
// setting's name ("BUS"), and load_config() applies them over the environment.
struct Flags {
  std::map<std::string, std::string> overrides;
};

// Loads and validates the configuration, applies LOG_LEVEL/LOG_FORMAT; on error prints one
// line naming every bad variable and throws Exit{2}.
Config load_config(const Flags& flags);

// Arms the failpoints of part `part` (HI_FAILPOINTS and DIR/failpoints/<part>); a malformed
// specification is a usage error (exit 2).
void arm_failpoints_for(const Config& cfg, std::string_view part);

// The data directory: HI_DATA_DIR, else ./var, else /var/lib/hashinsight when root.
std::string data_dir(const Config& cfg);

// The secret DIR/secrets/NAME, generated on first use (`bytes` random bytes as hex, file mode
// 600, directory 700): the JWT key, the servers' passwords, the master encryption key.
std::string read_or_create_secret(const std::string& dir, const std::string& name,
                                  std::size_t bytes);

// The stack's URLs: DATABASE_URL / REDIS_URL when set, else those of a running `up` (read from
// DIR/up.json). Empty when neither is known.
struct StackUrls {
  std::string database_url;
  std::string redis_url;  // the bus's (Redis Streams) and, unless cache_redis_url, everything's
  std::string kafka_brokers;
  std::string bus;
  std::string cache_redis_url;  // CACHE_REDIS_URL: what may be lost

  // Where the cache, rate limits, sessions, locks, notices and status go.
  const std::string& cache_redis() const {
    return cache_redis_url.empty() ? redis_url : cache_redis_url;
  }
};
StackUrls stack_urls(const Config& cfg);

// The string `field` of the running stack's DIR/up.json ("api_url", "bus"), or empty when there
// is no such file or field.
std::string up_json_field(const Config& cfg, const std::string& field);

// An owner connection to the stack's database; exit 2 with the reason when there is none.
pg::Connection connect_owner(const Config& cfg);

// A loopback TCP port that is free now (the kernel's choice).
int free_port();

// This program's path (/proc/self/exe), to run its subcommands as child processes.
std::string self_exe();

// The JSON object in `path` (up.json); an empty object when it is missing or not JSON.
nlohmann::json read_json(const std::string& path);

// The bus settings of the configuration (relay_command.cc).
bus::BusOptions bus_options(const Config& cfg, const StackUrls& urls);

// The API's settings from the configuration (api_command.cc): database, Redis, bus, health
// thresholds, cache TTLs. Not the token key, which only the API itself reads or creates.
api::ServiceOptions api_options(const Config& cfg, const StackUrls& urls);

// Blocks SIGTERM/SIGINT and returns a thread that requests `stop` when one arrives
// (relay_command.cc).
std::jthread stop_on_signals(std::stop_source stop);

// Prints an error for the user (one line on stderr) and throws Exit{code}.
[[noreturn]] void fail(int code, const std::string& message);

// Registers every subcommand on `app`; `flags` must outlive `app`.
void add_commands(CLI::App& app, Flags& flags);

// Runs `parse` (which parses a command line into `app` and so runs the chosen subcommand) and
// returns the process exit code: 0, the code of an Exit, or 2 for a usage error (after CLI11
// printed it, or the help, to `out` / `err`).
int run_command_line(CLI::App& app, const std::function<void()>& parse,
                     std::ostream& out = std::cout, std::ostream& err = std::cerr);

// Subcommand registration.
void add_up_command(CLI::App& app, Flags& flags);
void add_down_command(CLI::App& app, Flags& flags);
void add_db_commands(CLI::App& app, Flags& flags);
void add_config_command(CLI::App& app, Flags& flags);
void add_relay_command(CLI::App& app, Flags& flags);
void add_worker_command(CLI::App& app, Flags& flags);
void add_dlq_command(CLI::App& app, Flags& flags);
void add_audit_command(CLI::App& app, Flags& flags);
void add_bench_command(CLI::App& app, Flags& flags);
void add_token_command(CLI::App& app, Flags& flags);
void add_api_command(CLI::App& app, Flags& flags);
void add_keys_command(CLI::App& app, Flags& flags);
void add_status_command(CLI::App& app, Flags& flags);
void add_chaos_command(CLI::App& app, Flags& flags);
void add_snapshot_command(CLI::App& app, Flags& flags);
void add_sink_command(CLI::App& app, Flags& flags);
// `bench consume`, registered under the bench subcommand.
void add_bench_consume(CLI::App& bench, Flags& flags);
// `bench api`, registered under the bench subcommand (bench_api.cc).
void add_bench_api(CLI::App& bench, Flags& flags);
// `bench sse` (bench_sse.cc).
void add_bench_sse(CLI::App& bench, Flags& flags);
// `bench e2e` (bench_e2e.cc).
void add_bench_e2e(CLI::App& bench, Flags& flags);
void add_bench_snapshot(CLI::App& bench, Flags& flags);
void add_bench_sink(CLI::App& bench, Flags& flags);

}  // namespace hi::cli
