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
#include <string>
#include <string_view>
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

}  // namespace hi::api
