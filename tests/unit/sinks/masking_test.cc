// Masking of rows: every rule on strings, numbers, JSON and null, the digests checked against
// published test vectors or OpenSSL called directly, and the key files (creation, modes,
// rotation, refusals).
#include "sinks/masking.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "scratch_dir.h"

namespace hi::sinks {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The test's own directory.
class TempDir : public test::ScratchDir {
 public:
  TempDir() : ScratchDir("hi-sinks-masking") {}
};

using test::read_text;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

std::string to_hex(const unsigned char* bytes, unsigned int n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xf];
  }
  return out;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

// The expectations, from OpenSSL's one-shot calls rather than the code under test.
std::string expected_sha256(const std::string& salt, const std::string& text) {
  const std::string input = salt + text;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(input.data(), input.size(), md, &n, EVP_sha256(), nullptr), 1);
  return to_hex(md, n);
}

std::string expected_hmac(const std::string& key, const std::string& text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EXPECT_NE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                 reinterpret_cast<const unsigned char*>(text.data()), text.size(), md, &n),
            nullptr);
  return to_hex(md, n);
}

ColumnRule rule_of(Mask mask, int keep_last = 4) {
  ColumnRule rule;
  rule.mask = mask;
  rule.keep_last = keep_last;
  return rule;
}

MaskingKeys test_keys() {
  MaskingKeys keys;
  keys.salt = std::string(32, '\x5a');
  keys.hmac_version = 1;
  keys.hmac_key = std::string(32, '\x0b');
  return keys;
}

json masked(Mask mask, const json& value, const MaskingKeys& keys = test_keys(),
            int keep_last = 4) {
  auto m = mask_value(rule_of(mask, keep_last), value, keys);
  EXPECT_TRUE(m.has_value()) << to_string(mask);
  return m.value_or(json("<dropped>"));
}

TEST(MaskValue, Sha256MatchesTheTestVectorWithAnEmptySalt) {
  MaskingKeys keys;
  EXPECT_EQ(masked(Mask::kSha256, "abc", keys),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(MaskValue, Sha256PrefixesTheSalt) {
  const MaskingKeys keys = test_keys();
  EXPECT_EQ(masked(Mask::kSha256, "alice@example.com"),
            expected_sha256(keys.salt, "alice@example.com"));
  EXPECT_NE(masked(Mask::kSha256, "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Non-strings hash their compact JSON text.
  EXPECT_EQ(masked(Mask::kSha256, 42), expected_sha256(keys.salt, "42"));
  EXPECT_EQ(masked(Mask::kSha256, true), expected_sha256(keys.salt, "true"));
  EXPECT_EQ(masked(Mask::kSha256, json::parse(R"({"a": 1, "b": [1, 2]})")),
            expected_sha256(keys.salt, R"({"a":1,"b":[1,2]})"));
}

TEST(MaskValue, HmacMatchesRfc4231WithTheVersionPrefix) {
  MaskingKeys keys;
  keys.hmac_version = 1;
  keys.hmac_key = "Jefe";
  EXPECT_EQ(masked(Mask::kHmacSha256, "what do ya want for nothing?", keys),
            "v1:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  keys.hmac_version = 7;
  EXPECT_EQ(masked(Mask::kHmacSha256, "what do ya want for nothing?", keys),
            "v7:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(MaskValue, HmacOfNonStringsUsesTheirJsonText) {
  const MaskingKeys keys = test_keys();
  EXPECT_EQ(masked(Mask::kHmacSha256, 123456789),
            "v1:" + expected_hmac(keys.hmac_key, "123456789"));
  EXPECT_EQ(masked(Mask::kHmacSha256, json::parse(R"({"k": "v"})")),
            "v1:" + expected_hmac(keys.hmac_key, R"({"k":"v"})"));
  // The string "42" and the number 42 have the same text, hence the same mask.
  EXPECT_EQ(masked(Mask::kHmacSha256, "42"), masked(Mask::kHmacSha256, 42));
}

// Masking reuses its hashing state from one value to the next (per thread): every value of a
// run, under keys and salts that change in between, still equals its one-shot digest.
TEST(MaskValue, ARunOfValuesUnderChangingKeysMatchesOneShotDigests) {
  MaskingKeys a = test_keys();
  MaskingKeys b = a;
  b.hmac_key = std::string(32, 'k');
  b.salt = std::string(32, 's');
  for (int i = 0; i < 20; ++i) {
    const MaskingKeys& k = i % 3 == 0 ? b : a;
    const std::string text = "value-" + std::to_string(i * 7919) + std::string(i, 'x');
    EXPECT_EQ(masked(Mask::kHmacSha256, text, k), "v1:" + expected_hmac(k.hmac_key, text)) << i;
    EXPECT_EQ(masked(Mask::kSha256, text, k), expected_sha256(k.salt, text)) << i;
  }
}

TEST(MaskValue, IsDeterministic) {
  for (Mask m :
       {Mask::kSha256, Mask::kHmacSha256, Mask::kPartial, Mask::kEmailDomain, Mask::kRedact}) {
    EXPECT_EQ(masked(m, "bob@example.org"), masked(m, "bob@example.org")) << to_string(m);
  }
  EXPECT_NE(masked(Mask::kHmacSha256, "a"), masked(Mask::kHmacSha256, "b"));
}

TEST(MaskValue, KeepRedactNullAndDrop) {
  const json doc = json::parse(R"({"a": [1, "x"]})");
  EXPECT_EQ(masked(Mask::kKeep, "alice"), "alice");
  EXPECT_EQ(masked(Mask::kKeep, 42), 42);
  EXPECT_EQ(masked(Mask::kKeep, doc), doc);
  EXPECT_EQ(masked(Mask::kRedact, "alice"), "[redacted]");
  EXPECT_EQ(masked(Mask::kRedact, 42), "[redacted]");  // text, whatever the type
  EXPECT_TRUE(masked(Mask::kNull, "alice").is_null());
  EXPECT_TRUE(masked(Mask::kNull, 42).is_null());
  EXPECT_FALSE(mask_value(rule_of(Mask::kDrop), "alice", test_keys()).has_value());
}

TEST(MaskValue, NullStaysNullForEveryRuleButDrop) {
  for (Mask m : {Mask::kKeep, Mask::kRedact, Mask::kNull, Mask::kSha256, Mask::kHmacSha256,
                 Mask::kPartial, Mask::kEmailDomain}) {
    EXPECT_TRUE(masked(m, nullptr).is_null()) << to_string(m);
  }
  EXPECT_FALSE(mask_value(rule_of(Mask::kDrop), nullptr, test_keys()).has_value());
}

TEST(MaskValue, PartialKeepsTheLastCodePoints) {
  EXPECT_EQ(masked(Mask::kPartial, "4111111111111111"), "************1111");
  EXPECT_EQ(masked(Mask::kPartial, 4111111111111111LL), "************1111");  // text now
  EXPECT_EQ(masked(Mask::kPartial, "4111111111111111", test_keys(), 2), "**************11");
  EXPECT_EQ(masked(Mask::kPartial, "12345"), "*2345");
  // No longer than keep_last: all stars, one per code point.
  EXPECT_EQ(masked(Mask::kPartial, "1234"), "****");
  EXPECT_EQ(masked(Mask::kPartial, "12"), "**");
  EXPECT_EQ(masked(Mask::kPartial, ""), "");
  // UTF-8: code points, not bytes.
  EXPECT_EQ(masked(Mask::kPartial, "Zürich"), "**rich");
  EXPECT_EQ(masked(Mask::kPartial, "naïve", test_keys(), 3), "**ïve");
  EXPECT_EQ(masked(Mask::kPartial, "日本語テキスト", test_keys(), 2), "*****スト");
  EXPECT_EQ(masked(Mask::kPartial, "äö"), "**");
  EXPECT_EQ(masked(Mask::kPartial, "€€€€€"), "*€€€€");
}

TEST(MaskValue, EmailDomainKeepsWhatFollowsTheLastAt) {
  EXPECT_EQ(masked(Mask::kEmailDomain, "alice@example.com"), "***@example.com");
  EXPECT_EQ(masked(Mask::kEmailDomain, "\"a@b\"@mail.example.org"), "***@mail.example.org");
  EXPECT_EQ(masked(Mask::kEmailDomain, "trailing@"), "***@");
  EXPECT_EQ(masked(Mask::kEmailDomain, "no-at-sign"), "[redacted]");
  EXPECT_EQ(masked(Mask::kEmailDomain, 42), "[redacted]");
}

TableSpec customers() {
  TableSpec t;
  t.source = "public.customers";
  t.target = "customers";
  t.columns["email"] = ColumnRule{Mask::kEmailDomain, 4, true};
  t.columns["card"] = ColumnRule{Mask::kPartial, 4, true};
  t.columns["ssn"] = ColumnRule{Mask::kHmacSha256, 4, true};
  t.columns["notes"] = ColumnRule{Mask::kDrop, 4, false};
  t.columns["age"] = ColumnRule{Mask::kNull, 4, false};
  return t;
}

TEST(Masker, MasksEveryColumnOfARow) {
  const MaskingKeys keys = test_keys();
  const Masker masker(customers(), keys);
  const json row = json::parse(R"({
    "id": 7, "name": "Alice", "email": "alice@example.com", "card": "4111111111111111",
    "ssn": "078-05-1120", "notes": "likes cats", "age": 34, "extra": {"a": 1}
  })");
  const json expected = {
      {"id", 7},
      {"name", "Alice"},
      {"email", "***@example.com"},
      {"card", "************1111"},
      {"ssn", "v1:" + expected_hmac(keys.hmac_key, "078-05-1120")},
      {"age", nullptr},
      {"extra", {{"a", 1}}},
  };
  EXPECT_EQ(masker.mask_row(row), expected);
  EXPECT_EQ(masker.mask_row(json::parse(R"({"email": null, "notes": null})")),
            json::parse(R"({"email": null})"));
  EXPECT_TRUE(masker.mask_row(nullptr).is_null());
  EXPECT_EQ(masker.mask_row(json::object()), json::object());
}

TEST(Masker, DefaultDropRemovesUnlistedColumns) {
  TableSpec t = customers();
  t.default_mask = Mask::kDrop;
  const Masker masker(t, test_keys());
  EXPECT_EQ(masker.mask_row(json::parse(R"({"id": 7, "email": "a@b.c", "notes": "x"})")),
            json::parse(R"({"email": "***@b.c"})"));
}

TEST(Masker, SaysWhichColumnsKeepTheirTypeAndWhichAreSent) {
  const Masker masker(customers(), test_keys());
  EXPECT_TRUE(masker.keeps_type("id"));   // unlisted: keep
  EXPECT_TRUE(masker.keeps_type("age"));  // null
  EXPECT_FALSE(masker.keeps_type("email"));
  EXPECT_FALSE(masker.keeps_type("ssn"));
  EXPECT_FALSE(masker.keeps_type("notes"));
  EXPECT_TRUE(masker.sends("id"));
  EXPECT_TRUE(masker.sends("ssn"));
  EXPECT_FALSE(masker.sends("notes"));
  EXPECT_EQ(masker.rule("card").mask, Mask::kPartial);
  EXPECT_TRUE(masker.rule("card").pii);
  EXPECT_EQ(masker.rule("unlisted").mask, Mask::kKeep);
}

// ---- key files ----

class MaskingKeysTest : public ::testing::Test {
 protected:
  std::string secrets() const { return dir_.path() + "/secrets"; }
  std::string masking() const { return secrets() + "/masking"; }

  MaskingKeys load(bool create) {
    auto r = load_masking_keys(secrets(), create);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? *r : MaskingKeys{};
  }

  TempDir dir_;
};

bool is_key_text(const std::string& text) {
  if (text.size() != 65 || text.back() != '\n') return false;
  for (std::size_t i = 0; i < 64; ++i) {
    const char c = text[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

TEST_F(MaskingKeysTest, CreatesPrivateKeyFilesWhenAsked) {
  const MaskingKeys keys = load(/*create=*/true);
  EXPECT_EQ(mode_of(secrets()), 0700u);
  EXPECT_EQ(mode_of(masking()), 0700u);
  EXPECT_EQ(mode_of(masking() + "/salt"), 0600u);
  EXPECT_EQ(mode_of(masking() + "/hmac-1"), 0600u);
  const std::string salt_text = read_text(masking() + "/salt");
  const std::string hmac_text = read_text(masking() + "/hmac-1");
  EXPECT_TRUE(is_key_text(salt_text)) << salt_text;
  EXPECT_TRUE(is_key_text(hmac_text)) << hmac_text;
  EXPECT_NE(salt_text, hmac_text);
  EXPECT_EQ(keys.salt, unhex(salt_text.substr(0, 64)));
  EXPECT_EQ(keys.hmac_version, 1u);
  EXPECT_EQ(keys.hmac_key, unhex(hmac_text.substr(0, 64)));
  // No temporary file is left behind.
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(masking())) ++files;
  EXPECT_EQ(files, 2u);

  // A second load reads the same keys, with or without create_if_missing.
  const MaskingKeys again = load(/*create=*/false);
  EXPECT_EQ(again.salt, keys.salt);
  EXPECT_EQ(again.hmac_key, keys.hmac_key);
  EXPECT_EQ(load(/*create=*/true).hmac_key, keys.hmac_key);

  // The loaded key is what masks.
  EXPECT_EQ(masked(Mask::kHmacSha256, "078-05-1120", keys),
            "v1:" + expected_hmac(unhex(hmac_text.substr(0, 64)), "078-05-1120"));
  EXPECT_EQ(masked(Mask::kSha256, "x", keys), expected_sha256(unhex(salt_text.substr(0, 64)), "x"));
}

TEST_F(MaskingKeysTest, MissingFilesAreNotFoundWithoutCreate) {
  auto r = load_masking_keys(secrets(), /*create_if_missing=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kNotFound);
  EXPECT_FALSE(fs::exists(masking()));

  load(/*create=*/true);
  fs::remove(masking() + "/hmac-1");
  r = load_masking_keys(secrets(), /*create_if_missing=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kNotFound);
}

TEST_F(MaskingKeysTest, CreatesOnlyWhatIsMissing) {
  fs::create_directories(masking());
  const std::string salt_hex(64, 'a');
  write_text(masking() + "/salt", salt_hex + "\n");
  fs::permissions(masking() + "/salt", fs::perms::owner_read | fs::perms::owner_write);
  const MaskingKeys keys = load(/*create=*/true);
  EXPECT_EQ(keys.salt, std::string(32, '\xaa'));
  EXPECT_EQ(read_text(masking() + "/salt"), salt_hex + "\n");
  EXPECT_TRUE(fs::exists(masking() + "/hmac-1"));
}

TEST_F(MaskingKeysTest, AcceptsAFileWithoutTrailingNewline) {
  fs::create_directories(masking());
  write_text(masking() + "/salt", std::string(64, '0'));
  write_text(masking() + "/hmac-3", std::string(64, 'f'));
  for (const char* f : {"/salt", "/hmac-3"}) {
    fs::permissions(masking() + f, fs::perms::owner_read | fs::perms::owner_write);
  }
  const MaskingKeys keys = load(/*create=*/false);
  EXPECT_EQ(keys.salt, std::string(32, '\0'));
  EXPECT_EQ(keys.hmac_version, 3u);
  EXPECT_EQ(keys.hmac_key, std::string(32, '\xff'));
}

TEST_F(MaskingKeysTest, RefusesFilesOthersMayRead) {
  load(/*create=*/true);
  const std::string salt = masking() + "/salt";
  ASSERT_EQ(::chmod(salt.c_str(), 0644), 0);
  auto r = load_masking_keys(secrets(), /*create_if_missing=*/true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("chmod 600"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(salt), std::string::npos) << r.error().message;

  ASSERT_EQ(::chmod(salt.c_str(), 0600), 0);
  const std::string hmac = masking() + "/hmac-1";
  ASSERT_EQ(::chmod(hmac.c_str(), 0640), 0);
  r = load_masking_keys(secrets(), /*create_if_missing=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("chmod 600"), std::string::npos) << r.error().message;
}

TEST_F(MaskingKeysTest, MalformedFilesAreDataLossWithoutTheirContent) {
  load(/*create=*/true);
  const std::string hmac = masking() + "/hmac-1";
  const std::string secret_hex = std::string(62, 'c');  // too short
  write_text(hmac, secret_hex + "\n");
  auto r = load_masking_keys(secrets(), /*create_if_missing=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kDataLoss);
  EXPECT_EQ(r.error().message.find(secret_hex), std::string::npos) << r.error().message;

  write_text(hmac, std::string(63, 'c') + "g\n");  // not hex
  r = load_masking_keys(secrets(), /*create_if_missing=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kDataLoss);
}

TEST_F(MaskingKeysTest, RotationAddsAVersionAndChangesEveryHmacMask) {
  const MaskingKeys v1 = load(/*create=*/true);
  const std::string before = masked(Mask::kHmacSha256, "078-05-1120", v1);
  EXPECT_EQ(before.substr(0, 3), "v1:");

  auto rotated = rotate_masking_key(secrets());
  ASSERT_TRUE(rotated.ok()) << rotated.error().to_string();
  EXPECT_EQ(*rotated, 2u);
  EXPECT_EQ(mode_of(masking() + "/hmac-2"), 0600u);
  EXPECT_TRUE(is_key_text(read_text(masking() + "/hmac-2")));
  EXPECT_TRUE(fs::exists(masking() + "/hmac-1"));  // kept: stored values name their version

  const MaskingKeys v2 = load(/*create=*/false);
  EXPECT_EQ(v2.hmac_version, 2u);
  EXPECT_NE(v2.hmac_key, v1.hmac_key);
  EXPECT_EQ(v2.salt, v1.salt);
  const std::string after = masked(Mask::kHmacSha256, "078-05-1120", v2);
  EXPECT_EQ(after.substr(0, 3), "v2:");
  EXPECT_NE(after.substr(3), before.substr(3));
  EXPECT_EQ(after, "v2:" + expected_hmac(v2.hmac_key, "078-05-1120"));
  // The salt is not rotated: sha256 masks stay.
  EXPECT_EQ(masked(Mask::kSha256, "x", v1), masked(Mask::kSha256, "x", v2));

  auto third = rotate_masking_key(secrets());
  ASSERT_TRUE(third.ok()) << third.error().to_string();
  EXPECT_EQ(*third, 3u);
  EXPECT_EQ(load(/*create=*/false).hmac_version, 3u);
}

TEST_F(MaskingKeysTest, VersionsAreNumbersNotNames) {
  load(/*create=*/true);
  // Not versions: ignored (a leading zero, a suffix, a temporary file).
  for (const char* name : {"/hmac-09", "/hmac-2.bak", "/.tmp-hmac-5-1-ab"}) {
    write_text(masking() + name, std::string(64, 'e') + "\n");
    fs::permissions(masking() + name, fs::perms::owner_read | fs::perms::owner_write);
  }
  write_text(masking() + "/hmac-10", std::string(64, 'd') + "\n");
  fs::permissions(masking() + "/hmac-10", fs::perms::owner_read | fs::perms::owner_write);
  const MaskingKeys keys = load(/*create=*/false);
  EXPECT_EQ(keys.hmac_version, 10u);  // 10 > 9 > 2, numerically
  EXPECT_EQ(keys.hmac_key, std::string(32, '\xdd'));
  auto next = rotate_masking_key(secrets());
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  EXPECT_EQ(*next, 11u);
}

}  // namespace
}  // namespace hi::sinks
