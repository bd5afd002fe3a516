// The stale-while-revalidate read cache of GET /api/portfolio and GET /api/intelligence/forecast
// (entries and their compare-and-set in consume/cache.h).
//
//   fresh   (younger than the TTL)         served as stored
//   stale   (older; Redis expires it at 2x) served as stored, refreshed once in the background:
//                                           one refresh per key in this process (`refreshing_`)
//                                           and across processes (SET NX on hi:fill:{key})
//   missing (or a worker's tombstone)       computed in the request, stored, served
//
// A fill never replaces an entry with a higher through_seq, so a slow fill cannot undo a
// worker's invalidation.
#include "consume/cache.h"

#include <charconv>
#include <optional>
#include <string_view>

#include "api/internal/support.h"
#include "api/service.h"
#include "core/time.h"
#include "pg/transaction.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;

constexpr std::size_t kMaxQueuedRefreshes = 1024;
constexpr std::chrono::milliseconds kRefreshLease{10'000};

std::int64_t unix_ms() { return unix_now_us() / 1000; }

// A stored entry, read without parsing its body (fill_entry writes "body" last, verbatim).
struct Entry {
  std::int64_t stored_at = 0;
  std::string_view body;
};
std::optional<Entry> read_entry(std::string_view v) {
  constexpr std::string_view kStored = R"("stored_at":)", kBody = R"(,"body":)";
  const auto s = v.find(kStored);
  const auto b = v.find(kBody);
  if (s == std::string_view::npos || b == std::string_view::npos || b < s || v.back() != '}') {
    return std::nullopt;  // a tombstone, or not ours
  }
  Entry e;
  const char* first = v.data() + s + kStored.size();
  if (std::from_chars(first, v.data() + b, e.stored_at).ec != std::errc()) return std::nullopt;
  e.body = v.substr(b + kBody.size(), v.size() - (b + kBody.size()) - 1);
  return e;
}

}  // namespace

Result<Service::Filled> Service::fill_entry(const Principal& who, const std::string& key,
                                            std::chrono::seconds ttl, const Fill& fill,
                                            http::Request* request) {
  auto lease = pool_.acquire();
  if (!lease) return lease.error();
  pg::Transaction tx(**lease);
  if (auto s = tx.begin(who.tenant_id); !s) return s.error();
  http::Request background;
  Call call{request != nullptr ? *request : background, who, **lease};
  auto filled = fill(call);
  if (!filled) return filled.error();
  if (auto s = tx.commit(); !s) return s.error();
  // "body" last and verbatim: the stored text is what a hit serves.
  const std::string entry = R"({"through_seq":)" + std::to_string(filled->through_seq) +
                            R"(,"stored_at":)" + std::to_string(unix_ms()) + R"(,"body":)" +
                            filled->body + "}";
  auto set = redis_command({"EVAL", consume::kCacheFillScript, "1", key, entry,
                            std::to_string(filled->through_seq),
                            std::to_string(std::chrono::milliseconds(2 * ttl).count())});
  if (!set || set->is_error()) {
    log_.warn("cache fill failed", {{"key", key}, {"error", set ? set->str : set.error().message}});
  }
  return filled;
}

Response Service::cached(http::Request& request, const std::string& scope, const std::string& cache,
                         KeyOf key_of, std::chrono::seconds ttl, Fill fill) {
  Admission in = admit(request, scope, key_of);
  if (!in.who) return std::move(in.refusal);
  const CacheCounters& counters = cache_counters_.at(cache);
  auto finish = [&](Response r, const char* result) {
    const std::string_view what = result;
    (what == "fresh"   ? counters.fresh
     : what == "stale" ? counters.stale
                       : counters.miss)
        ->Increment();
    cache_lookups_.fetch_add(1, std::memory_order_relaxed);
    if (what != "miss") cache_hits_.fetch_add(1, std::memory_order_relaxed);
    r.headers.emplace_back("X-Cache", result);
    for (auto& h : in.headers) r.headers.push_back(std::move(h));
    return r;
  };
  const std::string key = key_of(in.who->user_id);
  if (in.read && in.read->type == redis::Reply::Type::kString) {
    if (const auto entry = read_entry(in.read->str)) {
      const std::int64_t age_ms = unix_ms() - entry->stored_at;
      std::string body(entry->body);
      if (age_ms < std::chrono::milliseconds(ttl).count()) {
        return finish(Response::text(std::move(body), "application/json"), "fresh");
      }
      // Stale: answer now, refresh once (here and in every other API process).
      bool queue = false;
      {
        std::lock_guard lock(refresh_mu_);
        if (!refreshing_.contains(key) && refresh_queue_.size() < kMaxQueuedRefreshes) {
          refreshing_.insert(key);
          queue = true;
        }
      }
      if (queue) {
        auto lease = redis_command(
            {"SET", "hi:fill:" + key, "1", "NX", "PX", std::to_string(kRefreshLease.count())});
        if (lease && lease->type == redis::Reply::Type::kStatus) {
          std::lock_guard lock(refresh_mu_);
          refresh_queue_.emplace_back(key, [this, who = *in.who, key, ttl, fill, &counters] {
            // A read that saw the entry stale just before another refresh landed asks again:
            // the entry is fresh now, nothing to do.
            if (auto now = redis_command({"GET", key});
                now && now->type == redis::Reply::Type::kString) {
              const auto e = read_entry(now->str);
              if (e && unix_ms() - e->stored_at < std::chrono::milliseconds(ttl).count()) {
                (void)redis_command({"DEL", "hi:fill:" + key});
                return;
              }
            }
            auto r = fill_entry(who, key, ttl, fill, nullptr);
            if (!r) {
              log_.warn("cache refresh failed", {{"key", key}, {"error", r.error().message}});
            } else {
              counters.refreshes->Increment();
            }
            (void)redis_command({"DEL", "hi:fill:" + key});
          });
          refresh_cv_.notify_one();
        } else {
          std::lock_guard lock(refresh_mu_);
          refreshing_.erase(key);  // another process refreshes it
        }
      }
      return finish(Response::text(std::move(body), "application/json"), "stale");
    }
  }
  // Missing, a tombstone, unreadable, or Redis is down: compute in the request.
  auto filled = fill_entry(*in.who, key, ttl, fill, &request);
  if (!filled) return finish(internal::db_failure(filled.error()), "miss");
  return finish(Response::text(filled->body, "application/json"), "miss");
}

void Service::refresh_loop() {
  std::unique_lock lock(refresh_mu_);
  while (true) {
    refresh_cv_.wait(lock, [&] { return refresh_stop_ || !refresh_queue_.empty(); });
    if (refresh_stop_) return;
    auto [key, job] = std::move(refresh_queue_.front());
    refresh_queue_.pop_front();
    lock.unlock();
    job();
    lock.lock();
    refreshing_.erase(key);
  }
}

}  // namespace hi::api
