// The read-through cache entries the API fills and the workers invalidate (CONTRACTS "Cache
// entries"): `user_portfolio:{uid}` and `forecast:{uid}` hold
//
//   {"through_seq": N, "stored_at": <unix ms>, "body": <the route's JSON answer>}
//
// and an invalidation leaves a tombstone `{"through_seq": N, "invalidated": true}` instead of
// deleting the key. Both writes are one Lua compare-and-set: nothing replaces an entry whose
// through_seq is higher. So an API fill that read the database before a worker's commit (lower
// through_seq) loses to that worker's tombstone even when it arrives after it, and cannot pin
// old data for the TTL; the next read misses and computes the current value.
//
// through_seq: for the portfolio, user_portfolio.through_seq (the user's highest event seq it
// includes); for the forecast, the fitted_at of the user's newest forecast row in microseconds
// since the epoch (a forecast has no event seq; its fit time orders it the same way).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "consume/runtime.h"

namespace hi::consume {

// KEYS[1] the entry; ARGV[1] the new value, ARGV[2] its through_seq, ARGV[3] TTL ms.
// Returns 1 when written, 0 when the stored entry is newer.
extern const char* const kCacheFillScript;
// KEYS[1] the entry; ARGV[1] the through_seq the tombstone stands for, ARGV[2] TTL ms.
extern const char* const kCacheInvalidateScript;

// The command a worker runs after its commit to invalidate `key` up to `through_seq`.
RedisCommand cache_invalidation(const std::string& key, std::int64_t through_seq,
                                std::chrono::milliseconds ttl);

// How long a tombstone outlives any fill racing it: longer than any request.
inline constexpr std::chrono::milliseconds kTombstoneTtl{3'600'000};

}  // namespace hi::consume
