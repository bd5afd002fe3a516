#include "core/failpoint.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "core/strings.h"

namespace hi {
namespace {

struct Action {
  enum class Kind { kCrash, kError, kSleep };
  Kind kind = Kind::kCrash;
  std::int64_t sleep_ms = 0;
  std::int64_t on_pass = 0;  // 0: every pass
  std::int64_t passes = 0;   // guarded by the registry's mutex
};

struct Registry {
  std::mutex mu;
  std::map<std::string, Action, std::less<>> actions;  // guarded by mu
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: failpoints may fire during exit
  return *r;
}

bool parse_int(std::string_view text, std::int64_t& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size() && out >= 0;
}

Result<std::map<std::string, Action, std::less<>>> parse(std::string_view spec) {
  std::map<std::string, Action, std::less<>> out;
  for (const std::string& entry : split_list(spec)) {
    const auto eq = entry.find('=');
    auto bad = [&](std::string_view why) {
      return invalid_argument("failpoints: '" + entry + "': " + std::string(why) +
                              " (expected name=[N*]crash|error|sleep(MS))");
    };
    if (eq == std::string::npos || eq == 0) return bad("no name");
    const std::string name(trim(std::string_view(entry).substr(0, eq)));
    std::string_view action = trim(std::string_view(entry).substr(eq + 1));
    Action a;
    if (const auto star = action.find('*'); star != std::string_view::npos) {
      if (!parse_int(action.substr(0, star), a.on_pass) || a.on_pass == 0) {
        return bad("the pass count must be a positive integer");
      }
      action.remove_prefix(star + 1);
    }
    if (action == "crash") {
      a.kind = Action::Kind::kCrash;
    } else if (action == "error") {
      a.kind = Action::Kind::kError;
    } else if (action.starts_with("sleep(") && action.ends_with(")")) {
      a.kind = Action::Kind::kSleep;
      if (!parse_int(action.substr(6, action.size() - 7), a.sleep_ms)) {
        return bad("sleep takes milliseconds");
      }
    } else {
      return bad("unknown action");
    }
    out[name] = a;
  }
  return out;
}

void say(const std::string& line) {
  // write(2), not stdio: the crash action must not depend on buffers it will never flush.
  const std::string text = line + "\n";
  (void)!::write(2, text.data(), text.size());
}

}  // namespace

namespace internal {

std::atomic<bool> failpoints_armed{false};

Status failpoint_slow(std::string_view name) {
  Action a;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.actions.find(name);
    if (it == r.actions.end()) return {};
    const std::int64_t pass = ++it->second.passes;
    if (it->second.on_pass != 0 && pass != it->second.on_pass) return {};
    a = it->second;
  }
  switch (a.kind) {
    case Action::Kind::kCrash:
      say("failpoint " + std::string(name) + ": crash (exit 137)");
      ::_exit(137);
    case Action::Kind::kError:
      say("failpoint " + std::string(name) + ": error");
      return unavailable("failpoint " + std::string(name));
    case Action::Kind::kSleep:
      say("failpoint " + std::string(name) + ": sleep " + std::to_string(a.sleep_ms) + " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(a.sleep_ms));
      return {};
  }
  return {};
}

}  // namespace internal

Status arm_failpoints(std::string_view spec) {
  auto parsed = parse(spec);
  if (!parsed) return parsed.error();
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.actions = std::move(*parsed);
  internal::failpoints_armed.store(!r.actions.empty(), std::memory_order_relaxed);
  return {};
}

Status configure_failpoints(std::string_view setting, std::string_view part,
                            const std::string& data_dir) {
  std::string spec(setting);
  if (!data_dir.empty()) {
    std::ifstream in(data_dir + "/failpoints/" + std::string(part));
    for (std::string line; std::getline(in, line);) {
      if (trim(line).empty()) continue;
      if (!spec.empty()) spec += ',';
      spec += line;
    }
  }
  if (spec.empty()) return {};
  if (auto s = arm_failpoints(spec); !s) return s;
  say("failpoints armed: " + spec);
  return {};
}

}  // namespace hi
