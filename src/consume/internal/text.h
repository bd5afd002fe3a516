// Bytes from the bus as PostgreSQL text: a `text` or `jsonb` value must be valid UTF-8 without
// NUL, and a bus message promises neither. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hi::consume::internal {

// True when `bytes` is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) and
// holds no NUL: what PostgreSQL accepts as text.
bool is_pg_text(std::string_view bytes);

// `bytes` as PostgreSQL text: unchanged when is_pg_text(); otherwise every NUL and every byte
// that is not part of a valid UTF-8 sequence is written as `\xNN` (lowercase hex). For people
// reading the row, not reversible (the exact bytes go to base64, see below).
std::string escape_pg_text(std::string_view bytes);

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a UTF-8
// sequence.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes);

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);
// nullopt when `text` is not base64.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace hi::consume::internal
