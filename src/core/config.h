// Configuration: every setting comes from an environment variable with a default, and a command
// line flag may override it. All settings are validated together at start-up; the error names
// every bad variable and why, and the command exits with code 2.
//
//   auto cfg = hi::Config::load(hi::process_env(), {{"BUS", "kafka"}});  // a flag wins over env
//   if (!cfg) { print(cfg.error().message); return 2; }
//   int port = cfg->integer("HTTP_PORT");
//
// The list of settings (`settings()`) is the single source of `.env.example`.
// A Config is immutable after load and safe to share between threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace hi {

enum class SettingKind {
  kString,
  kInt,       // integer within [min, max]
  kEnum,      // one of `choices`, comma separated
  kPgUrl,     // empty, or postgresql://... / postgres://...
  kRedisUrl,  // empty, or redis://...
  kBrokers,   // empty, or host:port[,host:port...]
  kHttpUrl,   // empty, or http(s)://...
};

struct SettingSpec {
  std::string_view name;
  std::string_view default_value;
  std::string_view help;
  SettingKind kind = SettingKind::kString;
  std::int64_t min = 0;
  std::int64_t max = 0;
  std::string_view choices;  // for kEnum: "redis,kafka"
  std::string_view group;    // heading in .env.example
};

// Every setting the platform reads.
std::span<const SettingSpec> settings();

// Looks up an environment variable; returns nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;
EnvLookup process_env();

// The text of `.env.example`: every variable with its default and meaning.
std::string env_example();

class Config {
 public:
  // Reads every setting from `env`, then applies `overrides` (from flags; keys are setting names).
  // An unknown override key is a programming error reported as kInvalidArgument.
  static Result<Config> load(const EnvLookup& env,
                             const std::map<std::string, std::string>& overrides = {});

  const std::string& str(std::string_view name) const;
  std::int64_t integer(std::string_view name) const;
  bool is_set(std::string_view name) const { return !str(name).empty(); }

  // All settings as name -> value (for passing to child processes).
  const std::map<std::string, std::string, std::less<>>& values() const { return values_; }

 private:
  std::map<std::string, std::string, std::less<>> values_;
};

// Validates one value against its spec; returns the reason it is bad, or nullopt.
std::optional<std::string> validate_setting(const SettingSpec& spec, std::string_view value);

}  // namespace hi
