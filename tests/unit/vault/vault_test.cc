// The envelope encryption of hi::vault: sealing, opening, re-wrapping, the master key files,
// and the blob layout checked independently with OpenSSL's EVP calls.
#include "vault/vault.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "scratch_dir.h"

namespace hi::vault {
namespace {

namespace fs = std::filesystem;

// The test's own directory.
class TempDir : public test::ScratchDir {
 public:
  TempDir() : ScratchDir("hi-vault") {}
};

using test::read_text;

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

constexpr const char* kSecret = "pool-password-S3cr3t!";
const std::string kRecord = miner_credentials_id(42);

class VaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    secrets_ = dir_.path() + "/secrets";
    auto r = KeyRing::open(secrets_, /*create_if_missing=*/true);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ring_ = std::make_unique<KeyRing>(std::move(*r));
  }

  std::string sealed(std::string_view plaintext = kSecret,
                     std::string_view record = kRecord) const {
    auto b = seal(*ring_, plaintext, record);
    EXPECT_TRUE(b.ok()) << b.error().to_string();
    return b.ok() ? *b : std::string();
  }

  TempDir dir_;
  std::string secrets_;
  std::unique_ptr<KeyRing> ring_;
};

TEST(VaultRecordIds, NameTheTableTheRowAndTheColumn) {
  EXPECT_EQ(miner_credentials_id(7), "miners:7:credentials");
  EXPECT_EQ(exchange_key_id(8), "exchange_keys:8:key");
  EXPECT_EQ(exchange_secret_id(8), "exchange_keys:8:secret");
}

TEST_F(VaultTest, FirstUseCreatesVersionOneAsPrivateHexFile) {
  EXPECT_EQ(ring_->current_version(), 1u);
  EXPECT_EQ(ring_->versions(), std::vector<std::uint32_t>{1});
  EXPECT_EQ(ring_->directory(), secrets_ + "/master_keys");
  const std::string file = secrets_ + "/master_keys/1";
  EXPECT_EQ(mode_of(file), 0600u);
  EXPECT_EQ(mode_of(secrets_ + "/master_keys"), 0700u);
  EXPECT_EQ(mode_of(secrets_), 0700u);
  const std::string text = read_text(file);
  ASSERT_EQ(text.size(), 65u);
  EXPECT_EQ(text.find_first_not_of("0123456789abcdef"), 64u);
  EXPECT_EQ(text.back(), '\n');
}

TEST_F(VaultTest, RoundTripsAnyPlaintext) {
  const std::string binary("a\0b\xff\x00z", 6);
  for (const std::string& plaintext :
       {std::string(), std::string("x"), std::string(kSecret), binary, std::string(5000, 'q')}) {
    const std::string blob = sealed(plaintext);
    EXPECT_EQ(blob.size(), kOverheadBytes + plaintext.size());
    EXPECT_EQ(static_cast<unsigned char>(blob[0]), kFormatV1);
    EXPECT_EQ(blob_version(blob).value_or(0), 1u);
    auto opened = open(*ring_, blob, kRecord);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    EXPECT_EQ(*opened, plaintext);
  }
  // Fresh data key and nonces: the same secret never seals to the same bytes.
  EXPECT_NE(sealed(), sealed());
  EXPECT_EQ(sealed().find(kSecret), std::string::npos);
}

TEST_F(VaultTest, RefusesAnEmptyRecordIdAndAnOversizedSecret) {
  EXPECT_EQ(seal(*ring_, kSecret, "").error().code, Code::kInvalidArgument);
  auto big = seal(*ring_, std::string(kMaxPlaintextBytes + 1, 'x'), kRecord);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Code::kInvalidArgument);
}

TEST_F(VaultTest, TamperedByteAtEveryPositionIsRejected) {
  const std::string blob = sealed();
  for (std::size_t i = 0; i < blob.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80}) {
      std::string bad = blob;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto opened = open(*ring_, bad, kRecord);
      ASSERT_FALSE(opened.ok()) << "byte " << i << " flipped with " << int(flip) << " opened";
      EXPECT_TRUE(opened.error().code == Code::kDataLoss || opened.error().code == Code::kNotFound)
          << i << ": " << opened.error().to_string();
      EXPECT_EQ(opened.error().message.find(kSecret), std::string::npos);
      // Re-wrapping authenticates the wrapped key: the header and key part are checked there.
      if (i < kDataNonceOffset) {
        EXPECT_FALSE(rewrap(*ring_, bad, kRecord).ok()) << i;
      }
    }
  }
}

TEST_F(VaultTest, SwappedRecordIdIsRejected) {
  const std::string blob = sealed(kSecret, exchange_key_id(5));
  for (const std::string& other :
       {exchange_secret_id(5), exchange_key_id(6), miner_credentials_id(5), std::string("x")}) {
    auto opened = open(*ring_, blob, other);
    ASSERT_FALSE(opened.ok()) << other;
    EXPECT_EQ(opened.error().code, Code::kDataLoss) << other;
    EXPECT_EQ(opened.error().message.find(kSecret), std::string::npos);
    EXPECT_FALSE(rewrap(*ring_, blob, other).ok()) << other;
  }
  EXPECT_EQ(open(*ring_, blob, exchange_key_id(5)).value_or(""), kSecret);
}

TEST_F(VaultTest, UnknownVersionIsRejectedNamingTheVersion) {
  std::string blob = sealed();
  blob[kVersionOffset + 3] = 7;  // version 7, which is not on disk
  auto opened = open(*ring_, blob, kRecord);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code, Code::kNotFound);
  EXPECT_NE(opened.error().message.find("version 7"), std::string::npos) << opened.error().message;
  const std::string key_hex = read_text(secrets_ + "/master_keys/1").substr(0, 64);
  EXPECT_EQ(opened.error().message.find(key_hex), std::string::npos);

  // Sealed under another directory's version 2: this ring has only version 1.
  TempDir other_dir;
  auto other = KeyRing::open(other_dir.path(), true);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other->add_version().ok());
  auto foreign = seal(*other, kSecret, kRecord);
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(open(*ring_, *foreign, kRecord).error().code, Code::kNotFound);
}

TEST_F(VaultTest, TruncatedBlobIsRejected) {
  const std::string blob = sealed();
  for (std::size_t n = 0; n < blob.size(); ++n) {
    auto opened = open(*ring_, blob.substr(0, n), kRecord);
    ASSERT_FALSE(opened.ok()) << n;
    EXPECT_EQ(opened.error().code, Code::kDataLoss) << n;
  }
  EXPECT_FALSE(blob_version(blob.substr(0, 4)).ok());
  // One byte too many shifts the tag: refused as well.
  EXPECT_FALSE(open(*ring_, blob + "x", kRecord).ok());
}

TEST_F(VaultTest, RewrapChangesVersionAndWrappedKeyButNotTheData) {
  const std::string blob = sealed();
  auto v2 = ring_->add_version();
  ASSERT_TRUE(v2.ok()) << v2.error().to_string();
  EXPECT_EQ(*v2, 2u);
  EXPECT_EQ(mode_of(secrets_ + "/master_keys/2"), 0600u);
  auto next = rewrap(*ring_, blob, kRecord);
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  ASSERT_EQ(next->size(), blob.size());
  EXPECT_EQ(blob_version(*next).value_or(0), 2u);
  EXPECT_NE(next->substr(kWrapNonceOffset, kDataNonceOffset - kWrapNonceOffset),
            blob.substr(kWrapNonceOffset, kDataNonceOffset - kWrapNonceOffset));
  EXPECT_NE(next->substr(kWrappedKeyOffset, kKeyBytes), blob.substr(kWrappedKeyOffset, kKeyBytes));
  EXPECT_EQ(next->substr(kDataNonceOffset), blob.substr(kDataNonceOffset));
  EXPECT_EQ(open(*ring_, *next, kRecord).value_or(""), kSecret);
  // Old versions stay: what was not re-wrapped yet still opens.
  EXPECT_EQ(open(*ring_, blob, kRecord).value_or(""), kSecret);
  // New seals use the new version.
  EXPECT_EQ(blob_version(sealed()).value_or(0), 2u);
}

TEST_F(VaultTest, VersionsAddedByAnotherProcessArePickedUp) {
  auto writer = KeyRing::open(secrets_, false);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(writer->add_version().value_or(0), 2u);
  // open() meets a version it does not know and re-reads the directory.
  auto from_writer = seal(*writer, kSecret, kRecord);
  ASSERT_TRUE(from_writer.ok());
  EXPECT_EQ(open(*ring_, *from_writer, kRecord).value_or(""), kSecret);

  ASSERT_EQ(writer->add_version().value_or(0), 3u);
  // seal() notices the directory changed and moves to the newest version.
  EXPECT_EQ(blob_version(sealed()).value_or(0), 3u);
  EXPECT_EQ(ring_->current_version(), 3u);
  // Both rings chose distinct numbers: neither overwrote the other's key.
  EXPECT_EQ(ring_->add_version().value_or(0), 4u);
  EXPECT_EQ(writer->add_version().value_or(0), 5u);
  ASSERT_TRUE(ring_->reload().ok());
  EXPECT_EQ(ring_->versions(), (std::vector<std::uint32_t>{1, 2, 3, 4, 5}));
}

TEST(VaultKeyRing, WithoutCreateAnEmptyDirectoryIsNotFound) {
  TempDir dir;
  auto r = KeyRing::open(dir.path(), false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kNotFound);
}

TEST(VaultKeyRing, AdoptsUpsLegacyKeyAsVersionOne) {
  TempDir dir;
  const std::string hex(64, 'a');
  {
    std::ofstream out(dir.path() + "/master_key_v1");
    out << hex << "\n";
  }
  ::chmod((dir.path() + "/master_key_v1").c_str(), 0600);
  auto r = KeyRing::open(dir.path(), true);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(read_text(dir.path() + "/master_keys/1"), hex + "\n");
}

TEST(VaultKeyRing, RefusesAKeyOthersCanReadOrThatIsMalformed) {
  TempDir dir;
  ASSERT_TRUE(KeyRing::open(dir.path(), true).ok());
  const std::string file = dir.path() + "/master_keys/1";
  const std::string key_hex = read_text(file).substr(0, 64);
  ::chmod(file.c_str(), 0644);
  auto loose = KeyRing::open(dir.path(), false);
  ASSERT_FALSE(loose.ok());
  EXPECT_EQ(loose.error().code, Code::kFailedPrecondition);
  EXPECT_NE(loose.error().message.find("chmod 600"), std::string::npos);
  EXPECT_EQ(loose.error().message.find(key_hex), std::string::npos);

  ::chmod(file.c_str(), 0600);
  {
    std::ofstream out(file);
    out << key_hex.substr(0, 63) << "g\n";
  }
  auto bad = KeyRing::open(dir.path(), false);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Code::kDataLoss);
  EXPECT_EQ(bad.error().message.find(key_hex.substr(0, 63)), std::string::npos);
}

// AES-256-GCM with EVP, written here again so the test does not trust the library's own.
bool gcm_open(const std::string& key, std::string_view nonce, const std::string& aad,
              std::string_view ciphertext, std::string_view tag, std::string& out) {
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  auto u = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  int len = 0;
  out.assign(ciphertext.size(), '\0');
  std::string tag_copy(tag);
  return EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, u(key), u(nonce)) == 1 &&
         nonce.size() == 12 &&
         EVP_DecryptUpdate(ctx.get(), nullptr, &len, u(aad), static_cast<int>(aad.size())) == 1 &&
         (ciphertext.empty() ||
          EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len,
                            u(ciphertext), static_cast<int>(ciphertext.size())) == 1) &&
         EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag_copy.data()) == 1 &&
         EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len, &len) ==
             1;
}

TEST_F(VaultTest, LayoutIsTheOneTheHeaderDescribes) {
  ASSERT_TRUE(ring_->add_version().ok());  // version 2: the big-endian field is checked below
  const std::string record = exchange_secret_id(9);
  const std::string blob = sealed(kSecret, record);
  ASSERT_EQ(blob.size(), 1 + 4 + 12 + 32 + 16 + 12 + std::strlen(kSecret) + 16);
  EXPECT_EQ(blob[0], '\x01');
  EXPECT_EQ(blob.substr(1, 4), std::string("\0\0\0\x02", 4));

  const std::string master = unhex(read_text(secrets_ + "/master_keys/2").substr(0, 64));
  ASSERT_EQ(master.size(), 32u);
  std::string data_key;
  ASSERT_TRUE(gcm_open(master, std::string_view(blob).substr(5, 12), blob.substr(0, 5) + record,
                       std::string_view(blob).substr(17, 32), std::string_view(blob).substr(49, 16),
                       data_key));
  ASSERT_EQ(data_key.size(), 32u);

  std::string plaintext;
  const std::size_t n = blob.size() - 93;
  ASSERT_TRUE(gcm_open(data_key, std::string_view(blob).substr(65, 12), blob.substr(0, 1) + record,
                       std::string_view(blob).substr(77, n),
                       std::string_view(blob).substr(77 + n, 16), plaintext));
  EXPECT_EQ(plaintext, kSecret);

  // The same layers refuse another record id.
  std::string ignored;
  EXPECT_FALSE(gcm_open(
      master, std::string_view(blob).substr(5, 12), blob.substr(0, 5) + exchange_key_id(9),
      std::string_view(blob).substr(17, 32), std::string_view(blob).substr(49, 16), ignored));
}

}  // namespace
}  // namespace hi::vault
