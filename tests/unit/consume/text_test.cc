#include "consume/internal/text.h"

#include <gtest/gtest.h>

namespace hi::consume::internal {
namespace {

TEST(PgText, AcceptsUtf8WithoutNul) {
  EXPECT_TRUE(is_pg_text(""));
  EXPECT_TRUE(is_pg_text("miner.added"));
  EXPECT_TRUE(is_pg_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_pg_text(std::string("a\0b", 3)));
  EXPECT_FALSE(is_pg_text("\xff"));
  EXPECT_FALSE(is_pg_text("caf\xc3"));           // cut inside a character
  EXPECT_FALSE(is_pg_text("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_pg_text("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(is_pg_text("\xf4\x90\x80\x80"));  // beyond U+10FFFF
}

TEST(PgText, EscapesWhatIsNotText) {
  EXPECT_EQ(escape_pg_text("plain"), "plain");
  EXPECT_EQ(escape_pg_text(std::string("a\0b\xff\xc3\xa9", 6)), "a\\x00b\\xff\xc3\xa9");
  EXPECT_TRUE(is_pg_text(escape_pg_text("\xc3")));
}

TEST(PgText, PrefixNeverCutsACharacter) {
  const std::string s = "ab\xe2\x82\xac";  // "ab€": 5 bytes
  EXPECT_EQ(utf8_prefix(s, 10), s);
  EXPECT_EQ(utf8_prefix(s, 5), s);
  EXPECT_EQ(utf8_prefix(s, 4), "ab");
  EXPECT_EQ(utf8_prefix(s, 3), "ab");
  EXPECT_EQ(utf8_prefix(s, 2), "ab");
  EXPECT_EQ(utf8_prefix(s, 1), "a");
}

TEST(Base64, RoundTripsAnyBytes) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t n = 0; n <= all.size(); n += 37) {
    const std::string part = all.substr(0, n);
    EXPECT_EQ(base64_decode(base64_encode(part)), part);
  }
  EXPECT_FALSE(base64_decode("Zg=").has_value());
  EXPECT_FALSE(base64_decode("Z=g=").has_value());
  EXPECT_FALSE(base64_decode("Zm9*").has_value());
}

}  // namespace
}  // namespace hi::consume::internal
