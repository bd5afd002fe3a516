#include "http/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>

namespace hi::http {
namespace {

TEST(WorkerPool, RefusesWhenEveryThreadIsBusyAndTheQueueIsFull) {
  WorkerPool pool(1, 0);
  std::latch running(1);
  std::latch release(1);
  ASSERT_TRUE(pool.try_submit([&] {
    running.count_down();
    release.wait();
  }));
  running.wait();
  EXPECT_FALSE(pool.try_submit([] {}));
  release.count_down();
  pool.stop();
}

TEST(WorkerPool, QueuesUpToItsCapacity) {
  WorkerPool pool(2, 1);
  std::latch release(1);
  std::atomic<int> done{0};
  const auto task = [&] {
    release.wait();
    ++done;
  };
  EXPECT_TRUE(pool.try_submit(task));
  EXPECT_TRUE(pool.try_submit(task));
  EXPECT_TRUE(pool.try_submit(task));  // waits in the queue
  EXPECT_FALSE(pool.try_submit(task));
  release.count_down();
  pool.stop();  // runs what it accepted
  EXPECT_EQ(done.load(), 3);
  EXPECT_FALSE(pool.try_submit(task));
}

}  // namespace
}  // namespace hi::http
