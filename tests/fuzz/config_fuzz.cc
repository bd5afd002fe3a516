// Configuration loading (core/config.h): every setting from an environment, flags overriding.
//
// Input, text so that seeds and findings read as what they are, one assignment per line:
//   NAME=value     an environment variable
//   --NAME=value   a command line override (Config::load's `overrides`)
//
// Checks what core/config.h promises: a loaded Config holds every setting, each one valid for
// its spec, taken from the override, else the environment, else the default; integers are in
// range. A refused configuration is kInvalidArgument naming the bad variables.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "core/config.h"
#include "fuzz_support.h"

namespace {

using hi::fuzz::check;
using hi::fuzz::next_line;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> env;
  std::map<std::string, std::string> overrides;
  while (!rest.empty()) {
    std::string_view line = next_line(rest);
    const bool flag = line.starts_with("--");
    if (flag) line.remove_prefix(2);
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    // The environment cannot hold a NUL inside a value: getenv() would end it there.
    const std::string value(line.substr(eq + 1));
    (flag ? overrides : env)[std::string(line.substr(0, eq))] = value.c_str();
  }
  const hi::EnvLookup lookup = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };

  const auto cfg = hi::Config::load(lookup, overrides);
  if (!cfg) {
    check(cfg.error().code == hi::Code::kInvalidArgument,
          "a bad configuration is kInvalidArgument");
    check(cfg.error().message.rfind("invalid configuration: ", 0) == 0,
          "a bad configuration says so");
    return 0;
  }
  check(cfg->values().size() == hi::settings().size(), "a Config holds every setting");
  for (const auto& spec : hi::settings()) {
    const std::string name(spec.name);
    const std::string& value = cfg->str(spec.name);
    check(!hi::validate_setting(spec, value), "every loaded value is valid");
    if (auto o = overrides.find(name); o != overrides.end()) {
      check(value == o->second, "an override wins");
    } else if (auto e = env.find(name); e != env.end()) {
      check(value == e->second, "the environment wins over the default");
    } else {
      check(value == spec.default_value, "an unset setting has its default");
    }
    if (spec.kind == hi::SettingKind::kInt) {
      const std::int64_t n = cfg->integer(spec.name);
      check(n >= spec.min && n <= spec.max, "an integer setting is in range");
      std::int64_t written = 0;
      std::from_chars(value.data(), value.data() + value.size(), written);
      check(n == written, "an integer setting reads back as written");
    }
  }
  return 0;
}
