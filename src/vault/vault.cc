#include "vault/vault.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "core/private_file.h"

namespace hi::vault {
namespace {

using Bytes = unsigned char;

// 32 key bytes, wiped when destroyed.
struct Key {
  std::array<Bytes, kKeyBytes> bytes{};
  Key() = default;
  Key(const Key&) = default;
  Key& operator=(const Key&) = default;
  ~Key() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

// Wipes a buffer when the scope ends, whichever way it ends.
class Wipe {
 public:
  Wipe(void* p, std::size_t n) : p_(p), n_(n) {}
  Wipe(const Wipe&) = delete;
  Wipe& operator=(const Wipe&) = delete;
  ~Wipe() { OPENSSL_cleanse(p_, n_); }

 private:
  void* p_;
  std::size_t n_;
};

std::string errno_text(int err) { return std::strerror(err); }

const Bytes* u8(std::string_view s) { return reinterpret_cast<const Bytes*>(s.data()); }
Bytes* u8(std::string& s) { return reinterpret_cast<Bytes*>(s.data()); }

// ---- AES-256-GCM through EVP ----

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const noexcept { EVP_CIPHER_CTX_free(c); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// Encrypts n bytes of `in` into `out` (n bytes) and writes the 16-byte tag. False only when
// OpenSSL itself fails (out of memory).
bool gcm_encrypt(const Bytes* key, const Bytes* nonce, std::initializer_list<std::string_view> aad,
                 const Bytes* in, std::size_t n, Bytes* out, Bytes* tag) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key, nonce) != 1) {
    return false;
  }
  for (std::string_view part : aad) {
    if (!part.empty() &&
        EVP_EncryptUpdate(ctx.get(), nullptr, &len, u8(part), static_cast<int>(part.size())) != 1) {
      return false;
    }
  }
  int written = 0;
  if (n > 0 && EVP_EncryptUpdate(ctx.get(), out, &written, in, static_cast<int>(n)) != 1) {
    return false;
  }
  if (EVP_EncryptFinal_ex(ctx.get(), out + written, &len) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) == 1;
}

// Decrypts n bytes of `in` into `out`; false when the tag does not authenticate (the caller
// wipes `out`, which then holds unauthenticated bytes).
bool gcm_decrypt(const Bytes* key, const Bytes* nonce, std::initializer_list<std::string_view> aad,
                 const Bytes* in, std::size_t n, const Bytes* tag, Bytes* out) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key, nonce) != 1) {
    return false;
  }
  for (std::string_view part : aad) {
    if (!part.empty() &&
        EVP_DecryptUpdate(ctx.get(), nullptr, &len, u8(part), static_cast<int>(part.size())) != 1) {
      return false;
    }
  }
  int written = 0;
  if (n > 0 && EVP_DecryptUpdate(ctx.get(), out, &written, in, static_cast<int>(n)) != 1) {
    return false;
  }
  // The tag is only read; OpenSSL's ctrl takes a non-const pointer.
  std::array<Bytes, kTagBytes> expected;
  std::memcpy(expected.data(), tag, kTagBytes);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, expected.data()) != 1) {
    return false;
  }
  return EVP_DecryptFinal_ex(ctx.get(), out + written, &len) == 1;
}

bool random_bytes(Bytes* out, std::size_t n) { return RAND_bytes(out, static_cast<int>(n)) == 1; }

// ---- master key files ----

constexpr std::size_t kHexBytes = 2 * kKeyBytes;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The version a file name stands for, or 0 (temporary files, anything else).
std::uint32_t version_of(const char* name) {
  const std::size_t n = std::strlen(name);
  if (n == 0 || n > 10 || name[0] == '0') return 0;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (name[i] < '0' || name[i] > '9') return 0;
    v = v * 10 + static_cast<std::uint64_t>(name[i] - '0');
  }
  return v > 0xffffffffULL ? 0 : static_cast<std::uint32_t>(v);
}

// Reads one key file: 64 hex digits, optionally followed by a newline. `check_mode` refuses a
// file that group or others may read.
Result<Key> read_key_file(const std::string& path, bool check_mode) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return data_loss("read master key " + path + ": " + errno_text(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return data_loss("stat master key " + path + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return data_loss("master key " + path + " is not a regular file");
  if (check_mode && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return failed_precondition("master key " + path + " has mode " + mode +
                               ", readable beyond its owner (chmod 600 it)");
  }
  std::array<char, kHexBytes + 8> text{};
  Wipe wipe_text(text.data(), text.size());
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t r = ::read(fd, text.data() + got, text.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return data_loss("read master key " + path + ": " + errno_text(errno));
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  std::size_t len = got;
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) --len;
  Key key;
  bool valid = len == kHexBytes;
  for (std::size_t i = 0; valid && i < kKeyBytes; ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    valid = hi >= 0 && lo >= 0;
    if (valid) key.bytes[i] = static_cast<Bytes>(hi * 16 + lo);
  }
  // The message names the file and the expected shape, never what it holds.
  if (!valid) return data_loss("master key " + path + " is not 64 hex digits");
  return key;
}

// Writes `key` as DIR/<version> (create_private_file(): kAlreadyExists rather than replacing a
// version another process wrote meanwhile, which would lose every blob wrapped under it).
Status write_key_file(const std::string& dir, std::uint32_t version, const Key& key) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::array<char, kHexBytes + 1> text{};
  Wipe wipe_text(text.data(), text.size());
  for (std::size_t i = 0; i < kKeyBytes; ++i) {
    text[2 * i] = kDigits[key.bytes[i] >> 4];
    text[2 * i + 1] = kDigits[key.bytes[i] & 0xf];
  }
  text[kHexBytes] = '\n';
  return create_private_file(dir, std::to_string(version),
                             std::string_view(text.data(), text.size()), "master key");
}

bool same_time(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

void put_u32(Bytes* out, std::uint32_t v) {
  out[0] = static_cast<Bytes>(v >> 24);
  out[1] = static_cast<Bytes>(v >> 16);
  out[2] = static_cast<Bytes>(v >> 8);
  out[3] = static_cast<Bytes>(v);
}

std::uint32_t get_u32(const Bytes* in) {
  return (std::uint32_t{in[0]} << 24) | (std::uint32_t{in[1]} << 16) | (std::uint32_t{in[2]} << 8) |
         std::uint32_t{in[3]};
}

Status check_record_id(std::string_view record_id) {
  if (record_id.empty()) return invalid_argument("vault: empty record id");
  return ok_status();
}

}  // namespace

// ---- KeyRing ----

struct KeyRing::State {
  std::string secrets_dir;
  std::string dir;  // secrets_dir/master_keys
  mutable std::shared_mutex mu;
  mutable std::map<std::uint32_t, Key> keys;  // guarded by mu
  mutable timespec dir_mtime{};               // guarded by mu: as of the last read
  // guarded by mu: the last read came so soon after the directory changed that a change in the
  // same timestamp tick (file times are coarse, a few ms) would not move the mtime; until a
  // read sees an older mtime, every refresh re-reads (git's "racily clean" problem).
  mutable bool racy = true;

  // Reads every version file; versions already loaded are kept as they are.
  Status load() const {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      if (errno == ENOENT) return ok_status();
      return unavailable("stat " + dir + ": " + errno_text(errno));
    }
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
    if (!d) return unavailable("open " + dir + ": " + errno_text(errno));
    std::map<std::uint32_t, Key> found;
    while (const dirent* e = ::readdir(d.get())) {
      const std::uint32_t v = version_of(e->d_name);
      if (v == 0) continue;
      {
        std::shared_lock lock(mu);
        if (keys.count(v) != 0) continue;
      }
      auto key = read_key_file(dir + "/" + e->d_name, /*check_mode=*/true);
      if (!key) return key.error();
      found.emplace(v, *key);
    }
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::unique_lock lock(mu);
    keys.merge(found);
    dir_mtime = st.st_mtim;
    racy = now.tv_sec - st.st_mtim.tv_sec < 2;
    return ok_status();
  }

  // Re-reads the directory when its mtime moved since the last read (a version was added), or
  // when that read was racy.
  Status refresh_if_changed() const {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return ok_status();  // keep what is loaded
    {
      std::shared_lock lock(mu);
      if (!racy && same_time(st.st_mtim, dir_mtime)) return ok_status();
    }
    return load();
  }
};

KeyRing::KeyRing(std::unique_ptr<State> state) : state_(std::move(state)) {}
KeyRing::KeyRing(KeyRing&&) noexcept = default;
KeyRing& KeyRing::operator=(KeyRing&&) noexcept = default;
KeyRing::~KeyRing() = default;

Result<KeyRing> KeyRing::open(const std::string& secrets_dir, bool create_if_missing) {
  auto state = std::make_unique<State>();
  state->secrets_dir = secrets_dir;
  state->dir = secrets_dir + "/master_keys";
  if (create_if_missing) {
    if (auto s = make_private_dir(secrets_dir); !s) return s.error();
    if (auto s = make_private_dir(state->dir); !s) return s.error();
  }
  if (auto s = state->load(); !s) return s.error();
  if (state->keys.empty()) {
    if (!create_if_missing) {
      return not_found("no master key in " + state->dir +
                       " (`hashinsight keys rotate` creates one)");
    }
    // `hashinsight up` wrote secrets/master_key_v1 before versioned keys existed: that key is
    // version 1, so nothing sealed with it is lost.
    const std::string legacy = secrets_dir + "/master_key_v1";
    Key key;
    if (::access(legacy.c_str(), F_OK) == 0) {
      auto k = read_key_file(legacy, /*check_mode=*/true);
      if (!k) return k.error();
      key = *k;
    } else if (!random_bytes(key.bytes.data(), key.bytes.size())) {
      return internal_error("RAND_bytes failed");
    }
    auto s = write_key_file(state->dir, 1, key);
    if (!s && s.error().code != Code::kAlreadyExists) return s.error();  // else: a racing creator
    if (auto l = state->load(); !l) return l.error();
    if (state->keys.empty()) return internal_error("master key version 1 was written but not read");
  }
  return KeyRing(std::move(state));
}

std::uint32_t KeyRing::current_version() const {
  std::shared_lock lock(state_->mu);
  return state_->keys.empty() ? 0 : state_->keys.rbegin()->first;
}

std::vector<std::uint32_t> KeyRing::versions() const {
  std::shared_lock lock(state_->mu);
  std::vector<std::uint32_t> out;
  for (const auto& [v, key] : state_->keys) out.push_back(v);
  return out;
}

const std::string& KeyRing::directory() const { return state_->dir; }

Result<std::uint32_t> KeyRing::add_version() {
  if (auto s = make_private_dir(state_->dir); !s) return s.error();
  for (int attempt = 0; attempt < 8; ++attempt) {
    if (auto s = state_->load(); !s) return s.error();
    const std::uint32_t next = current_version() + 1;
    if (next == 0) return failed_precondition("master key versions exhausted in " + state_->dir);
    Key key;
    if (!random_bytes(key.bytes.data(), key.bytes.size())) {
      return internal_error("RAND_bytes failed");
    }
    auto s = write_key_file(state_->dir, next, key);
    if (s) {
      std::unique_lock lock(state_->mu);
      state_->keys.emplace(next, key);
      return next;
    }
    if (s.error().code != Code::kAlreadyExists) return s.error();
    // Another process took this number: read what it wrote and go above it.
  }
  return unavailable("could not add a master key version to " + state_->dir +
                     ": other processes keep adding versions");
}

Status KeyRing::reload() const { return state_->load(); }

// What seal/open/rewrap need from a ring: a key by version, and the current one.
struct KeyRingAccess {
  static Result<Key> key(const KeyRing& ring, std::uint32_t version) {
    const auto& st = *ring.state_;
    for (int pass = 0; pass < 2; ++pass) {
      {
        std::shared_lock lock(st.mu);
        if (auto it = st.keys.find(version); it != st.keys.end()) return it->second;
      }
      // Perhaps added by `keys rotate` since we last looked.
      if (pass == 0) {
        if (auto s = st.load(); !s) return s.error();
      }
    }
    return not_found("master key version " + std::to_string(version) + " is not in " + st.dir);
  }

  static Result<std::pair<std::uint32_t, Key>> current(const KeyRing& ring) {
    const auto& st = *ring.state_;
    if (auto s = st.refresh_if_changed(); !s) return s.error();
    std::shared_lock lock(st.mu);
    if (st.keys.empty()) return not_found("no master key in " + st.dir);
    return std::make_pair(st.keys.rbegin()->first, st.keys.rbegin()->second);
  }
};

namespace {

// Wraps `data_key` into blob[0..kDataNonceOffset) for `version`.
Status wrap_into(std::string& blob, std::uint32_t version, const Key& master, const Key& data_key,
                 std::string_view record_id) {
  Bytes* b = u8(blob);
  b[0] = kFormatV1;
  put_u32(b + kVersionOffset, version);
  if (!random_bytes(b + kWrapNonceOffset, kNonceBytes)) return internal_error("RAND_bytes failed");
  const std::string_view header(blob.data(), kWrapNonceOffset);
  if (!gcm_encrypt(master.bytes.data(), b + kWrapNonceOffset, {header, record_id},
                   data_key.bytes.data(), kKeyBytes, b + kWrappedKeyOffset, b + kWrapTagOffset)) {
    return internal_error("vault: AES-GCM wrap failed");
  }
  return ok_status();
}

// The blob's format and size, checked before anything is read from it.
Status check_blob(std::string_view blob) {
  if (blob.size() < kOverheadBytes) {
    return data_loss("vault: sealed blob too short (" + std::to_string(blob.size()) +
                     " bytes, at least " + std::to_string(kOverheadBytes) + ")");
  }
  if (static_cast<Bytes>(blob[0]) != kFormatV1) {
    return data_loss("vault: unknown sealed blob format " +
                     std::to_string(static_cast<Bytes>(blob[0])));
  }
  return ok_status();
}

// The data key of `blob`, authenticated for `record_id` under the master key the blob names.
Result<Key> unwrap(const KeyRing& ring, std::string_view blob, std::string_view record_id) {
  const Bytes* b = u8(blob);
  const std::uint32_t version = get_u32(b + kVersionOffset);
  auto master = KeyRingAccess::key(ring, version);
  if (!master) return master.error();
  Key data_key;
  if (!gcm_decrypt(master->bytes.data(), b + kWrapNonceOffset,
                   {blob.substr(0, kWrapNonceOffset), record_id}, b + kWrappedKeyOffset, kKeyBytes,
                   b + kWrapTagOffset, data_key.bytes.data())) {
    return data_loss("vault: the data key of " + std::string(record_id) +
                     " does not authenticate under master key version " + std::to_string(version) +
                     " (tampered, or sealed for another record)");
  }
  return data_key;
}

}  // namespace

Result<std::string> seal(const KeyRing& ring, std::string_view plaintext,
                         std::string_view record_id) {
  if (auto s = check_record_id(record_id); !s) return s.error();
  if (plaintext.size() > kMaxPlaintextBytes) {
    return invalid_argument("vault: secret of " + std::string(record_id) + " is " +
                            std::to_string(plaintext.size()) + " bytes, more than " +
                            std::to_string(kMaxPlaintextBytes));
  }
  auto current = KeyRingAccess::current(ring);
  if (!current) return current.error();
  Key data_key;
  if (!random_bytes(data_key.bytes.data(), data_key.bytes.size())) {
    return internal_error("RAND_bytes failed");
  }
  std::string blob(kOverheadBytes + plaintext.size(), '\0');
  if (auto s = wrap_into(blob, current->first, current->second, data_key, record_id); !s) {
    return s.error();
  }
  Bytes* b = u8(blob);
  if (!random_bytes(b + kDataNonceOffset, kNonceBytes)) return internal_error("RAND_bytes failed");
  const Bytes* pt = plaintext.empty() ? b : u8(plaintext);  // never read when empty
  if (!gcm_encrypt(data_key.bytes.data(), b + kDataNonceOffset,
                   {std::string_view(blob.data(), 1), record_id}, pt, plaintext.size(),
                   b + kCiphertextOffset, b + blob.size() - kTagBytes)) {
    OPENSSL_cleanse(blob.data(), blob.size());
    return internal_error("vault: AES-GCM seal failed");
  }
  return blob;
}

Result<std::string> open(const KeyRing& ring, std::string_view blob, std::string_view record_id) {
  if (auto s = check_record_id(record_id); !s) return s.error();
  if (auto s = check_blob(blob); !s) return s.error();
  auto data_key = unwrap(ring, blob, record_id);
  if (!data_key) return data_key.error();
  const Bytes* b = u8(blob);
  const std::size_t n = blob.size() - kOverheadBytes;
  std::string plaintext(n, '\0');
  if (!gcm_decrypt(data_key->bytes.data(), b + kDataNonceOffset, {blob.substr(0, 1), record_id},
                   b + kCiphertextOffset, n, b + blob.size() - kTagBytes, u8(plaintext))) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());  // unauthenticated bytes
    return data_loss("vault: the secret of " + std::string(record_id) +
                     " does not authenticate (tampered, or sealed for another record)");
  }
  return plaintext;
}

Result<std::string> rewrap(const KeyRing& ring, std::string_view blob, std::string_view record_id) {
  if (auto s = check_record_id(record_id); !s) return s.error();
  if (auto s = check_blob(blob); !s) return s.error();
  auto data_key = unwrap(ring, blob, record_id);
  if (!data_key) return data_key.error();
  auto current = KeyRingAccess::current(ring);
  if (!current) return current.error();
  std::string out(blob);
  if (auto s = wrap_into(out, current->first, current->second, *data_key, record_id); !s) {
    return s.error();
  }
  return out;
}

Result<std::uint32_t> blob_version(std::string_view blob) {
  if (auto s = check_blob(blob); !s) return s.error();
  return get_u32(u8(blob) + kVersionOffset);
}

std::string miner_credentials_id(std::int64_t miner_id) {
  return "miners:" + std::to_string(miner_id) + ":credentials";
}

std::string exchange_key_id(std::int64_t exchange_key_id) {
  return "exchange_keys:" + std::to_string(exchange_key_id) + ":key";
}

std::string exchange_secret_id(std::int64_t exchange_key_id) {
  return "exchange_keys:" + std::to_string(exchange_key_id) + ":secret";
}

}  // namespace hi::vault
