// Small string helpers shared by the configuration and the command line.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hi {

// Splits "a, b,,c" at `separator` into {"a", "b", "c"}: items are trimmed of blanks and empty
// items are dropped (flags and settings like RELAY_CAPTURE_TABLES).
std::vector<std::string> split_list(std::string_view text, char separator = ',');

// `text` without leading and trailing blanks (space, tab, CR, LF).
std::string_view trim(std::string_view text);

}  // namespace hi
