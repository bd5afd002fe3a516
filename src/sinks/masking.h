// Masking of captured rows before they leave the sink (config.h names the rules).
//
// A row is the JSON object of a change event's `after` (or `before`, or the key): column name ->
// JSON value as the relay wrote it (numbers and booleans as JSON, everything else as text,
// json/jsonb as JSON). A value's text is the string itself for a JSON string, else its compact
// JSON dump (`42`, `true`, `{"a":1}`). Every rule leaves a null as null (nothing to hide).
//
//   keep          the value as it is
//   drop          the column is removed from the row (the destination never has it)
//   redact        "[redacted]"
//   null          null
//   sha256        lower-case hex of SHA-256(salt || text); salt = the bytes of the salt file
//   hmac-sha256   "v<N>:" + lower-case hex of HMAC-SHA-256(key N, text), N the current version
//   partial       the last keep_last characters (UTF-8 code points) kept, every earlier one "*":
//                 "4111111111111111" -> "************1111"; a value no longer than keep_last
//                 is replaced whole by as many "*"
//   email-domain  "***@" + the part after the last "@" ("alice@example.com" -> "***@example.com");
//                 a value without "@" -> "[redacted]"
//
// Masked values (every rule but keep and null) are text, whatever the column's type, and
// deterministic: the same value gives the same mask in every destination and run, so joins
// across destinations work. Rotating the HMAC key changes the mask of every value for every
// destination at once (the version prefix says which key made a stored value).
//
// Keys: DIR/secrets/masking/salt and DIR/secrets/masking/hmac-<N> (N = 1, 2, ...), each 32
// random bytes as 64 hex digits, mode 600 in a directory of mode 700; the highest N is the
// current HMAC key.
//
// No error or log message carries a value or a key.
//
// Thread-safety: a Masker is immutable after construction; share it freely.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "sinks/config.h"

namespace hi::sinks {

struct MaskingKeys {
  std::string salt;                // raw bytes (32)
  std::uint32_t hmac_version = 0;  // the current version
  std::string hmac_key;            // raw bytes (32) of that version
};

// Loads DIR/secrets/masking (`secrets_dir` = DIR/secrets). With `create_if_missing`, a missing
// salt or a directory without any hmac-<N> gets one (fresh random bytes). Without it a missing
// file is kNotFound. A malformed file is kDataLoss; one that group or others may read is
// kFailedPrecondition.
Result<MaskingKeys> load_masking_keys(const std::string& secrets_dir, bool create_if_missing);

// Writes hmac-<current+1> (a temporary file linked into place) and returns its version.
Result<std::uint32_t> rotate_masking_key(const std::string& secrets_dir);

// The masked value of one column (nullopt: the column is dropped).
std::optional<nlohmann::json> mask_value(const ColumnRule& rule, const nlohmann::json& value,
                                         const MaskingKeys& keys);

class Masker {
 public:
  Masker(const TableSpec& table, MaskingKeys keys);

  // `row` with every column masked by its rule (dropped columns removed). Non-objects (null)
  // come back unchanged.
  nlohmann::json mask_row(const nlohmann::json& row) const;
  // The same in place: kept columns are not copied (the sink's path for every change).
  void mask_in_place(nlohmann::json& row) const;
  // The rule of one column.
  ColumnRule rule(std::string_view column) const { return table_.rule(column); }
  // True when the column reaches the destination with its own type (keep or null).
  bool keeps_type(std::string_view column) const;
  // True when the column reaches the destination at all (not drop).
  bool sends(std::string_view column) const;

 private:
  TableSpec table_;
  MaskingKeys keys_;
};

}  // namespace hi::sinks
