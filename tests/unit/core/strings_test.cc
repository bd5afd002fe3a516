#include "core/strings.h"

#include <gtest/gtest.h>

namespace hi {
namespace {

using List = std::vector<std::string>;

TEST(SplitList, SplitsTrimsAndDropsEmptyItems) {
  EXPECT_EQ(split_list("a,b,c"), (List{"a", "b", "c"}));
  EXPECT_EQ(split_list(" a , b,,\tc ,"), (List{"a", "b", "c"}));
  EXPECT_EQ(split_list("public.miners"), (List{"public.miners"}));
  EXPECT_EQ(split_list(""), List{});
  EXPECT_EQ(split_list(" , ,"), List{});
  EXPECT_EQ(split_list("x=1;y=2", ';'), (List{"x=1", "y=2"}));
}

TEST(Trim, RemovesBlanksAtBothEnds) {
  EXPECT_EQ(trim("  a b \r\n"), "a b");
  EXPECT_EQ(trim("\t"), "");
  EXPECT_EQ(trim("x"), "x");
}

}  // namespace
}  // namespace hi
