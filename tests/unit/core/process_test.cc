#include "core/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace hi {
namespace {

// A process seen from outside, as `hashinsight down` and `chaos` see a stack's parts: by pid.
TEST(ProcessByPid, AliveWithItsArgumentsUntilItExitsAndAZombieCountsAsExited) {
  SpawnOptions o;
  o.argv = {"sleep", "30"};
  auto p = Process::spawn(o);
  ASSERT_TRUE(p.ok()) << p.error().message;
  const pid_t pid = p->pid();
  EXPECT_TRUE(process_alive(pid));
  // argv as exec(2) received it (until the child has exec'd, it is a copy of this process).
  std::vector<std::string> args;
  for (int i = 0; i < 500; ++i) {
    args = process_arguments(pid);
    if (!args.empty() && args[0].find("sleep") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(args.size(), 2u);
  EXPECT_EQ(args[1], "30");
  EXPECT_NE(args[0].find("sleep"), std::string::npos);

  // Killed but not reaped: a zombie, which has exited.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(process_alive(pid));
  p->wait_for(std::chrono::seconds(5));  // reaped
  EXPECT_FALSE(process_alive(pid));
  EXPECT_TRUE(process_arguments(pid).empty());

  EXPECT_FALSE(process_alive(0));
  EXPECT_FALSE(process_alive(-1));
  EXPECT_TRUE(process_alive(::getpid()));
}

}  // namespace
}  // namespace hi
