// Child processes: spawn (optionally as another user), signal, wait.
//
// A Process owns its child: destroying a Process that still runs stops it (SIGTERM, then
// SIGKILL after a grace period) and reaps it, so a failing test or a crashing supervisor leaves
// nothing behind. Children also get a parent-death signal, set after switching user (setuid
// clears it), so a parent killed with SIGKILL does not leave orphans either.
// Not thread-safe; one owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace hi {

struct SpawnOptions {
  std::vector<std::string> argv;   // argv[0] is looked up in PATH when it has no '/'
  std::vector<std::string> env;    // NAME=VALUE entries added to (or replacing in) environ
  std::string run_as_user;         // when non-empty and running as root: drop to this user
  std::string output_path;         // stdout+stderr appended here; empty = inherit
  std::string cwd;                 // empty = inherit
  bool new_process_group = false;  // put the child in its own group (for killpg)
  int parent_death_signal = 15;    // SIGTERM; 0 = none
};

class Process {
 public:
  static Result<Process> spawn(const SpawnOptions& options);

  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  bool valid() const { return pid_ > 0; }

  // Sends a signal; a no-op when the child has already been reaped.
  void signal(int sig) const;
  // True while the child has not exited. Reaps it when it has.
  bool running();
  // Waits up to `timeout` for the exit; returns the exit status (128+signal when killed), or
  // nullopt on timeout.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000));
  // Forgets the child without stopping it (it keeps running).
  void release() { pid_ = -1; }
  std::optional<int> exit_status() const { return exit_status_; }

 private:
  explicit Process(pid_t pid, bool group) : pid_(pid), group_(group) {}
  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> exit_status_;
};

// Runs a command to completion and returns its exit status and combined output.
struct CommandResult {
  int status = -1;
  std::string output;
};
Result<CommandResult> run_command(const SpawnOptions& options,
                                  std::chrono::milliseconds timeout = std::chrono::minutes(5));

// uid/gid of a system user, when it exists.
struct UserIds {
  uid_t uid;
  gid_t gid;
};
std::optional<UserIds> lookup_user(const std::string& name);

bool running_as_root();

// Whether process `pid` (any process, not only a child) is running: it exists and is not a
// zombie its parent has yet to reap.
bool process_alive(pid_t pid);
// The argument vector of process `pid`; empty when it has exited or cannot be read.
std::vector<std::string> process_arguments(pid_t pid);

// This machine's name (gethostname), "host" when it has none.
std::string host_name();

// Whether `user` can traverse every directory from / down to `path` (inclusive); when not,
// the first directory that stops it.
std::optional<std::string> first_untraversable_dir(const std::string& path, const UserIds& user);

}  // namespace hi
