#include "cli/supervisor.h"

#include <signal.h>

#include <algorithm>

namespace hi::cli {

namespace {
// A part that ran this long before dying is healthy again: its next restart is quick. Longer
// than any start (a crash loop still backs off), short enough that a part killed again and
// again from outside, each time after doing its work, is not held down for tens of seconds.
constexpr auto kHealthyAfter = std::chrono::seconds(10);
}  // namespace

Supervisor::Supervisor(std::filesystem::path log_dir, std::vector<std::string> env, Logger log)
    : log_dir_(std::move(log_dir)), env_(std::move(env)), log_(std::move(log)) {}

Supervisor::~Supervisor() { stop_all(std::chrono::seconds(5)); }

void Supervisor::add(std::string name, std::vector<std::string> argv) {
  Part& part = parts_.emplace_back();
  part.name = std::move(name);
  part.argv = std::move(argv);
}

Status Supervisor::start_all() {
  for (auto& p : parts_) {
    if (auto s = start(p); !s) return s;
  }
  return {};
}

void Supervisor::tick() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& p : parts_) {
    if (p.process.valid() && p.process.running()) continue;
    if (!p.restart_pending) {
      if (now - p.started_at > kHealthyAfter) p.backoff.reset();
      const auto delay = p.backoff.next();
      p.restart_pending = true;
      p.restart_at = now + delay;
      log_.warn("part exited; restarting", {{"part", p.name},
                                            {"status", p.process.exit_status().value_or(-1)},
                                            {"restarts", p.backoff.retries() - 1},
                                            {"backoff_ms", delay.count()}});
    } else if (now >= p.restart_at) {
      if (auto s = start(p); !s) {
        log_.error("restart failed", {{"part", p.name}, {"error", s.error().message}});
      }
    }
  }
}

void Supervisor::stop_all(std::chrono::milliseconds grace) {
  for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) {
    if (!it->process.valid()) continue;
    const int status = it->process.stop(grace);
    log_.info("part stopped", {{"part", it->name}, {"status", status}});
    it->process = Process();
  }
}

std::map<std::string, pid_t> Supervisor::pids() const {
  std::map<std::string, pid_t> out;
  for (const auto& p : parts_) {
    if (p.process.valid() && !p.process.exit_status()) out[p.name] = p.process.pid();
  }
  return out;
}

int Supervisor::restarts(const std::string& name) const {
  const Part* p = find(name);
  return p == nullptr ? 0 : std::max(0, p->backoff.retries() - (p->restart_pending ? 1 : 0));
}

const Supervisor::Part* Supervisor::find(const std::string& name) const {
  for (const auto& p : parts_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

Status Supervisor::start(Part& p) {
  SpawnOptions opts;
  opts.argv = p.argv;
  opts.env = env_;
  opts.output_path = (log_dir_ / (p.name + ".log")).string();
  p.restart_pending = false;
  p.started_at = std::chrono::steady_clock::now();
  auto proc = Process::spawn(opts);
  if (!proc) {
    // Counted as a death: tick() schedules the next try with backoff.
    p.process = Process();
    return proc.error().wrap("start " + p.name);
  }
  p.process = std::move(*proc);
  log_.info("part started",
            {{"part", p.name}, {"pid", p.process.pid()}, {"log", opts.output_path}});
  return {};
}

}  // namespace hi::cli
