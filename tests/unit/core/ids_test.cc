#include "core/ids.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "core/log.h"
#include "core/result.h"
#include "core/time.h"

namespace hi {
namespace {

TEST(UuidV7, LayoutCarriesTimestampVersionAndVariant) {
  // 0x017F22E279B0 ms = 1645557742000 (2022-02-22T19:22:22Z), RFC 9562 appendix A.6.
  const std::string id = uuid_v7_from(0x017F22E279B0ULL, 0xCC3, 0x18C4DC0C0C07398FULL);
  EXPECT_EQ(id, "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
}

TEST(UuidV7, IsCanonicalUniqueAndSortsByCreation) {
  const std::regex shape("^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 20000; ++i) {
    const std::string id = uuid_v7();
    ASSERT_TRUE(std::regex_match(id, shape)) << id;
    ASSERT_TRUE(seen.insert(id).second) << "duplicate " << id;
    ASSERT_LT(prev, id) << "not monotonic at " << i;
    prev = id;
  }
}

TEST(RandomHex, HasRequestedLength) {
  EXPECT_EQ(random_hex(32).size(), 64u);
  EXPECT_NE(random_hex(16), random_hex(16));
}

TEST(Time, FormatsAndParsesRfc3339WithMicroseconds) {
  EXPECT_EQ(format_rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(format_rfc3339_us(1'763'805'600'123'456), "2025-11-22T10:00:00.123456Z");
  auto t = parse_rfc3339_us("2025-11-22T10:00:00.123456Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 1'763'805'600'123'456);
  auto pg = parse_rfc3339_us("2025-11-22 12:00:00.5+02");  // PostgreSQL's text form
  ASSERT_TRUE(pg.ok()) << pg.error().message;
  EXPECT_EQ(*pg, 1'763'805'600'500'000);
  EXPECT_FALSE(parse_rfc3339_us("yesterday").ok());
  EXPECT_FALSE(parse_rfc3339_us("2025-11-22T10:13:20.Z").ok());
}

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

TEST(Result, CarriesValueOrErrorWithContext) {
  Result<int> ok = 7;
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 7);
  Result<int> bad = unavailable("connection refused");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().wrap("pg connect host=db1").to_string(),
            "unavailable: pg connect host=db1: connection refused");
  EXPECT_EQ(bad.value_or(3), 3);
}

}  // namespace
}  // namespace hi
