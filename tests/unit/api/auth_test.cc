// The token verifier against tokens built here by hand (base64url and HMAC from OpenSSL, not
// from the JWT library under test): every way a token can be wrong is a refusal.
#include "api/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "hand_token.h"

namespace hi::api {
namespace {

using nlohmann::json;

constexpr std::int64_t kNow = 1'800'000'000;
const TokenOptions kOptions{"test-secret-of-32-bytes-000000000", "hashinsight", "hashinsight-api",
                            std::chrono::seconds(30)};

std::string unb64url(std::string in) {
  for (char& c : in) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (in.size() % 4 != 0) in.push_back('=');
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  while (!out.empty() && out.back() == '\0') out.pop_back();  // padding bytes
  return out;
}

// header.payload.signature, HMAC over the first two with `md`.
std::string make(const json& header, const json& payload, const std::string& key = kOptions.secret,
                 const EVP_MD* md = EVP_sha256()) {
  const std::string input = test::b64url(header.dump()) + "." + test::b64url(payload.dump());
  return input + "." + test::hmac_b64url(input, key, md);
}

json claims() {
  return {{"iss", "hashinsight"},
          {"aud", "hashinsight-api"},
          {"sub", "101"},
          {"tenant", "1"},
          {"scopes", {"miners:write", "portfolio:read"}},
          {"iat", kNow - 10},
          {"nbf", kNow - 10},
          {"exp", kNow + 3600}};
}

const json kHs256 = {{"alg", "HS256"}, {"typ", "JWT"}};

std::string refusal(const std::string& token) {
  auto r = verify_token(kOptions, token, kNow);
  EXPECT_FALSE(r.ok()) << "accepted: " << token;
  return r.ok() ? "" : r.error().message;
}

TEST(Auth, AnIssuedTokenVerifiesWithItsClaims) {
  const std::string token = issue_token(kOptions, "101", "1", {"miners:write", "portfolio:read"},
                                        std::chrono::hours(1), kNow);
  auto who = verify_token(kOptions, token, kNow + 5);
  ASSERT_TRUE(who.ok()) << who.error().message;
  EXPECT_EQ(who->user_id, "101");
  EXPECT_EQ(who->tenant_id, "1");
  EXPECT_TRUE(who->has_scope("miners:write"));
  EXPECT_TRUE(who->has_scope("portfolio:read"));
  EXPECT_FALSE(who->has_scope("treasury:trade"));
  EXPECT_EQ(who->expires_at, kNow + 3600);
  // The claims are the ones CONTRACTS fixes, readable by any JWT tool.
  const auto dot = token.find('.');
  const json header = json::parse(unb64url(token.substr(0, dot)));
  const json payload = json::parse(unb64url(token.substr(dot + 1, token.rfind('.') - dot - 1)));
  EXPECT_EQ(header["alg"], "HS256");
  EXPECT_EQ(payload["iss"], "hashinsight");
  EXPECT_EQ(payload["aud"], "hashinsight-api");
  EXPECT_EQ(payload["sub"], "101");
  EXPECT_EQ(payload["tenant"], "1");
  EXPECT_EQ(payload["scopes"], json({"miners:write", "portfolio:read"}));
  EXPECT_EQ(payload["exp"], kNow + 3600);
  // The signature is HMAC-SHA256 of the first two parts with the secret.
  EXPECT_EQ(token.substr(token.rfind('.') + 1),
            test::hmac_b64url(token.substr(0, token.rfind('.')), kOptions.secret, EVP_sha256()));
}

TEST(Auth, AHandMadeTokenWithTheRightKeyVerifies) {
  auto who = verify_token(kOptions, make(kHs256, claims()), kNow);
  ASSERT_TRUE(who.ok()) << who.error().message;
  EXPECT_EQ(who->user_id, "101");
}

TEST(Auth, MissingAndMalformedTokensAreRefused) {
  EXPECT_NE(refusal("").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("abc").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("a.b").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("a.b.c.d").find("malformed"), std::string::npos);
  EXPECT_NE(refusal("!!!.???.***").find("malformed"), std::string::npos);
  EXPECT_NE(refusal(test::b64url("[1,2]") + "." + test::b64url("{}") + ".sig").find("malformed"),
            std::string::npos);
  EXPECT_NE(refusal(std::string(10000, 'a')).find("malformed"), std::string::npos);
  // Bytes outside base64url (the fuzzer's finding: the library's decoder indexes a table with
  // them unchecked) are refused before any decoding.
  EXPECT_NE(refusal("ey\xff\xfe." + test::b64url("{}") + ".c2ln").find("malformed"),
            std::string::npos);
  EXPECT_NE(refusal(test::b64url(kHs256.dump()) + ".e30=.c2ln").find("malformed"),
            std::string::npos);
  EXPECT_NE(refusal(test::b64url(kHs256.dump()) + ".e30.c2 ln").find("malformed"),
            std::string::npos);
}

TEST(Auth, BadSignaturesAreRefused) {
  std::string token = make(kHs256, claims());
  char& first = token[token.rfind('.') + 1];  // all six bits of this one are signature bits
  first = first == 'A' ? 'B' : 'A';
  EXPECT_NE(refusal(token).find("signature"), std::string::npos);
  EXPECT_NE(refusal(make(kHs256, claims(), "another-secret")).find("signature"), std::string::npos);
  // A payload changed after signing (another tenant) keeps the old signature.
  const std::string good = make(kHs256, claims());
  json other = claims();
  other["tenant"] = "2";
  const std::string forged = good.substr(0, good.find('.')) + "." + test::b64url(other.dump()) +
                             good.substr(good.rfind('.'));
  EXPECT_NE(refusal(forged).find("signature"), std::string::npos);
}

TEST(Auth, OnlyHs256IsAccepted) {
  // alg none, with and without a signature part.
  const std::string unsigned_input = test::b64url(json{{"alg", "none"}, {"typ", "JWT"}}.dump()) +
                                     "." + test::b64url(claims().dump());
  refusal(unsigned_input + ".");
  EXPECT_NE(refusal(unsigned_input + ".x").find("HS256"), std::string::npos);
  // Correctly signed with the right key, but another algorithm.
  EXPECT_NE(
      refusal(make({{"alg", "HS512"}, {"typ", "JWT"}}, claims(), kOptions.secret, EVP_sha512()))
          .find("HS256"),
      std::string::npos);
  EXPECT_NE(refusal(make({{"alg", "RS256"}}, claims())).find("HS256"), std::string::npos);
  EXPECT_NE(refusal(make({{"typ", "JWT"}}, claims())).find("HS256"), std::string::npos);
}

TEST(Auth, TimeClaimsHoldWithinTheLeeway) {
  json expired = claims();
  expired["exp"] = kNow - 31;  // beyond the 30 s leeway
  EXPECT_NE(refusal(make(kHs256, expired)).find("expired"), std::string::npos);
  expired["exp"] = kNow - 10;  // within it
  EXPECT_TRUE(verify_token(kOptions, make(kHs256, expired), kNow).ok());
  json early = claims();
  early["nbf"] = kNow + 31;
  EXPECT_NE(refusal(make(kHs256, early)).find("not valid yet"), std::string::npos);
  early["nbf"] = kNow + 10;
  EXPECT_TRUE(verify_token(kOptions, make(kHs256, early), kNow).ok());
  json no_exp = claims();
  no_exp.erase("exp");
  EXPECT_NE(refusal(make(kHs256, no_exp)).find("exp"), std::string::npos);
  json text_exp = claims();
  text_exp["exp"] = std::to_string(kNow + 3600);
  refusal(make(kHs256, text_exp));
}

TEST(Auth, IssuerAudienceAndIdentityClaimsAreChecked) {
  for (const char* claim : {"iss", "aud", "sub", "tenant", "scopes"}) {
    json missing = claims();
    missing.erase(claim);
    EXPECT_FALSE(refusal(make(kHs256, missing)).empty()) << claim;
  }
  json c = claims();
  c["iss"] = "someone-else";
  EXPECT_NE(refusal(make(kHs256, c)).find("issuer"), std::string::npos);
  c = claims();
  c["aud"] = "another-api";
  EXPECT_NE(refusal(make(kHs256, c)).find("audience"), std::string::npos);
  c = claims();
  c["aud"] = {"another-api", "hashinsight-api"};  // an array holding ours is fine
  EXPECT_TRUE(verify_token(kOptions, make(kHs256, c), kNow).ok());
  c = claims();
  c["sub"] = 101;  // CONTRACTS: a string
  EXPECT_NE(refusal(make(kHs256, c)).find("sub"), std::string::npos);
  c = claims();
  c["tenant"] = "1 OR 1=1";
  EXPECT_NE(refusal(make(kHs256, c)).find("tenant"), std::string::npos);
  c = claims();
  c["scopes"] = "miners:write";
  EXPECT_NE(refusal(make(kHs256, c)).find("scopes"), std::string::npos);
  c = claims();
  c["scopes"] = {"miners:write", 7};
  EXPECT_NE(refusal(make(kHs256, c)).find("scopes"), std::string::npos);
}

TEST(Auth, NoKeyNoEntry) {
  TokenOptions none = kOptions;
  none.secret.clear();
  EXPECT_FALSE(verify_token(none, make(kHs256, claims(), ""), kNow).ok());
}

TEST(TokenCache, ARememberedTokenStillExpiresAndAForgedOneIsStillRefused) {
  TokenCache cache;
  json c = claims();
  c["exp"] = kNow + 100;
  const std::string token = make(kHs256, c);
  auto first = cache.verify(kOptions, token, kNow);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(cache.size(), 1u);
  auto again = cache.verify(kOptions, token, kNow + 50);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->user_id, "101");
  EXPECT_EQ(again->tenant_id, "1");
  EXPECT_EQ(again->scopes, first->scopes);
  // exp + leeway = kNow + 130: refused from then on, remembered or not.
  EXPECT_TRUE(cache.verify(kOptions, token, kNow + 129).ok());
  auto late = cache.verify(kOptions, token, kNow + 130);
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.error().message.find("expired"), std::string::npos);
  // The same claims signed with another key, and the token with its last character changed.
  EXPECT_FALSE(cache.verify(kOptions, make(kHs256, claims(), "another-key"), kNow).ok());
  // A remembered token's signature under another user's claims.
  json other = claims();
  other["sub"] = "999";
  const std::string theirs = make(kHs256, other);
  const std::string spliced = theirs.substr(0, theirs.rfind('.')) + token.substr(token.rfind('.'));
  EXPECT_FALSE(cache.verify(kOptions, spliced, kNow).ok());
  EXPECT_EQ(cache.size(), 0u);  // the expired one left, the refused ones never came in
}

TEST(TokenCache, AClockThatWentBackVerifiesAgain) {
  TokenCache cache;
  json c = claims();
  c["nbf"] = kNow;
  const std::string token = make(kHs256, c);
  ASSERT_TRUE(cache.verify(kOptions, token, kNow).ok());
  // nbf - leeway = kNow - 30: a minute earlier the token is not valid yet.
  auto early = cache.verify(kOptions, token, kNow - 60);
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.error().message.find("not valid yet"), std::string::npos);
}

TEST(TokenCache, StaysWithinItsCapacity) {
  TokenCache cache(4);
  for (int i = 0; i < 10; ++i) {
    json c = claims();
    c["sub"] = std::to_string(200 + i);
    auto who = cache.verify(kOptions, make(kHs256, c), kNow);
    ASSERT_TRUE(who.ok());
    EXPECT_EQ(who->user_id, std::to_string(200 + i));
    EXPECT_LE(cache.size(), 4u);
  }
}

}  // namespace
}  // namespace hi::api
