// Per-user recalculation locks in Redis, with fencing tokens.
//
// lock:recalc:{user_id} is taken with SET NX PX <lease> and holds "<owner>:<token>"; the token
// is INCR fence:recalc:{user_id}, so tokens are monotonic per user. The holder stores its token
// with the row it writes, and the write is conditional (`WHERE stored.fencing_token <=
// new.fencing_token`): a holder that stalled past its lease while someone else took the lock
// and wrote cannot overwrite the newer row. Release is a compare-and-delete script (a lock that
// expired and was taken over is not deleted by its former holder).
//
// The fence counter lives in Redis; if Redis loses it (restart without persistence, FLUSHALL),
// new tokens would start below the stored ones and every write would be rejected. raise_fence()
// repairs that: after a rejected write the runtime raises the counter to the stored token and
// retries with a fresh, higher one.
//
// A lock found held under this owner's own name is taken over (with a new, higher token): the
// owner is unique among live processes (the consumer name), and holds no lock between its
// batches, so such a lock was left by a previous process of the same member that died holding
// it (`up` restarts a worker under the same name). Without this, its users would wait out the
// lease.
//
// Many users are locked in one script call (one round trip per batch). Not thread-safe: one
// owner (it uses the caller's Client).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "redis/client.h"

namespace hi::consume {

std::string lock_key(std::string_view user_id);   // lock:recalc:{user_id}
std::string fence_key(std::string_view user_id);  // fence:recalc:{user_id}

class FencedLocks {
 public:
  // `owner` identifies this process in lock values (e.g. the consumer name).
  FencedLocks(std::string owner, std::chrono::milliseconds lease)
      : owner_(std::move(owner)), lease_(lease) {}

  // Tries to take each user's lock without waiting. Returns one token per user, in order:
  // > 0 = acquired with that fencing token, 0 = held by someone else.
  Result<std::vector<std::int64_t>> try_acquire(redis::Client& redis,
                                                const std::vector<std::string>& users);
  // Releases the locks taken with these tokens (compare-and-delete); ignores locks that
  // expired or were taken over. Returns how many were still ours.
  Result<std::int64_t> release(redis::Client& redis, const std::vector<std::string>& users,
                               const std::vector<std::int64_t>& tokens);
  // release() as one command to pipeline with others (its reply: how many were still ours, or
  // a NOSCRIPT error after the server lost its scripts: then call release()). Loads the script
  // the first time. nullopt: nothing to release.
  Result<std::optional<std::vector<std::string>>> release_command(
      redis::Client& redis, const std::vector<std::string>& users,
      const std::vector<std::int64_t>& tokens);
  // Raises fence:recalc:{user} to at least `token` (after a write rejected by a stored token).
  Status raise_fence(redis::Client& redis, const std::string& user, std::int64_t token);

  std::chrono::milliseconds lease() const { return lease_; }
  const std::string& owner() const { return owner_; }

 private:
  Result<redis::Reply> eval(redis::Client& redis, int script, std::vector<std::string> argv);

  std::string owner_;
  std::chrono::milliseconds lease_;
  std::string sha_[3];  // SCRIPT LOAD results, loaded on first use
};

}  // namespace hi::consume
