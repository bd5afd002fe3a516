#include "api/auth.h"

#include <algorithm>
#include <jwt/jwt.hpp>
#include <nlohmann/json.hpp>
#include <optional>

namespace hi::api {
namespace {

using nlohmann::json;

Error refused(std::string reason) { return invalid_argument("invalid token: " + reason); }

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 19 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The three dot-separated parts of a compact JWS, or none.
bool split_compact(std::string_view token, std::string_view parts[3]) {
  const auto a = token.find('.');
  if (a == std::string_view::npos) return false;
  const auto b = token.find('.', a + 1);
  if (b == std::string_view::npos || token.find('.', b + 1) != std::string_view::npos) {
    return false;
  }
  parts[0] = token.substr(0, a);
  parts[1] = token.substr(a + 1, b - a - 1);
  parts[2] = token.substr(b + 1);
  // base64url only: cpp-jwt's decoder indexes a table with each byte unchecked (an assert in
  // debug builds, an out-of-bounds read without one), so nothing else may reach it.
  for (int i = 0; i < 3; ++i) {
    const std::string_view part = parts[i];
    if (part.empty() || !std::all_of(part.begin(), part.end(), [](char c) {
          return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        })) {
      return false;
    }
  }
  return true;
}

std::optional<json> decode_part(std::string_view part) {
  std::string text;
  try {
    text = jwt::base64_uri_decode(part.data(), part.size());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

}  // namespace

bool Principal::has_scope(std::string_view scope) const {
  return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
}

std::string issue_token(const TokenOptions& options, const std::string& user,
                        const std::string& tenant, const std::vector<std::string>& scopes,
                        std::chrono::seconds ttl, std::int64_t now_s) {
  jwt::jwt_object obj{jwt::params::algorithm("HS256"), jwt::params::secret(options.secret)};
  obj.add_claim("iss", options.issuer);
  obj.add_claim("aud", options.audience);
  obj.add_claim("sub", user);
  obj.add_claim("tenant", tenant);
  obj.add_claim("scopes", scopes);
  obj.add_claim("iat", now_s);
  obj.add_claim("nbf", now_s);
  obj.add_claim("exp", now_s + ttl.count());
  return obj.signature();
}

Result<Principal> verify_token(const TokenOptions& options, std::string_view token,
                               std::int64_t now_s) {
  if (options.secret.empty()) return refused("no signing key is configured");
  std::string_view parts[3];
  if (token.size() > 8192 || !split_compact(token, parts)) return refused("malformed");
  // The algorithm is ours, not the token's: HS256 only (no "none", no RS/HS confusion).
  const auto header = decode_part(parts[0]);
  if (!header) return refused("malformed header");
  const auto alg = header->find("alg");
  if (alg == header->end() || !alg->is_string() || alg->get<std::string>() != "HS256") {
    return refused("algorithm must be HS256");
  }
  // The signature, by the library's HMAC over the first two parts (its decode() would also
  // check exp and nbf, against the system clock rather than `now_s`: the claims are checked
  // below).
  try {
    const jwt::jwt_header hs256{jwt::algorithm::HS256};
    jwt::jwt_signature signature{options.secret};
    const auto signed_part = token.substr(0, parts[0].size() + 1 + parts[1].size());
    const auto [valid, error] =
        signature.verify(hs256, jwt::string_view(signed_part.data(), signed_part.size()),
                         jwt::string_view(parts[2].data(), parts[2].size()));
    if (error || !valid) return refused("bad signature");
  } catch (const std::exception&) {
    return refused("malformed signature");
  }
  // The signature holds. Every claim the API relies on, checked here whatever the library let
  // through when a claim is absent.
  const auto payload = decode_part(parts[1]);
  if (!payload) return refused("malformed payload");
  const json& p = *payload;
  const std::int64_t leeway = options.leeway.count();
  const auto exp = p.find("exp");
  if (exp == p.end() || !exp->is_number_integer()) return refused("exp is missing");
  if (exp->get<std::int64_t>() + leeway <= now_s) return refused("expired");
  if (const auto nbf = p.find("nbf"); nbf != p.end()) {
    if (!nbf->is_number_integer()) return refused("nbf is not a number");
    if (nbf->get<std::int64_t>() - leeway > now_s) return refused("not valid yet");
  }
  const auto iss = p.find("iss");
  if (iss == p.end() || !iss->is_string() || iss->get<std::string>() != options.issuer) {
    return refused("wrong issuer");
  }
  const auto aud = p.find("aud");
  bool audience_ok = false;
  if (aud != p.end() && aud->is_string()) audience_ok = aud->get<std::string>() == options.audience;
  if (aud != p.end() && aud->is_array()) {
    for (const auto& a : *aud)
      audience_ok |= a.is_string() && a.get<std::string>() == options.audience;
  }
  if (!audience_ok) return refused("wrong audience");
  Principal who;
  const auto sub = p.find("sub");
  const auto tenant = p.find("tenant");
  if (sub == p.end() || !sub->is_string() || !all_digits(sub->get<std::string>())) {
    return refused("sub must be a user id");
  }
  if (tenant == p.end() || !tenant->is_string() || !all_digits(tenant->get<std::string>())) {
    return refused("tenant must be a tenant id");
  }
  const auto scopes = p.find("scopes");
  if (scopes == p.end() || !scopes->is_array()) return refused("scopes must be an array");
  for (const auto& s : *scopes) {
    if (!s.is_string()) return refused("scopes must be strings");
    who.scopes.push_back(s.get<std::string>());
  }
  who.user_id = sub->get<std::string>();
  who.tenant_id = tenant->get<std::string>();
  who.expires_at = exp->get<std::int64_t>();
  return who;
}

Result<Principal> TokenCache::verify(const TokenOptions& options, std::string_view token,
                                     std::int64_t now_s) {
  if (token.size() > kMaxTokenBytes) return verify_token(options, token, now_s);
  const std::string key(token);
  {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      const Entry& e = it->second;
      if (e.verified_at <= now_s) {
        if (e.who.expires_at + options.leeway.count() <= now_s) {
          entries_.erase(it);
          return refused("expired");
        }
        return e.who;
      }
      entries_.erase(it);  // the clock went back: verify again
    }
  }
  auto who = verify_token(options, token, now_s);
  if (!who) return who;
  std::lock_guard lock(mu_);
  if (entries_.size() >= capacity_) entries_.clear();
  entries_.insert_or_assign(key, Entry{*who, now_s});
  return who;
}

std::size_t TokenCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace hi::api
