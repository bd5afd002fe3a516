// Tokens built by hand for the tests of the token verifier (the unit tests and the fuzzer): the
// encoding and the HS256 signature straight from OpenSSL, never from the code under test.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>
#include <string_view>

namespace hi::test {

// Base64url without padding (RFC 7515, section 2).
inline std::string b64url(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

// The base64url HMAC of `input` under `key` (HS256 by default): a JWS signature.
inline std::string hmac_b64url(std::string_view input, std::string_view key,
                               const EVP_MD* md = EVP_sha256()) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return b64url(std::string_view(reinterpret_cast<const char*>(mac), len));
}

}  // namespace hi::test
