#include "core/ids.h"

#include <pthread.h>
#include <sys/random.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "core/strings.h"

namespace hi {
namespace {

void fill_random_uncached(void* buf, std::size_t n) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) throw std::runtime_error("getrandom failed");
    p += got;
    n -= static_cast<std::size_t>(got);
  }
}

// Small draws come from a per-thread buffer of the kernel's randomness, refilled 256 bytes at a
// time: one system call per 32 ids instead of one per id. A forked child starts with an empty
// buffer, so parent and child never hand out the same bytes.
thread_local unsigned char random_pool[256];
thread_local std::size_t random_left = 0;
const int kForkReset = ::pthread_atfork(nullptr, nullptr, [] { random_left = 0; });

void fill_random(void* buf, std::size_t n) {
  (void)kForkReset;
  constexpr std::size_t kSize = sizeof random_pool;
  if (n <= kSize / 4) {
    if (random_left < n) {
      fill_random_uncached(random_pool, kSize);
      random_left = kSize;
    }
    unsigned char* from = random_pool + kSize - random_left;
    std::memcpy(buf, from, n);
    std::memset(from, 0, n);  // handed out once
    random_left -= n;
    return;
  }
  fill_random_uncached(buf, n);
}

}  // namespace

std::string uuid_v7_from(std::uint64_t unix_ms, std::uint16_t rand_a, std::uint64_t rand_b) {
  std::array<unsigned char, 16> b{};
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(unix_ms >> (40 - 8 * i));
  b[6] = static_cast<unsigned char>(0x70 | ((rand_a >> 8) & 0x0F));
  b[7] = static_cast<unsigned char>(rand_a & 0xFF);
  b[8] = static_cast<unsigned char>(0x80 | ((rand_b >> 56) & 0x3F));
  for (int i = 9; i < 16; ++i) b[i] = static_cast<unsigned char>(rand_b >> (8 * (15 - i)));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0F]);
  }
  return out;
}

std::string uuid_v7() {
  // Monotonic within a millisecond: rand_a is a 12-bit counter seeded randomly each new ms
  // (RFC 9562 method 1); if it overflows we borrow the next millisecond.
  static std::mutex mu;
  static std::uint64_t last_ms = 0;  // guarded by mu
  static std::uint16_t counter = 0;  // guarded by mu
  std::uint64_t rand_b;
  fill_random(&rand_b, sizeof rand_b);
  const auto now_ms =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  std::uint64_t ms;
  std::uint16_t a;
  {
    std::lock_guard lock(mu);
    if (now_ms > last_ms) {
      last_ms = now_ms;
      std::uint16_t seed;
      fill_random(&seed, sizeof seed);
      counter = seed & 0x07FF;  // leave head-room for increments
    } else if (++counter > 0x0FFF) {
      ++last_ms;
      counter = 0;
    }
    ms = last_ms;
    a = counter;
  }
  return uuid_v7_from(ms, a, rand_b);
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  fill_random(raw.data(), bytes);
  return hex_encode(raw);
}

}  // namespace hi
