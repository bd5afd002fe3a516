#include "consume/runtime.h"

#include <gtest/gtest.h>

namespace hi::consume {
namespace {

using std::chrono::milliseconds;

TEST(BackoffDelay, DoublesFromTheBaseUpToTheCapWithJitter) {
  EXPECT_EQ(backoff_delay(2, milliseconds(100), milliseconds(5000), 0.5), milliseconds(100));
  EXPECT_EQ(backoff_delay(3, milliseconds(100), milliseconds(5000), 0.5), milliseconds(200));
  EXPECT_EQ(backoff_delay(4, milliseconds(100), milliseconds(5000), 0.5), milliseconds(400));
  EXPECT_EQ(backoff_delay(30, milliseconds(100), milliseconds(5000), 0.5), milliseconds(5000));
  // Jitter spans [0.5, 1.5) of the delay.
  EXPECT_EQ(backoff_delay(3, milliseconds(100), milliseconds(5000), 0.0), milliseconds(100));
  EXPECT_EQ(backoff_delay(3, milliseconds(100), milliseconds(5000), 1.0), milliseconds(300));
}

TEST(PgTextArray, QuotesAndEscapes) {
  EXPECT_EQ(pg_text_array({}), "{}");
  EXPECT_EQ(pg_text_array({"a", "b c"}), R"({"a","b c"})");
  EXPECT_EQ(pg_text_array({R"(q"x)", R"(back\slash)"}), R"({"q\"x","back\\slash"})");
  EXPECT_EQ(pg_text_array({"", "NULL"}), R"({"","NULL"})");
}

}  // namespace
}  // namespace hi::consume
