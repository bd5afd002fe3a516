#include "core/log.h"

#include <gtest/gtest.h>

namespace hi {
namespace {

TEST(Log, JsonLinesCarryComponentMessageAndFields) {
  const std::string line = format_log_line(LogFormat::kJson, LogLevel::kWarn, "relay",
                                           "lag \"high\"", {{"slot", "s1"}, {"bytes", 42}}, 0);
  EXPECT_EQ(line,
            "{\"ts\":\"1970-01-01T00:00:00.000000Z\",\"level\":\"warn\",\"component\":\"relay\","
            "\"msg\":\"lag \\\"high\\\"\",\"bytes\":42,\"slot\":\"s1\"}");
  const std::string text =
      format_log_line(LogFormat::kText, LogLevel::kInfo, "up", "ready", {{"url", "x"}}, 0);
  EXPECT_EQ(text, "1970-01-01T00:00:00.000000Z info up: ready url=x");
}

}  // namespace
}  // namespace hi
