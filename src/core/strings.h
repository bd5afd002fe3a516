// Small string helpers shared by the configuration, the command line and JSON text building.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hi {

// Splits "a, b,,c" at `separator` into {"a", "b", "c"}: items are trimmed of blanks and empty
// items are dropped (flags and settings like RELAY_CAPTURE_TABLES).
std::vector<std::string> split_list(std::string_view text, char separator = ',');

// `text` without leading and trailing blanks (space, tab, CR, LF).
std::string_view trim(std::string_view text);

// A URL fit for a log or a terminal: "postgresql://user:secret@host/db" ->
// "postgresql://user:***@host/db". URLs without a password are returned as they are.
std::string redact_url(std::string_view url);

// Lowercase hex of `bytes` ("\x01\xab" -> "01ab"): digests, ids, bytea through
// encode()/decode(..., 'hex').
std::string hex_encode(std::string_view bytes);
// The bytes of lowercase or uppercase hex; nullopt for an odd length or a non-hex digit.
std::optional<std::string> hex_decode(std::string_view hex);

// Appends `s` as a JSON string literal: quotes, escapes for '"', '\\' and control characters
// (\n \r \t, else \u00XX); every other byte as it is, so valid UTF-8 stays valid and invalid
// bytes pass through. For hot paths that build JSON text without a DOM (the relay's events, the
// ClickHouse sink's rows).
void append_json_string(std::string& out, std::string_view s);

}  // namespace hi
