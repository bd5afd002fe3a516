// Envelope encryption of stored secrets (pool credentials of miners, exchange API keys).
//
// Each secret is sealed with its own fresh AES-256-GCM data key; the data key is wrapped
// (AES-256-GCM too) by a versioned master key kept on disk, never in the database. Both
// encryptions take the secret's record id ("miners:42:credentials") as associated data, so a
// sealed blob copied onto another record, or into another column, does not open. Rotating the
// master key re-wraps only the 32-byte data keys (`rewrap`); the data ciphertexts stay as they
// are.
//
// Master keys: files DIR/secrets/master_keys/<N> (N = 1, 2, ...), each 32 random bytes as 64 hex
// digits, mode 600 in a directory of mode 700. The highest version is the current one: `seal`
// and `rewrap` use it, `open` uses whichever version the blob names. Old versions are never
// deleted here (a blob wrapped under a deleted version is lost); see docs/secrets.md.
//
// The sealed blob (bytea), all integers big-endian:
//
//   offset  size  field
//   0       1     format, kFormatV1 (0x01)
//   1       4     master key version (uint32)
//   5       12    wrap nonce
//   17      32    wrapped data key      AES-256-GCM(master key, wrap nonce, data key,
//   49      16    wrap tag                          aad = blob[0..5) || record_id)
//   65      12    data nonce
//   77      n     ciphertext            AES-256-GCM(data key, data nonce, plaintext,
//   77+n    16    data tag                          aad = blob[0..1) || record_id)
//
// The wrap's associated data covers the version, so a blob relabelled with another version
// fails; the data's does not, so a rewrap leaves bytes 65.. untouched. Nonces are 96 random bits
// from RAND_bytes (a data key encrypts exactly one message; a master key wraps one data key per
// seal or rewrap, far below the 2^32 random-nonce limit of GCM).
//
// Errors: a blob that is truncated, of an unknown format, tampered with anywhere, or sealed for
// another record id is kDataLoss; a master key version that is not on disk, even after
// re-reading the directory, is kNotFound naming the version. No error, log line or exception
// carries a plaintext or a key: messages name record ids, versions and paths only. Decrypted
// data keys and unauthenticated plaintext are wiped (OPENSSL_cleanse) before they are released.
//
// Thread-safety: a KeyRing may be shared by any number of threads (seal/open/rewrap take it by
// const reference; its key map is guarded by a mutex). Another process — `hashinsight keys
// rotate` — may add a version while a ring is in use: `seal` notices the directory changed (its
// mtime) and re-reads it, `open` re-reads it when a blob names a version it does not know, and
// `reload()` re-reads it on demand.
//
//   auto ring = vault::KeyRing::open(data_dir + "/secrets", /*create_if_missing=*/true);
//   if (!ring) return ring.error();
//   auto blob = vault::seal(*ring, password, vault::miner_credentials_id(miner_id));
//   ... INSERT ... credentials_enc = blob, key_version = vault::blob_version(*blob) ...
//   auto password = vault::open(*ring, blob_from_db, vault::miner_credentials_id(miner_id));
//
// Record ids use the row's id, so a writer needs the id before it seals: take it from the
// sequence first (`SELECT nextval(pg_get_serial_sequence('miners', 'id'))`), or, for an upsert of
// exchange_keys, lock the existing row (`SELECT id ... FOR UPDATE`) and seal for its id.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace hi::vault {

inline constexpr std::uint8_t kFormatV1 = 0x01;
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kNonceBytes = 12;
inline constexpr std::size_t kTagBytes = 16;
// Offsets into a blob (see the table above).
inline constexpr std::size_t kVersionOffset = 1;
inline constexpr std::size_t kWrapNonceOffset = 5;
inline constexpr std::size_t kWrappedKeyOffset = kWrapNonceOffset + kNonceBytes;  // 17
inline constexpr std::size_t kWrapTagOffset = kWrappedKeyOffset + kKeyBytes;      // 49
inline constexpr std::size_t kDataNonceOffset = kWrapTagOffset + kTagBytes;       // 65
inline constexpr std::size_t kCiphertextOffset = kDataNonceOffset + kNonceBytes;  // 77
// The size of a blob sealing an empty plaintext; a blob is this plus the plaintext's size.
inline constexpr std::size_t kOverheadBytes = kCiphertextOffset + kTagBytes;  // 93
// Secrets are small (a password, an API key): anything larger is a caller's mistake.
inline constexpr std::size_t kMaxPlaintextBytes = 64 * 1024;

// The versioned master keys of one secrets directory. Movable, not copyable; a moved-from ring
// must not be used. Construct with open().
class KeyRing {
 public:
  // Loads every version in `secrets_dir`/master_keys. With `create_if_missing`, a directory
  // without any version gets version 1 (a `master_key_v1` file that `hashinsight up` wrote
  // directly in `secrets_dir` is adopted as version 1 rather than replaced). Without it, an
  // empty or missing directory is kNotFound. A key file that is malformed is kDataLoss; one
  // that group or others may read is kFailedPrecondition (the message says how to fix it).
  static Result<KeyRing> open(const std::string& secrets_dir, bool create_if_missing);

  KeyRing(KeyRing&&) noexcept;
  KeyRing& operator=(KeyRing&&) noexcept;
  ~KeyRing();

  // The highest version: the one seal() and rewrap() use.
  std::uint32_t current_version() const;
  // Every version known, ascending.
  std::vector<std::uint32_t> versions() const;
  // DIR/secrets/master_keys.
  const std::string& directory() const;

  // Writes version current+1 (fresh random bytes; a temporary file linked into place, so a
  // reader never sees a partial key and two concurrent writers never overwrite each other) and
  // returns it. The ring re-reads the directory first, so the new version is above any that
  // another process added.
  Result<std::uint32_t> add_version();

  // Re-reads the directory; versions already loaded stay loaded.
  Status reload() const;

 private:
  struct State;
  explicit KeyRing(std::unique_ptr<State> state);
  friend struct KeyRingAccess;  // vault.cc: the key bytes, for seal/open/rewrap

  std::unique_ptr<State> state_;
};

// Seals `plaintext` for `record_id` under the ring's current version.
Result<std::string> seal(const KeyRing& ring, std::string_view plaintext,
                         std::string_view record_id);

// The plaintext of `blob`, sealed for `record_id`.
Result<std::string> open(const KeyRing& ring, std::string_view blob, std::string_view record_id);

// `blob` with its data key re-wrapped under the ring's current version: bytes 1..65 (version,
// wrap nonce, wrapped key, tag) change, bytes 65.. (the data part) do not. The data key is
// authenticated first (a blob that would not open is refused); the data part itself is not
// decrypted, so its tampering shows only at open(). A blob already on the current version is
// re-wrapped too (fresh nonce).
Result<std::string> rewrap(const KeyRing& ring, std::string_view blob, std::string_view record_id);

// The master key version named by `blob` (kDataLoss when it is too short or of another format).
Result<std::uint32_t> blob_version(std::string_view blob);

// The record ids the platform seals under: the API and `hashinsight keys rotate` both use these.
std::string miner_credentials_id(std::int64_t miner_id);       // "miners:<id>:credentials"
std::string exchange_key_id(std::int64_t exchange_key_id);     // "exchange_keys:<id>:key"
std::string exchange_secret_id(std::int64_t exchange_key_id);  // "exchange_keys:<id>:secret"

}  // namespace hi::vault
