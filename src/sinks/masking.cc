#include "sinks/masking.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <utility>

#include "core/private_file.h"
#include "core/strings.h"
#include "core/unique_fd.h"

namespace hi::sinks {
namespace {

constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kHexDigits = 2 * kKeyBytes;
constexpr std::string_view kHmacPrefix = "hmac-";
constexpr std::string_view kRedacted = "[redacted]";

// Wipes a string's bytes when the scope ends, whichever way it ends.
class Wipe {
 public:
  explicit Wipe(std::string& s) : s_(s) {}
  Wipe(const Wipe&) = delete;
  Wipe& operator=(const Wipe&) = delete;
  ~Wipe() { OPENSSL_cleanse(s_.data(), s_.size()); }

 private:
  std::string& s_;
};

std::string errno_text(int err) { return std::strerror(err); }

const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// ---- hashing ----

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

struct MacFree {
  void operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }
};
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, MacFree>;

// SHA-256 and HMAC-SHA-256 only fail when OpenSSL cannot allocate: that is reported like any
// other allocation failure, never by a value that could pass for a mask.
//
// Each thread keeps its contexts, keyed by the salt or key they were set up with: fetching the
// algorithm and setting the key for every value (what EVP_Digest() and HMAC() do) cost more than
// hashing a short value. A value then costs a context copy (SHA-256, salt already absorbed) or a
// re-initialisation under the same key (HMAC).
std::string digest_hex(const unsigned char* md, unsigned int len) {
  return hex_encode(std::string_view(reinterpret_cast<const char*>(md), len));
}

std::string sha256_hex(std::string_view salt, std::string_view text) {
  struct Salted {
    std::string salt;
    MdCtxPtr salted;  // SHA-256 with the salt absorbed
    MdCtxPtr work;
  };
  thread_local Salted cache;
  if (!cache.salted || cache.salt != salt) {
    static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    cache.salted.reset(EVP_MD_CTX_new());
    cache.work.reset(EVP_MD_CTX_new());
    if (kSha256 == nullptr || !cache.salted || !cache.work ||
        EVP_DigestInit_ex(cache.salted.get(), kSha256, nullptr) != 1 ||
        EVP_DigestUpdate(cache.salted.get(), salt.data(), salt.size()) != 1) {
      cache.salted.reset();
      throw std::bad_alloc();
    }
    cache.salt.assign(salt);
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_MD_CTX_copy_ex(cache.work.get(), cache.salted.get()) != 1 ||
      EVP_DigestUpdate(cache.work.get(), text.data(), text.size()) != 1 ||
      EVP_DigestFinal_ex(cache.work.get(), md.data(), &len) != 1) {
    throw std::bad_alloc();
  }
  return digest_hex(md.data(), len);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view text) {
  struct Keyed {
    std::string key;
    MacCtxPtr ctx;
  };
  thread_local Keyed cache;
  bool ok = true;
  if (!cache.ctx || cache.key != key) {
    static EVP_MAC* const kHmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    cache.ctx.reset(kHmac == nullptr ? nullptr : EVP_MAC_CTX_new(kHmac));
    if (!cache.ctx) throw std::bad_alloc();
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                                 OSSL_PARAM_construct_end()};
    ok = EVP_MAC_init(cache.ctx.get(), u8(key), key.size(), params) == 1;
    if (!ok) {
      cache.ctx.reset();
      throw std::bad_alloc();
    }
    cache.key.assign(key);
  } else {
    ok = EVP_MAC_init(cache.ctx.get(), nullptr, 0, nullptr) == 1;  // the same key, afresh
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  std::size_t len = 0;
  if (!ok || EVP_MAC_update(cache.ctx.get(), u8(text), text.size()) != 1 ||
      EVP_MAC_final(cache.ctx.get(), md.data(), &len, md.size()) != 1) {
    cache.ctx.reset();
    throw std::bad_alloc();
  }
  return digest_hex(md.data(), static_cast<unsigned int>(len));
}

// ---- text rules ----

// A string is its own text; anything else its compact JSON (invalid UTF-8 replaced rather than
// thrown on: the mask must not fail on odd bytes).
std::string text_of(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

std::string partial(std::string_view text, int keep_last) {
  std::size_t points = 0;
  for (unsigned char c : text) points += is_continuation(c) ? 0 : 1;
  const std::size_t keep = keep_last > 0 ? static_cast<std::size_t>(keep_last) : 0;
  if (points <= keep) return std::string(points, '*');
  const std::size_t hidden = points - keep;
  // The byte where code point number `hidden` (0-based) starts.
  std::size_t seen = 0;
  std::size_t cut = 0;
  for (; cut < text.size(); ++cut) {
    if (is_continuation(static_cast<unsigned char>(text[cut]))) continue;
    if (seen == hidden) break;
    ++seen;
  }
  return std::string(hidden, '*') + std::string(text.substr(cut));
}

std::string email_domain(std::string_view text) {
  const auto at = text.rfind('@');
  if (at == std::string_view::npos) return std::string(kRedacted);
  return "***@" + std::string(text.substr(at + 1));
}

// ---- key files ----

// The version an "hmac-<N>" file name stands for, or 0 (temporary files, anything else).
std::uint32_t hmac_version_of(std::string_view name) {
  if (!name.starts_with(kHmacPrefix)) return 0;
  const std::string_view digits = name.substr(kHmacPrefix.size());
  if (digits.empty() || digits.size() > 10 || digits[0] == '0') return 0;
  std::uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v > 0xffffffffULL ? 0 : static_cast<std::uint32_t>(v);
}

std::string hmac_file(std::uint32_t version) {
  return std::string(kHmacPrefix) + std::to_string(version);
}

// Key files hold secrets: one that group or others may read is refused, with the fix.
Status check_private(const std::string& path, const struct stat& st) {
  if ((st.st_mode & 077) == 0) return ok_status();
  char mode[8];
  std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
  return failed_precondition("masking key " + path + " has mode " + mode +
                             ", readable beyond its owner (chmod 600 " + path + ")");
}

// One key file: 64 hex digits, optionally followed by a newline, read as 32 bytes.
Result<std::string> read_key_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT) return not_found("masking key " + path + " not found");
    if (err == EACCES) return failed_precondition("read " + path + ": " + errno_text(err));
    return unavailable("read " + path + ": " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return unavailable("stat " + path + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return data_loss("masking key " + path + " is not a regular file");
  if (auto s = check_private(path, st); !s) return s.error();

  std::string text(kHexDigits + 8, '\0');
  Wipe wipe_text(text);
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t r = ::read(fd.get(), text.data() + got, text.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unavailable("read " + path + ": " + errno_text(errno));
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  std::size_t len = got;
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) --len;
  std::optional<std::string> bytes;
  if (len == kHexDigits) bytes = hex_decode(std::string_view(text.data(), len));
  // The message names the file and the expected shape, never what it holds.
  if (!bytes) return data_loss("masking key " + path + " is not 64 hex digits");
  return std::move(*bytes);
}

// Writes 32 fresh random bytes as DIR/<name> (create_private_file(): kAlreadyExists rather than
// replacing a key another process wrote meanwhile, which would change every mask made with it).
Status write_new_key_file(const std::string& dir, const std::string& name) {
  std::string key(kKeyBytes, '\0');
  Wipe wipe_key(key);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1) {
    return internal_error("RAND_bytes failed");
  }
  std::string text = hex_encode(key) + "\n";
  Wipe wipe_text(text);
  return create_private_file(dir, name, text, "masking key");
}

// The highest hmac-<N> in `dir` (0: none, or no directory). Every version file is checked to be
// private: an old key readable by others unmasks every value stored under it.
Result<std::uint32_t> highest_version(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) {
    if (errno == ENOENT) return std::uint32_t{0};
    return unavailable("open " + dir + ": " + errno_text(errno));
  }
  std::uint32_t highest = 0;
  while (const dirent* e = ::readdir(d.get())) {
    const std::uint32_t v = hmac_version_of(e->d_name);
    if (v == 0) continue;
    const std::string path = dir + "/" + e->d_name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0)
      return unavailable("stat " + path + ": " + errno_text(errno));
    if (auto s = check_private(path, st); !s) return s.error();
    highest = std::max(highest, v);
  }
  return highest;
}

// Reads DIR/<name>; with `create`, a missing file is first written (by us or a racing process).
Result<std::string> read_or_create(const std::string& dir, const std::string& name, bool create) {
  const std::string path = dir + "/" + name;
  auto key = read_key_file(path);
  if (key || key.error().code != Code::kNotFound || !create) return key;
  if (auto s = write_new_key_file(dir, name); !s && s.error().code != Code::kAlreadyExists) {
    return s.error();
  }
  return read_key_file(path);
}

std::string masking_dir(const std::string& secrets_dir) { return secrets_dir + "/masking"; }

}  // namespace

// ---- keys ----

Result<MaskingKeys> load_masking_keys(const std::string& secrets_dir, bool create_if_missing) {
  const std::string dir = masking_dir(secrets_dir);
  if (create_if_missing) {
    if (auto s = make_private_dir(secrets_dir); !s) return s.error();
    if (auto s = make_private_dir(dir); !s) return s.error();
  }
  MaskingKeys keys;
  auto salt = read_or_create(dir, "salt", create_if_missing);
  if (!salt) return salt.error();
  keys.salt = std::move(*salt);

  auto highest = highest_version(dir);
  if (!highest) return highest.error();
  std::uint32_t version = *highest;
  if (version == 0) {
    if (!create_if_missing) return not_found("no masking key hmac-<N> in " + dir);
    version = 1;
  }
  auto key = read_or_create(dir, hmac_file(version), create_if_missing);
  if (!key) return key.error();
  keys.hmac_version = version;
  keys.hmac_key = std::move(*key);
  return keys;
}

Result<std::uint32_t> rotate_masking_key(const std::string& secrets_dir) {
  const std::string dir = masking_dir(secrets_dir);
  if (auto s = make_private_dir(dir); !s) return s.error();
  // Another process may add the same version meanwhile: then the next one is tried.
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto current = highest_version(dir);
    if (!current) return current.error();
    const std::uint32_t next = *current + 1;
    if (next == 0) return failed_precondition("masking key versions exhausted in " + dir);
    auto s = write_new_key_file(dir, hmac_file(next));
    if (s) return next;
    if (s.error().code != Code::kAlreadyExists) return s.error();
  }
  return unavailable("rotate masking key in " + dir + ": too many concurrent rotations");
}

// ---- masking ----

std::optional<nlohmann::json> mask_value(const ColumnRule& rule, const nlohmann::json& value,
                                         const MaskingKeys& keys) {
  if (rule.mask == Mask::kDrop) return std::nullopt;
  if (value.is_null()) return nlohmann::json(nullptr);
  switch (rule.mask) {
    case Mask::kKeep:
      return value;
    case Mask::kDrop:  // handled above
    case Mask::kNull:
      return nlohmann::json(nullptr);
    case Mask::kRedact:
      return nlohmann::json(kRedacted);
    case Mask::kSha256:
      return nlohmann::json(sha256_hex(keys.salt, text_of(value)));
    case Mask::kHmacSha256:
      return nlohmann::json("v" + std::to_string(keys.hmac_version) + ":" +
                            hmac_sha256_hex(keys.hmac_key, text_of(value)));
    case Mask::kPartial:
      return nlohmann::json(partial(text_of(value), rule.keep_last));
    case Mask::kEmailDomain:
      return nlohmann::json(email_domain(text_of(value)));
  }
  // An unknown rule (a cast integer) never sends the value.
  return nlohmann::json(kRedacted);
}

Masker::Masker(const TableSpec& table, MaskingKeys keys) : table_(table), keys_(std::move(keys)) {}

nlohmann::json Masker::mask_row(const nlohmann::json& row) const {
  if (!row.is_object()) return row;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& item : row.items()) {
    if (auto masked = mask_value(table_.rule(item.key()), item.value(), keys_)) {
      out[item.key()] = std::move(*masked);
    }
  }
  return out;
}

void Masker::mask_in_place(nlohmann::json& row) const {
  if (!row.is_object()) return;
  for (auto it = row.begin(); it != row.end();) {
    const ColumnRule rule = table_.rule(it.key());
    if (rule.mask == Mask::kKeep) {
      ++it;
      continue;
    }
    auto masked = mask_value(rule, *it, keys_);
    if (!masked) {
      it = row.erase(it);
      continue;
    }
    *it = std::move(*masked);
    ++it;
  }
}

bool Masker::keeps_type(std::string_view column) const {
  const Mask mask = table_.rule(column).mask;
  return mask == Mask::kKeep || mask == Mask::kNull;
}

bool Masker::sends(std::string_view column) const {
  return table_.rule(column).mask != Mask::kDrop;
}

}  // namespace hi::sinks
