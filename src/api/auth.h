// API tokens: HS256 JWTs with the claims CONTRACTS fixes (`iss` "hashinsight", `aud`
// "hashinsight-api", `sub` and `tenant` as strings of integer ids, `scopes` a JSON array,
// `exp` required, `nbf` honoured), issued by `hashinsight token` and verified on every request.
//
// cpp-jwt signs and checks the HMAC; the algorithm and every claim the API relies on are
// checked here, by hand and against the caller's clock, so that no library default (an `alg`
// taken from the token, a missing `exp` or `aud` let through) decides who gets in.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.h"

namespace hi::api {

struct TokenOptions {
  std::string secret;  // the HMAC key (JWT_SECRET)
  std::string issuer = "hashinsight";
  std::string audience = "hashinsight-api";
  std::chrono::seconds leeway{30};  // clock skew allowed on exp and nbf
};

// Who a verified token speaks for.
struct Principal {
  std::string user_id;    // digits
  std::string tenant_id;  // digits
  std::vector<std::string> scopes;
  std::int64_t expires_at = 0;  // unix seconds

  bool has_scope(std::string_view scope) const;
};

// A signed token for `user` of `tenant` with `scopes`, valid from `now_s` for `ttl`.
std::string issue_token(const TokenOptions& options, const std::string& user,
                        const std::string& tenant, const std::vector<std::string>& scopes,
                        std::chrono::seconds ttl, std::int64_t now_s);

// The principal of `token` at `now_s` (unix seconds). Any failure (malformed, not HS256, bad
// signature, expired, not yet valid, wrong issuer or audience, a claim missing or of the wrong
// type) is kInvalidArgument with a short reason the API may show: the caller answers 401.
Result<Principal> verify_token(const TokenOptions& options, std::string_view token,
                               std::int64_t now_s);

// verify_token() for the tokens of one TokenOptions, remembering those that passed by their
// exact text: a client sends the same token with every request, and verifying it (an HMAC and
// two JSON parses) was a quarter of the API's CPU on a cached read. Envoy's JWT filter keeps
// such a cache too. A remembered token still has its `exp` checked against `now_s` at each use;
// if the clock went back since it was verified it is verified again (for `nbf`). A token that
// fails is never remembered, nor one longer than kMaxTokenBytes. Bounded: when full it is
// emptied and refills with the next requests. Thread-safe.
class TokenCache {
 public:
  static constexpr std::size_t kMaxTokenBytes = 2048;

  explicit TokenCache(std::size_t capacity = 8192) : capacity_(capacity) {}
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  Result<Principal> verify(const TokenOptions& options, std::string_view token, std::int64_t now_s);
  std::size_t size() const;

 private:
  struct Entry {
    Principal who;
    std::int64_t verified_at = 0;
  };
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
};

}  // namespace hi::api
