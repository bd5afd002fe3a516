// Waiting between retries: jittered exponential backoff, and a sleep a stop request cuts short.
//
//   Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
//   while (!connect()) {
//     if (!sleep_for(stop, backoff.next())) return;  // stopped
//   }
//   backoff.reset();
//
// Backoff is a value type used by one thread; sleep_for may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <stop_token>

namespace hi {

// The delay before retry number `retry` (1, 2, ...): base * 2^(retry-1), capped at `cap`, times
// a factor in [0.5, 1.5) chosen by `unit_random` in [0, 1). Pure, for tests.
std::chrono::milliseconds backoff_delay(int retry, std::chrono::milliseconds base,
                                        std::chrono::milliseconds cap, double unit_random);

class Backoff {
 public:
  Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap);

  // The next delay (grows until reset()).
  std::chrono::milliseconds next();
  // Back to the first delay: call after a success.
  void reset() { retries_ = 0; }
  // Delays handed out since the last reset().
  int retries() const { return retries_; }

 private:
  std::chrono::milliseconds base_;
  std::chrono::milliseconds cap_;
  int retries_ = 0;
  std::minstd_rand rng_;
};

// Sleeps up to `duration`, returning early when `stop` is requested. Returns false when stopped
// (before or during the sleep), true when the whole duration passed.
bool sleep_for(std::stop_token stop, std::chrono::milliseconds duration);

}  // namespace hi
