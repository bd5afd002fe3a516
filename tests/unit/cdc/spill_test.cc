#include "cdc/internal/spill.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace hi::cdc::internal {
namespace {

std::span<const char> span(const std::string& s) { return {s.data(), s.size()}; }

std::vector<std::string> read_all(Spill& spill) {
  std::vector<std::string> out;
  EXPECT_TRUE(spill.rewind());
  std::string buf;
  for (;;) {
    auto more = spill.next(buf);
    EXPECT_TRUE(more) << more.error().message;
    if (!more || !*more) break;
    out.push_back(buf);
  }
  return out;
}

TEST(Spill, ReplaysMessagesInOrderWithBinaryContent) {
  auto spill = Spill::create();
  ASSERT_TRUE(spill);
  const std::vector<std::string> messages = {std::string("I\x00\x01", 3), std::string("B\0\0x", 4),
                                             "", std::string(100000, 'z')};
  for (const auto& m : messages) ASSERT_TRUE(spill->append(span(m)));
  EXPECT_EQ(spill->messages(), 4u);
  EXPECT_EQ(read_all(*spill), messages);
  // A second replay reads the same again.
  EXPECT_EQ(read_all(*spill), messages);
}

TEST(StreamedTransactions, KeepsSegmentsPerTransactionUntilCommitOrAbort) {
  StreamedTransactions st;
  EXPECT_TRUE(st.empty());
  EXPECT_FALSE(st.open());
  EXPECT_FALSE(st.append(span("x")));  // outside a segment

  ASSERT_TRUE(st.start(700));
  ASSERT_TRUE(st.append(span("a1")));
  st.stop();
  ASSERT_TRUE(st.start(701));
  ASSERT_TRUE(st.append(span("b1")));
  st.stop();
  ASSERT_TRUE(st.start(700));  // a second segment of 700 continues its spill
  ASSERT_TRUE(st.append(span("a2")));
  EXPECT_EQ(st.open(), 700u);
  st.stop();

  st.abort(701, 701);  // the whole of 701 aborted: nothing of it remains
  EXPECT_FALSE(st.take(701));
  st.abort(700, 705);  // only a subtransaction of 700
  auto spill = st.take(700);
  ASSERT_TRUE(spill);
  EXPECT_TRUE(spill->aborted(705));
  EXPECT_FALSE(spill->aborted(700));
  EXPECT_EQ(read_all(*spill), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_TRUE(st.empty());
}

}  // namespace
}  // namespace hi::cdc::internal
