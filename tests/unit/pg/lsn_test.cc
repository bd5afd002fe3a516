#include "pg/lsn.h"

#include <gtest/gtest.h>

#include <string>

namespace hi::pg {
namespace {

TEST(Lsn, ToStringPrintsLikePostgres) {
  EXPECT_EQ(Lsn{0x16B3748}.to_string(), "0/16B3748");
  EXPECT_EQ(Lsn{0}.to_string(), "0/0");
  EXPECT_EQ(Lsn{0x1'00000000}.to_string(), "1/0");
  EXPECT_EQ(Lsn{0x16'B374D848}.to_string(), "16/B374D848");
  EXPECT_EQ(Lsn{~std::uint64_t{0}}.to_string(), "FFFFFFFF/FFFFFFFF");
}

TEST(Lsn, ParseRoundTrips) {
  for (std::uint64_t v : {std::uint64_t{0}, std::uint64_t{0x16B3748}, std::uint64_t{0x1'00000000},
                          std::uint64_t{0xABCDEF01'23456789}, ~std::uint64_t{0}}) {
    Result<Lsn> parsed = Lsn::parse(Lsn{v}.to_string());
    ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
    EXPECT_EQ(parsed->value, v);
  }
}

TEST(Lsn, ParseAcceptsLowerCaseAndLeadingZeros) {
  Result<Lsn> lsn = Lsn::parse("16/b374d848");
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(lsn->value, 0x16'B374D848u);
  lsn = Lsn::parse("00000000/0000000A");
  ASSERT_TRUE(lsn.ok());
  EXPECT_EQ(lsn->value, 10u);
}

TEST(Lsn, ParseRejectsMalformedText) {
  for (const char* bad : {"", "/", "0/", "/0", "0", "0x1/2", "1/2/3", "123456789/0", "0/123456789",
                          " 0/1", "0/1 ", "-1/0", "+1/0", "g/0", "0-1", "0/1\n"}) {
    Result<Lsn> lsn = Lsn::parse(bad);
    ASSERT_FALSE(lsn.ok()) << '"' << bad << '"';
    EXPECT_EQ(lsn.error().code, Code::kInvalidArgument);
    EXPECT_NE(lsn.error().message.find(std::string("\"") + bad + "\""), std::string::npos)
        << lsn.error().message;
  }
}

TEST(Lsn, OrdersByWalPosition) {
  EXPECT_LT(Lsn{0xFFFFFFFF}, Lsn{0x1'00000000});
  EXPECT_EQ(Lsn{5}, Lsn{5});
  EXPECT_NE(Lsn{5}, Lsn{6});
  EXPECT_GT(*Lsn::parse("1/0"), *Lsn::parse("0/FFFFFFFF"));
}

}  // namespace
}  // namespace hi::pg
