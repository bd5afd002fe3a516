// Identifiers: UUIDv7 (RFC 9562), time-ordered so outbox ids sort by creation time.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace hi {

// A new UUIDv7 in canonical text form ("01890a5d-ac96-774b-bcce-b302099a8057").
// Thread-safe. Ids made by one process in the same millisecond are strictly increasing.
std::string uuid_v7();

// The same, from given inputs (for tests): 48-bit Unix milliseconds, 74 random bits.
std::string uuid_v7_from(std::uint64_t unix_ms, std::uint16_t rand_a, std::uint64_t rand_b);

// A random hex string of `bytes` bytes from the OS entropy source (secrets, tokens).
std::string random_hex(std::size_t bytes);

}  // namespace hi
