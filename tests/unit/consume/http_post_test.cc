#include "consume/internal/http_post.h"

#include <gtest/gtest.h>

namespace hi::consume::internal {
namespace {

TEST(ParseHttpUrl, SplitsHostPortAndPath) {
  auto u = parse_http_url("http://127.0.0.1:8099/hooks/crm?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8099);
  EXPECT_EQ(u->path, "/hooks/crm?x=1");
  auto d = parse_http_url("http://crm.example");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 80);
  EXPECT_EQ(d->path, "/");
}

TEST(ParseHttpUrl, RejectsWhatItCannotSpeak) {
  EXPECT_FALSE(parse_http_url("https://crm.example/").ok());
  EXPECT_FALSE(parse_http_url("http://:80/").ok());
  EXPECT_FALSE(parse_http_url("http://h:port/").ok());
}

}  // namespace
}  // namespace hi::consume::internal
