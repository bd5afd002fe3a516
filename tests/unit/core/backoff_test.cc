#include "core/backoff.h"

#include <gtest/gtest.h>

#include <thread>

namespace hi {
namespace {

using std::chrono::milliseconds;

TEST(BackoffDelay, DoublesFromTheBaseUpToTheCapWithJitter) {
  // unit_random 0.5 is the middle of the jitter: the plain delay base * 2^(retry-1).
  EXPECT_EQ(backoff_delay(1, milliseconds(100), milliseconds(5000), 0.5), milliseconds(100));
  EXPECT_EQ(backoff_delay(2, milliseconds(100), milliseconds(5000), 0.5), milliseconds(200));
  EXPECT_EQ(backoff_delay(3, milliseconds(100), milliseconds(5000), 0.5), milliseconds(400));
  EXPECT_EQ(backoff_delay(29, milliseconds(100), milliseconds(5000), 0.5), milliseconds(5000));
  // Jitter spans [0.5, 1.5) of the delay: 200 ms * 0.5 and * 1.5.
  EXPECT_EQ(backoff_delay(2, milliseconds(100), milliseconds(5000), 0.0), milliseconds(100));
  EXPECT_EQ(backoff_delay(2, milliseconds(100), milliseconds(5000), 1.0), milliseconds(300));
}

TEST(Backoff, GrowsWithinTheJitterBandAndResets) {
  Backoff b(milliseconds(100), milliseconds(1000));
  // Retry n waits 100 * 2^(n-1) ms capped at 1000, times [0.5, 1.5).
  const int plain[] = {100, 200, 400, 800, 1000, 1000, 1000};
  for (int expected : plain) {
    const auto d = b.next().count();
    EXPECT_GE(d, expected / 2);
    EXPECT_LT(d, expected * 3 / 2);
  }
  EXPECT_EQ(b.retries(), 7);
  b.reset();
  EXPECT_EQ(b.retries(), 0);
  const auto first = b.next().count();
  EXPECT_GE(first, 50);
  EXPECT_LT(first, 150);
}

TEST(Backoff, ALongOutageNeverOverflows) {
  Backoff b(milliseconds(100), milliseconds(5000));
  for (int i = 0; i < 10000; ++i) {
    const auto d = b.next();
    ASSERT_GE(d.count(), 0);
    ASSERT_LT(d.count(), 7500);
  }
}

TEST(SleepFor, ReturnsTrueAfterTheWholeDuration) {
  std::stop_source stop;
  EXPECT_TRUE(sleep_for(stop.get_token(), milliseconds(1)));
}

TEST(SleepFor, AStopRequestEndsItEarlyAndReturnsFalse) {
  std::stop_source stop;
  std::jthread stopper([&stop] {
    std::this_thread::sleep_for(milliseconds(20));
    stop.request_stop();
  });
  // An hour-long sleep that returns at all proves the stop woke it.
  EXPECT_FALSE(sleep_for(stop.get_token(), std::chrono::hours(1)));
}

TEST(SleepFor, AlreadyStoppedReturnsFalseAtOnce) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(sleep_for(stop.get_token(), std::chrono::hours(1)));
}

}  // namespace
}  // namespace hi
