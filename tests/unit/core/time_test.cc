#include "core/time.h"

#include <gtest/gtest.h>

namespace hi {
namespace {

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

}  // namespace
}  // namespace hi
