// Supervisor: runs the parts of the platform as child processes and keeps them running.
//
//   Supervisor sup(log_dir, env, log);
//   sup.add("relay", {exe, "relay"});
//   sup.start_all();
//   while (!stopping) { wait_a_little(); sup.tick(); }  // restarts parts that died
//   sup.stop_all();                                     // in reverse order of add()
//
// A part that exits is restarted after a backoff that doubles with each quick death (250 ms up
// to 30 s, jittered) and resets once the part has run for 10 s; every exit and restart is
// logged. Each child's stdout and stderr go to `log_dir/<name>.log`. Children get a
// parent-death signal (core/process.h), so a supervisor killed with SIGKILL leaves none behind.
//
// Not thread-safe: one owner calls tick() from its loop (it never blocks).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/backoff.h"
#include "core/log.h"
#include "core/process.h"
#include "core/result.h"

namespace hi::cli {

class Supervisor {
 public:
  Supervisor(std::filesystem::path log_dir, std::vector<std::string> env, Logger log);
  ~Supervisor();  // stops what still runs
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Adds a part: `argv` is its full command line (argv[0] an absolute path or a PATH name).
  void add(std::string name, std::vector<std::string> argv);
  Status start_all();
  // Schedules restarts of parts that died and performs those that are due.
  void tick();
  // SIGTERM to each part in reverse order of add(), waiting for each to exit (SIGKILL after
  // `grace`) before the next: the parts added last, which depend on the earlier ones, stop first.
  void stop_all(std::chrono::milliseconds grace = std::chrono::seconds(15));

  // The pid of each running part, by name (for up.json).
  std::map<std::string, pid_t> pids() const;
  // How many times the part was restarted since it last ran for 10 s.
  int restarts(const std::string& name) const;

 private:
  struct Part {
    std::string name;
    std::vector<std::string> argv;
    Process process;
    Backoff backoff{std::chrono::milliseconds(250), std::chrono::seconds(30)};
    std::chrono::steady_clock::time_point started_at{};
    std::chrono::steady_clock::time_point restart_at{};
    bool restart_pending = false;
  };
  Status start(Part& part);
  const Part* find(const std::string& name) const;

  std::filesystem::path log_dir_;
  std::vector<std::string> env_;
  Logger log_;
  std::vector<Part> parts_;
};

}  // namespace hi::cli
