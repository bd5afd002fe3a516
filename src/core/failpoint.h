// Failpoints: named places in the code where a test (or an operator reproducing a bug) makes
// the process crash, fail or stall on purpose, as FoundationDB's buggify, TiKV's fail-rs and
// RocksDB's sync points do. Every point is listed in docs/failpoints.md.
//
//   if (auto s = failpoint("relay.after_bus_ack"); !s) return s;
//
// Armed from a specification, `name=action[,name=action...]`, with actions
//   crash      log "failpoint <name>: crash" on stderr and _exit(137) at once: no cleanup, no
//              flush, no destructor, like kill -9;
//   error      return a retryable Unavailable error from failpoint();
//   sleep(MS)  sleep MS milliseconds, then continue;
// and an optional `N*` prefix (`3*crash`) to act on the N-th pass only (passes are counted from
// 1 per name since the process armed it). Without a prefix the action runs on every pass.
//
// configure_failpoints() takes the HI_FAILPOINTS setting and DIR/failpoints/<part> (a file of
// entries, so a harness can arm a part that a supervisor restarts; read at every start). Unarmed, a
// failpoint costs one predictable branch on a relaxed atomic load.
//
// The registry is process-wide on purpose: a failpoint must be reachable from any depth of any
// component without threading a handle through every call. It is thread-safe.
#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include "core/result.h"

namespace hi {

namespace internal {
extern std::atomic<bool> failpoints_armed;
Status failpoint_slow(std::string_view name);
}  // namespace internal

inline Status failpoint(std::string_view name) {
  if (!internal::failpoints_armed.load(std::memory_order_relaxed)) [[likely]] {
    return {};
  }
  return internal::failpoint_slow(name);
}

// Replaces the armed failpoints with `spec` (empty: disarms all). InvalidArgument names the
// malformed entry and arms nothing.
Status arm_failpoints(std::string_view spec);

// Arms `spec` (the HI_FAILPOINTS setting) and, when `data_dir` is not empty, the entries of
// DIR/failpoints/<part> (the file's win for the same name). Says on stderr what it armed.
Status configure_failpoints(std::string_view spec, std::string_view part,
                            const std::string& data_dir);

}  // namespace hi
