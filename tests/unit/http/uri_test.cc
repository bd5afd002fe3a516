#include "http/uri.h"

#include <gtest/gtest.h>

namespace hi::http {
namespace {

TEST(PercentDecode, DecodesEscapesAndPlusOnlyWhenAsked) {
  EXPECT_EQ(*percent_decode("a%20b%2Fc"), "a b/c");
  EXPECT_EQ(*percent_decode("J%C3%BCrgen"), "J\xC3\xBCrgen");
  EXPECT_EQ(*percent_decode("a+b"), "a+b");
  EXPECT_EQ(*percent_decode("a+b", true), "a b");
  EXPECT_EQ(*percent_decode("%2b", true), "+");
  EXPECT_EQ(*percent_decode(""), "");
}

TEST(PercentDecode, RefusesBrokenEscapesAndNul) {
  for (const char* bad : {"%", "%4", "%zz", "a%g0", "%00", "x%2"}) {
    auto r = percent_decode(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
  }
}

TEST(PercentEncode, RoundTripsEveryByteExceptNul) {
  std::string all;
  for (int c = 1; c < 256; ++c) all.push_back(static_cast<char>(c));
  const std::string encoded = percent_encode(all);
  EXPECT_EQ(encoded.find_first_of(" /?&=#+"), std::string::npos);
  EXPECT_EQ(*percent_decode(encoded), all);
  EXPECT_EQ(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
}

TEST(ParseQuery, KeepsOrderDuplicatesAndFlags) {
  auto q = parse_query("days=30&name=J%C3%BCrgen+X&flag&&days=7&=v&e=");
  ASSERT_TRUE(q.ok());
  const Pairs want = {{"days", "30"}, {"name", "J\xC3\xBCrgen X"},
                      {"flag", ""},   {"days", "7"},
                      {"", "v"},      {"e", ""}};
  EXPECT_EQ(*q, want);
  EXPECT_TRUE(parse_query("")->empty());
  auto bad = parse_query("a=%zz");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("query parameter 'a'"), std::string::npos);
}

TEST(ParseTarget, SplitsBeforeDecoding) {
  auto t = parse_target("/api/miners/a%2Fb/status?x=1");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->path, "/api/miners/a%2Fb/status");
  EXPECT_EQ(t->segments, (std::vector<std::string>{"api", "miners", "a/b", "status"}));
  EXPECT_EQ(t->query, (Pairs{{"x", "1"}}));
  EXPECT_TRUE(parse_target("/")->segments.empty());
  EXPECT_EQ(parse_target("/a/")->segments, (std::vector<std::string>{"a", ""}));
  EXPECT_EQ(parse_target("/?q")->query, (Pairs{{"q", ""}}));
}

TEST(ParseTarget, RefusesWhatIsNotAnOriginFormPath) {
  for (const char* bad : {"", "*", "http://h/x", "api/x", "/a#frag", "/a%zz", "/a?b=%"}) {
    EXPECT_FALSE(parse_target(bad).ok()) << bad;
  }
}

TEST(ParseUrl, SplitsHostPortAndTarget) {
  auto u = parse_url("http://127.0.0.1:8099/hooks/crm?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8099);
  EXPECT_EQ(u->target, "/hooks/crm?x=1");
  EXPECT_EQ(u->authority(), "127.0.0.1:8099");
  auto d = parse_url("http://crm.example");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 80);
  EXPECT_EQ(d->target, "/");
  EXPECT_EQ(d->authority(), "crm.example");
  EXPECT_EQ(parse_url("http://h?q=1")->target, "/?q=1");
  auto v6 = parse_url("http://[::1]:9000/x");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9000);
  EXPECT_EQ(v6->authority(), "[::1]:9000");
  EXPECT_FALSE(v6->tls);
}

TEST(ParseUrl, HttpsDefaultsToPort443) {
  auto s = parse_url("https://ch.example/?query=1");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->tls);
  EXPECT_EQ(s->port, 443);
  EXPECT_EQ(s->authority(), "ch.example");
  auto p = parse_url("https://127.0.0.1:8443");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->port, 8443);
  EXPECT_EQ(p->authority(), "127.0.0.1:8443");
  // 80 is not https's default: it stays in the Host header.
  EXPECT_EQ(parse_url("https://h:80/")->authority(), "h:80");
}

TEST(ParseUrl, RefusesWhatItCannotSpeak) {
  for (const char* bad :
       {"https:/crm.example/", "http://:80/", "http://h:port/", "http://h:/", "http://h:0/",
        "http://h:70000/", "ftp://h/", "http://u:p@h/", "http://[::1/"}) {
    auto r = parse_url(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace hi::http
