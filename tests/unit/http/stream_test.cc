#include "http/stream.h"

#include <gtest/gtest.h>

#include "http/internal/stream_port.h"

namespace hi::http {
namespace {

using internal::StreamPort;

TEST(Stream, FramesEachWriteAsAChunk) {
  Stream s;
  EXPECT_TRUE(s.write("data: 1\n\n"));
  EXPECT_TRUE(s.write(""));  // nothing to send, not an end
  EXPECT_TRUE(s.write(std::string(26, 'x')));
  const auto taken = StreamPort::take(s);
  EXPECT_EQ(taken.data, "9\r\ndata: 1\n\n\r\n1a\r\n" + std::string(26, 'x') + "\r\n");
  EXPECT_FALSE(taken.closing);
  EXPECT_TRUE(StreamPort::take(s).data.empty());
}

TEST(Stream, WakesTheConnectionOnceUntilItTakes) {
  Stream s;
  int wakes = 0;
  EXPECT_FALSE(StreamPort::attach(s, [&] { ++wakes; }));
  s.write("a");
  s.write("b");
  EXPECT_EQ(wakes, 1);
  StreamPort::take(s);
  s.write("c");
  EXPECT_EQ(wakes, 2);
}

TEST(Stream, WritesBeforeTheHeadWaitForIt) {
  Stream s;
  s.write("early");
  EXPECT_TRUE(StreamPort::attach(s, [] {}));
  EXPECT_EQ(StreamPort::take(s).data, "5\r\nearly\r\n");
}

TEST(Stream, CloseRefusesFurtherWrites) {
  Stream s;
  s.write("last");
  s.close();
  EXPECT_FALSE(s.write("late"));
  const auto taken = StreamPort::take(s);
  EXPECT_TRUE(taken.closing);
  EXPECT_EQ(taken.data, "4\r\nlast\r\n");
  EXPECT_FALSE(s.ended());  // until the connection has sent it
}

TEST(Stream, ASlowClientOverflowsInsteadOfGrowingWithoutBound) {
  Stream s(16);
  EXPECT_TRUE(s.write("0123456789"));  // 10 bytes + framing = 15
  EXPECT_FALSE(s.write("0123456789"));
  EXPECT_FALSE(s.write("x"));
  EXPECT_TRUE(StreamPort::take(s).overflow);
}

TEST(Stream, OnCloseRunsOnceWhenTheStreamEnds) {
  Stream s;
  int closed = 0;
  s.on_close([&] { ++closed; });
  StreamPort::end(s);
  StreamPort::end(s);
  EXPECT_EQ(closed, 1);
  EXPECT_TRUE(s.ended());
  EXPECT_FALSE(s.write("x"));
  s.on_close([&] { ++closed; });  // already ended: runs at once
  EXPECT_EQ(closed, 2);
}

}  // namespace
}  // namespace hi::http
