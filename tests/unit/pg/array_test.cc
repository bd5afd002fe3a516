#include "pg/array.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace hi::pg {
namespace {

TEST(ArrayLiteral, QuotesAndEscapesEveryElement) {
  EXPECT_EQ(array_literal(std::vector<std::string>{}), "{}");
  EXPECT_EQ(array_literal(std::vector<std::string>{"a", "b c"}), R"({"a","b c"})");
  EXPECT_EQ(array_literal(std::vector<std::string>{R"(q"x)", R"(back\slash)"}),
            R"({"q\"x","back\\slash"})");
  // Quoted, NULL is the text "NULL", and commas and braces stay inside their element.
  EXPECT_EQ(array_literal(std::vector<std::string_view>{"", "NULL", "a,b", "{c}"}),
            R"({"","NULL","a,b","{c}"})");
}

TEST(ArrayLiteral, NumbersKeepEveryDigit) {
  EXPECT_EQ(array_literal(std::vector<std::int64_t>{1, -2, 9223372036854775807}),
            R"({"1","-2","9223372036854775807"})");
  // 0.1 is not exact in binary: %.17g prints the digits that round-trip.
  EXPECT_EQ(array_literal(std::vector<double>{0.5, 0.1}), R"({"0.5","0.10000000000000001"})");
  ArrayLiteral mixed;
  mixed.add(std::int64_t{7});
  mixed.add("x");
  EXPECT_EQ(mixed.str(), R"({"7","x"})");
}

}  // namespace
}  // namespace hi::pg
