#include "core/unique_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace hi {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFd, ClosesOnDestructionAndMovesOwnership) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const int read_end = fds[0];
  {
    UniqueFd a(fds[0]);
    UniqueFd w(fds[1]);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), read_end);
    EXPECT_TRUE(is_open(read_end));
  }
  EXPECT_FALSE(is_open(read_end));
}

TEST(UniqueFd, ReleaseGivesUpOwnershipAndResetCloses) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  int kept = -1;
  {
    UniqueFd r(fds[0]);
    kept = r.release();
    UniqueFd w(fds[1]);
    w.reset();
    EXPECT_FALSE(is_open(fds[1]));
  }
  EXPECT_TRUE(is_open(kept));
  ::close(kept);
}

}  // namespace
}  // namespace hi
