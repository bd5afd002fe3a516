// The API token verifier (api/auth.h).
//
// Input, text, three lines: a JOSE header, a claims object, and a flag line. The target builds
// base64url(header).base64url(claims).signature, signed with the verifier's key when the flag
// line is "sign" (so the fuzzer reaches the claim checks behind the signature), with a wrong one
// otherwise; it also verifies the whole input as a raw token.
//
// Checks what auth.h promises: no input crashes or throws; a token is accepted only when it is
// signed with the key, its header says HS256, and its claims hold (sub and tenant strings of
// digits, scopes strings, iss and aud ours, exp in the future).

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "api/auth.h"
#include "fuzz_support.h"
#include "hand_token.h"

namespace {

using hi::fuzz::check;
using hi::fuzz::next_line;
using nlohmann::json;

constexpr std::int64_t kNow = 1'800'000'000;

bool digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  hi::api::TokenOptions options;
  options.secret = "fuzz-key";
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)hi::api::verify_token(options, input, kNow);  // raw: must not crash

  std::string_view rest = input;
  const std::string header(next_line(rest));
  const std::string claims(next_line(rest));
  const bool sign = next_line(rest) == "sign";
  const std::string signed_part = hi::test::b64url(header) + "." + hi::test::b64url(claims);
  const std::string token =
      signed_part + "." + hi::test::hmac_b64url(signed_part, sign ? "fuzz-key" : "other");
  auto who = hi::api::verify_token(options, token, kNow);
  if (!who.ok()) return 0;
  check(sign, "a token signed with another key was accepted");
  const json h = json::parse(header, nullptr, false);
  const json c = json::parse(claims, nullptr, false);
  check(h.is_object() && h.value("alg", "") == "HS256", "accepted a header that is not HS256");
  check(c.is_object(), "accepted claims that are not an object");
  check(digits(who->user_id) && digits(who->tenant_id), "sub or tenant not an id");
  check(c.value("sub", "") == who->user_id && c.value("tenant", "") == who->tenant_id,
        "principal differs from the claims");
  check(c.value("iss", "") == "hashinsight", "accepted another issuer");
  check(
      c.contains("exp") && c["exp"].is_number_integer() && c["exp"].get<std::int64_t>() + 30 > kNow,
      "accepted an expired token");
  check(c.contains("scopes") && c["scopes"].is_array() && c["scopes"].size() == who->scopes.size(),
        "scopes differ from the claims");
  return 0;
}
