#include "core/failpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace hi {
namespace {

class FailpointTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(arm_failpoints("")); }
};

TEST_F(FailpointTest, UnarmedPointsDoNothing) {
  EXPECT_TRUE(failpoint("relay.after_bus_ack"));
  ASSERT_TRUE(arm_failpoints("other.place=error"));
  EXPECT_TRUE(failpoint("relay.after_bus_ack"));
}

TEST_F(FailpointTest, ErrorIsRetryableOnEveryPass) {
  ASSERT_TRUE(arm_failpoints("consume.after_commit=error"));
  for (int i = 0; i < 3; ++i) {
    Status s = failpoint("consume.after_commit");
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, Code::kUnavailable);
  }
}

TEST_F(FailpointTest, ACountActsOnThatPassOnly) {
  ASSERT_TRUE(arm_failpoints("a=3*error, b=error"));
  EXPECT_TRUE(failpoint("a"));
  EXPECT_TRUE(failpoint("a"));
  EXPECT_FALSE(failpoint("a"));  // the third pass
  EXPECT_TRUE(failpoint("a"));
  EXPECT_FALSE(failpoint("b"));
}

TEST_F(FailpointTest, SleepWaitsThenContinues) {
  ASSERT_TRUE(arm_failpoints("slow=sleep(30)"));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(failpoint("slow"));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));
}

TEST_F(FailpointTest, MalformedSpecificationsAreRefusedAndArmNothing) {
  for (const char* bad : {"x", "=crash", "x=explode", "x=0*crash", "x=-1*crash", "x=sleep(ms)",
                          "x=sleep(10", "x=crash,y"}) {
    Status s = arm_failpoints(bad);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, Code::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(failpoint("x"));
}

TEST_F(FailpointTest, CrashExitsWith137AndSaysWhere) {
  const std::string out = ::testing::TempDir() + "failpoint-crash.txt";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    if (!arm_failpoints("relay.after_bus_ack=2*crash")) ::_exit(1);
    (void)failpoint("relay.after_bus_ack");  // first pass: nothing
    (void)failpoint("relay.after_bus_ack");  // second: crash
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 137);
  std::ifstream in(out);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "failpoint relay.after_bus_ack: crash (exit 137)");
}

TEST_F(FailpointTest, APartReadsItsFileAtStart) {
  const std::filesystem::path dir = ::testing::TempDir() + "failpoint-dir";
  std::filesystem::create_directories(dir / "failpoints");
  std::ofstream(dir / "failpoints" / "relay") << "relay.mid_backfill=error\n";
  ASSERT_TRUE(configure_failpoints("", "worker-portfolio", dir.string()));
  EXPECT_TRUE(failpoint("relay.mid_backfill"));  // not this part's file
  ASSERT_TRUE(configure_failpoints("x=error", "relay", dir.string()));
  EXPECT_FALSE(failpoint("relay.mid_backfill"));
  EXPECT_FALSE(failpoint("x"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hi
