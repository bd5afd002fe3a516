#include "core/result.h"

#include <gtest/gtest.h>

namespace hi {
namespace {

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
