#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "core/time.h"

namespace hi {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kJson};
std::mutex g_write_mu;

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kOff:
      break;
  }
  return "off";
}

}  // namespace

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
void set_log_format(LogFormat format) { g_format.store(format, std::memory_order_relaxed); }
LogLevel log_level() { return g_level.load(std::memory_order_relaxed); }

std::string format_log_line(LogFormat format, LogLevel level, std::string_view component,
                            std::string_view msg, const Logger::Fields& fields,
                            std::int64_t unix_us) {
  const std::string ts = format_rfc3339_us(unix_us);
  if (format == LogFormat::kText) {
    std::string out = ts;
    out += ' ';
    out += level_name(level);
    out += ' ';
    out += component;
    out += ": ";
    out += msg;
    if (fields.is_object()) {
      for (const auto& [k, v] : fields.items()) {
        out += ' ';
        out += k;
        out += '=';
        out += v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
    return out;
  }
  nlohmann::ordered_json line;
  line["ts"] = ts;
  line["level"] = level_name(level);
  line["component"] = component;
  line["msg"] = msg;
  if (fields.is_object()) {
    for (const auto& [k, v] : fields.items()) line[k] = v;
  }
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Logger::log(LogLevel level, std::string_view msg, const Fields& fields) const {
  if (!enabled(level)) return;
  std::string line = format_log_line(g_format.load(std::memory_order_relaxed), level, component_,
                                     msg, fields, unix_now_us());
  line += '\n';
  std::lock_guard lock(g_write_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace hi
