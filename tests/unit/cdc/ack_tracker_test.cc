#include "cdc/ack_tracker.h"

#include <gtest/gtest.h>

namespace hi::cdc {
namespace {

TEST(AckTracker, ReleasesOnlyTheFullyAcknowledgedPrefix) {
  AckTracker t;
  const auto a = t.begin(100);
  t.sent(a);
  t.sent(a);
  t.commit(a, pg::Lsn{10});
  const auto b = t.begin(200);
  t.sent(b);
  t.commit(b, pg::Lsn{20});
  const auto c = t.begin(300);  // empty transaction (no published rows)
  t.commit(c, pg::Lsn{30});
  // b is acknowledged first (another partition), but a is not: nothing may be confirmed.
  EXPECT_EQ(t.acked(b), 200);
  EXPECT_FALSE(t.release().has_value());
  EXPECT_EQ(t.acked(a), 100);
  EXPECT_FALSE(t.release().has_value());
  t.acked(a);
  auto lsn = t.release();
  ASSERT_TRUE(lsn.has_value());
  EXPECT_EQ(lsn->value, 30u);  // a, b and the empty c together
  EXPECT_TRUE(t.idle());
  EXPECT_EQ(t.released_commit_time_us(), 300);
}

TEST(AckTracker, AnOpenTransactionHoldsBackLaterOnes) {
  AckTracker t;
  const auto a = t.begin(1);
  t.sent(a);
  t.acked(a);  // acknowledged before its Commit was decoded (large transaction streaming)
  EXPECT_FALSE(t.release().has_value());
  t.commit(a, pg::Lsn{5});
  EXPECT_EQ(t.release()->value, 5u);
}

TEST(AckTracker, AReportFromBeforeAResetIsIgnored) {
  AckTracker t;
  const auto old_tx = t.begin(100);
  t.sent(old_tx);
  t.reset();
  const auto tx = t.begin(200);
  t.sent(tx);
  t.commit(tx, pg::Lsn{0x20});
  EXPECT_EQ(t.acked(old_tx), 0);  // no effect on the new transaction
  EXPECT_FALSE(t.release());
  EXPECT_EQ(t.acked(tx), 200);
  EXPECT_EQ(t.release(), pg::Lsn{0x20});
}

}  // namespace
}  // namespace hi::cdc
