#include "core/process.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/unique_fd.h"

extern char** environ;

namespace hi {
namespace {

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

bool running_as_root() { return geteuid() == 0; }

namespace {

// A /proc file whole, "" when it cannot be read. With read(2), not a stream: a read of
// /proc/PID of a process that exits meanwhile fails (ESRCH), which libstdc++'s filebuf throws.
std::string read_proc(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string out;
  if (!fd) return out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) out.append(buf, n);
  return out;
}

}  // namespace

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  // EPERM: it exists, owned by someone this process may not signal.
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  const std::string stat = read_proc("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "host";
  return buf;
}

std::vector<std::string> process_arguments(pid_t pid) {
  const std::string text = read_proc("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  for (std::size_t at = 0; at < text.size();) {
    const auto end = text.find('\0', at);
    args.push_back(text.substr(at, end == std::string::npos ? std::string::npos : end - at));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return args;
}

std::optional<UserIds> lookup_user(const std::string& name) {
  struct passwd pw;
  struct passwd* out = nullptr;
  char buf[4096];
  if (getpwnam_r(name.c_str(), &pw, buf, sizeof buf, &out) != 0 || out == nullptr) {
    return std::nullopt;
  }
  return UserIds{pw.pw_uid, pw.pw_gid};
}

std::optional<std::string> first_untraversable_dir(const std::string& path, const UserIds& user) {
  std::filesystem::path p = std::filesystem::absolute(path).lexically_normal();
  std::filesystem::path cur = "/";
  for (const auto& part : p) {
    if (part == "/") continue;
    struct stat st;
    if (::stat(cur.c_str(), &st) == 0) {
      const bool ok = st.st_uid == user.uid   ? (st.st_mode & S_IXUSR)
                      : st.st_gid == user.gid ? (st.st_mode & S_IXGRP)
                                              : (st.st_mode & S_IXOTH);
      if (!ok) return cur.string();
    }
    cur /= part;
  }
  return std::nullopt;
}

Result<Process> Process::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return invalid_argument("spawn: empty argv");
  // Everything the child needs is prepared before fork(): between fork and exec only
  // async-signal-safe calls are allowed in a multi-threaded parent.
  std::vector<char*> argv;
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env_map[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& kv : options.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::optional<UserIds> ids;
  if (!options.run_as_user.empty() && running_as_root()) {
    ids = lookup_user(options.run_as_user);
    if (!ids) return not_found("spawn: no system user '" + options.run_as_user + "'");
    env_map["USER"] = options.run_as_user;
    env_map["LOGNAME"] = options.run_as_user;
    if (struct passwd* pw = getpwnam(options.run_as_user.c_str())) env_map["HOME"] = pw->pw_dir;
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env_map) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  UniqueFd out;
  if (!options.output_path.empty()) {
    out.reset(::open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!out) {
      return unavailable("spawn: open " + options.output_path + ": " + std::strerror(errno));
    }
    if (ids) (void)::fchown(out.get(), ids->uid, ids->gid);
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    return unavailable(std::string("spawn: fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    if (options.new_process_group) ::setpgid(0, 0);
    if (out) {
      ::dup2(out.get(), 1);
      ::dup2(out.get(), 2);
    }
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(126);
    if (ids) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(ids->gid) != 0 || ::setuid(ids->uid) != 0) {
        ::_exit(126);
      }
    }
    // After setuid: a change of credentials clears the parent-death signal.
    if (options.parent_death_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, options.parent_death_signal);
      if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // An ignored signal stays ignored across exec: give the child the default SIGPIPE.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::execvpe(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return Process(pid, options.new_process_group);
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), group_(other.group_), exit_status_(other.exit_status_) {
  other.pid_ = -1;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (valid() && running()) stop();
    pid_ = other.pid_;
    group_ = other.group_;
    exit_status_ = other.exit_status_;
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (valid() && running()) stop(std::chrono::milliseconds(5000));
}

void Process::signal(int sig) const {
  if (pid_ <= 0 || exit_status_) return;
  if (group_) {
    ::kill(-pid_, sig);
  } else {
    ::kill(pid_, sig);
  }
}

bool Process::running() {
  if (pid_ <= 0 || exit_status_) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = decode_status(status);
    return false;
  }
  if (r < 0 && errno == ECHILD) {
    exit_status_ = -1;
    return false;
  }
  return true;
}

std::optional<int> Process::wait_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto step = std::chrono::milliseconds(1);
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(step);
    step = std::min(step * 2, std::chrono::milliseconds(50));
  }
  return exit_status_;
}

int Process::stop(std::chrono::milliseconds grace) {
  if (!running()) return exit_status_.value_or(-1);
  signal(SIGTERM);
  if (auto st = wait_for(grace)) return *st;
  signal(SIGKILL);
  return wait_for(std::chrono::milliseconds(10000)).value_or(-1);
}

Result<CommandResult> run_command(const SpawnOptions& options, std::chrono::milliseconds timeout) {
  char tmpl[] = "/tmp/hi-cmd-XXXXXX";
  if (UniqueFd fd(::mkstemp(tmpl)); !fd) {
    return unavailable(std::string("run_command: mkstemp: ") + std::strerror(errno));
  }
  SpawnOptions opts = options;
  opts.output_path = tmpl;
  auto proc = Process::spawn(opts);
  if (!proc) {
    ::unlink(tmpl);
    return proc.error();
  }
  auto status = proc->wait_for(timeout);
  if (!status) status = proc->stop();
  std::ifstream in(tmpl);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(tmpl);
  return CommandResult{*status, ss.str()};
}

}  // namespace hi
