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

TEST(RedactUrl, HidesOnlyThePassword) {
  EXPECT_EQ(redact_url("postgresql://hashinsight:s3cret@127.0.0.1:5432/hashinsight"),
            "postgresql://hashinsight:***@127.0.0.1:5432/hashinsight");
  EXPECT_EQ(redact_url("redis://:pw@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
  EXPECT_EQ(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
  EXPECT_EQ(redact_url("postgresql://relay@host/db"), "postgresql://relay@host/db");
  // An '@' after the path is not a credential separator.
  EXPECT_EQ(redact_url("http://host:80/a@b"), "http://host:80/a@b");
  EXPECT_EQ(redact_url("not a url"), "not a url");
}

TEST(Strings, HexRoundTripsEveryByte) {
  EXPECT_EQ(hex_encode(std::string("\x00\x01\xab\xff", 4)), "0001abff");
  EXPECT_EQ(hex_encode(""), "");
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(hex_decode(hex_encode(all)), all);
  EXPECT_EQ(hex_decode("0001ABff"), std::string("\x00\x01\xab\xff", 4));
  EXPECT_FALSE(hex_decode("abc").has_value());  // odd length
  EXPECT_FALSE(hex_decode("0g").has_value());   // not a digit
}

}  // namespace
}  // namespace hi
