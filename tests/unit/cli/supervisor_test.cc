#include "cli/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace hi::cli {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// A scratch directory for the parts' logs and the files they write.
class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hi-supervisor-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> lines(const std::string& name) const {
    std::ifstream in(dir_ / name);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::vector<std::string> sh(const std::string& script) {
    return {"/bin/sh", "-c", script};
  }

  fs::path dir_;
};

// Ticks until `done` or the deadline.
template <typename Pred>
bool tick_until(Supervisor& sup, Pred done, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    sup.tick();
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  // Killed but not yet reaped by its new parent: a zombie is gone too.
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  return close == std::string::npos || stat.substr(close + 2, 1) == "Z";
}

TEST_F(SupervisorTest, RestartsAPartThatDiesAfterABackoff) {
  Supervisor sup(dir_, {}, Logger("test"));
  // Each run records its pid and start time (ns), then fails at once.
  sup.add("flaky", sh("echo $$ $(date +%s%N) >> " + path("starts") + "; exit 3"));
  ASSERT_TRUE(sup.start_all());
  ASSERT_TRUE(tick_until(
      sup, [&] { return lines("starts").size() >= 4; }, std::chrono::seconds(10)));
  EXPECT_GE(sup.restarts("flaky"), 3);

  const auto starts = lines("starts");
  std::set<std::string> pids;
  std::vector<long long> at;
  for (const auto& l : starts) {
    std::istringstream in(l);
    std::string pid;
    long long ns = 0;
    in >> pid >> ns;
    pids.insert(pid);
    at.push_back(ns);
  }
  EXPECT_EQ(pids.size(), starts.size()) << "every restart is a new process";
  // The first restart waits 250 ms x [0.5, 1.5) at least: >= 125 ms, never a tight loop.
  for (std::size_t i = 1; i < at.size(); ++i) {
    EXPECT_GE(at[i] - at[i - 1], 125'000'000LL) << "restart " << i;
  }
  // The part's output goes to its log file.
  EXPECT_TRUE(fs::exists(dir_ / "flaky.log"));
}

TEST_F(SupervisorTest, StopsPartsInReverseOrderOfAdd) {
  Supervisor sup(dir_, {}, Logger("test"));
  for (const std::string name : {"relay", "worker", "api"}) {
    sup.add(name, sh("trap 'echo stopped " + name + " >> " + path("events") +
                     "; exit 0' TERM; echo ready " + name + " >> " + path("events") +
                     "; while :; do sleep 0.02; done"));
  }
  ASSERT_TRUE(sup.start_all());
  ASSERT_TRUE(tick_until(
      sup, [&] { return lines("events").size() == 3; }, std::chrono::seconds(10)));
  EXPECT_EQ(sup.pids().size(), 3u);
  sup.stop_all();
  const auto events = lines("events");
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[3], "stopped api");
  EXPECT_EQ(events[4], "stopped worker");
  EXPECT_EQ(events[5], "stopped relay");
  EXPECT_TRUE(sup.pids().empty());
}

TEST_F(SupervisorTest, AKilledSupervisorLeavesNoPartBehind) {
  const pid_t supervisor = ::fork();
  ASSERT_GE(supervisor, 0);
  if (supervisor == 0) {
    // The supervisor process: start one long-running part, then wait to be killed.
    Supervisor sup(dir_, {}, Logger("test"));
    sup.add("sleeper", sh("echo $$ > " + path("pid") + "; exec sleep 60"));
    if (!sup.start_all()) ::_exit(1);
    for (;;) ::pause();
  }
  pid_t part = 0;
  for (int i = 0; i < 500 && part == 0; ++i) {
    const auto l = lines("pid");
    if (!l.empty() && !l[0].empty()) part = std::stoi(l[0]);
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_GT(part, 0);
  ASSERT_FALSE(process_gone(part));
  ::kill(supervisor, SIGKILL);
  int status = 0;
  ::waitpid(supervisor, &status, 0);
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = process_gone(part);
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(gone) << "part " << part << " outlived its supervisor";
  if (!gone) ::kill(part, SIGKILL);
}

}  // namespace
}  // namespace hi::cli
