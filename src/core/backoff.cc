#include "core/backoff.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>

namespace hi {

std::chrono::milliseconds backoff_delay(int retry, std::chrono::milliseconds base,
                                        std::chrono::milliseconds cap, double unit_random) {
  const int exp = std::clamp(retry - 1, 0, 30);
  const double raw = std::min(static_cast<double>(cap.count()),
                              static_cast<double>(base.count()) * std::ldexp(1.0, exp));
  const double jittered = raw * (0.5 + std::clamp(unit_random, 0.0, 1.0));
  return std::chrono::milliseconds(static_cast<std::int64_t>(jittered));
}

Backoff::Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap)
    : base_(base), cap_(cap), rng_(std::random_device{}()) {}

std::chrono::milliseconds Backoff::next() {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  // The exponent stops growing at the cap, so retries_ never overflows in a long outage.
  if (retries_ < 31) ++retries_;
  return backoff_delay(retries_, base_, cap_, unit(rng_));
}

bool sleep_for(std::stop_token stop, std::chrono::milliseconds duration) {
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait_for(lock, stop, duration, [] { return false; });
  return !stop.stop_requested();
}

}  // namespace hi
