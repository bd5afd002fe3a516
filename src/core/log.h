// Structured logging: one JSON object per line on stderr (or key=value text when LOG_FORMAT=text).
//
//   hi::Logger log("relay");
//   log.info("slot ready", {{"slot", "hashinsight_outbox"}, {"start_lsn", "0/16B3748"}});
//   -> {"ts":"2026-11-22T10:00:00.123456Z","level":"info","component":"relay","msg":"slot ready",
//       "slot":"hashinsight_outbox","start_lsn":"0/16B3748"}
//
// A Logger is cheap to copy and safe to use from any thread: lines are written whole under a
// process-wide mutex. Components take a Logger in their constructor instead of looking one up.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace hi {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kOff };

enum class LogFormat { kJson, kText };

// Process-wide settings, applied once at start-up from the configuration.
void set_log_level(LogLevel level);
void set_log_format(LogFormat format);
LogLevel log_level();

class Logger {
 public:
  using Fields = nlohmann::json;  // an object; {{"key", value}, ...}

  explicit Logger(std::string component) : component_(std::move(component)) {}

  const std::string& component() const { return component_; }
  bool enabled(LogLevel level) const { return level >= log_level(); }

  void debug(std::string_view msg, const Fields& fields = nullptr) const {
    log(LogLevel::kDebug, msg, fields);
  }
  void info(std::string_view msg, const Fields& fields = nullptr) const {
    log(LogLevel::kInfo, msg, fields);
  }
  void warn(std::string_view msg, const Fields& fields = nullptr) const {
    log(LogLevel::kWarn, msg, fields);
  }
  void error(std::string_view msg, const Fields& fields = nullptr) const {
    log(LogLevel::kError, msg, fields);
  }
  void log(LogLevel level, std::string_view msg, const Fields& fields) const;

 private:
  std::string component_;
};

// Formats one line (without the newline); exposed for tests.
std::string format_log_line(LogFormat format, LogLevel level, std::string_view component,
                            std::string_view msg, const Logger::Fields& fields,
                            std::int64_t unix_us);

}  // namespace hi
