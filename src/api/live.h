// Live portfolio pushes: GET /api/portfolio/stream (server-sent events, CONTRACTS "SSE").
//
//   api::LiveHub hub(options, fetch, metrics, log);  // starts its two threads
//   auto stream = hub.open(tenant, user, last_event_id);
//   return http::Response::streaming(stream);
//
// After each commit the portfolio worker PUBLISHes a notice on hi:portfolio:{tenant}
// ({"user_id", "through_seq", ...}). The hub's listener thread reads them (PSUBSCRIBE) and marks
// the user due when one of their streams has sent less; its pusher thread reads every due
// user's current portfolio (`fetch`: the same JSON as GET /api/portfolio, one query per tenant
// and batch) and writes it to each of the user's streams that is behind:
//
//   event: portfolio
//   id: <through_seq>
//   data: <the portfolio JSON>
//
// A stream is due when it opens, so a new page, or a reconnecting one whose Last-Event-ID is
// older than the current portfolio, gets it at once. When the listener (re)connects to Redis
// every user with an open stream is due: a notice lost in the gap costs a moment, never a stale
// page. A comment line every `heartbeat` keeps idle connections alive through proxies. Pushes
// go only to the tenant and user the notice names: a stream is registered under its token's.
//
// A slow or dead client never holds the others up: a write only queues bytes in the stream's
// bounded buffer (http::Stream), and a client that falls `stream_buffer` behind is disconnected;
// its EventSource reconnects with Last-Event-ID and is brought up to date.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "http/stream.h"

namespace hi::api {

// A user's portfolio as GET /api/portfolio answers it, and its through_seq.
struct PortfolioView {
  std::string user_id;
  std::string json;
  std::int64_t through_seq = 0;
};

class LiveHub {
 public:
  struct Options {
    std::string redis_url;  // where the worker publishes
    std::chrono::milliseconds heartbeat{15'000};
    std::size_t stream_buffer = std::size_t{64} << 10;  // bytes a client may fall behind
    std::size_t batch = 500;                            // users per fetch
  };
  // The current portfolios of `users` of `tenant`, in any order.
  using Fetch = std::function<Result<std::vector<PortfolioView>>(
      const std::string& tenant, const std::vector<std::string>& users)>;

  LiveHub(Options options, Fetch fetch, Metrics& metrics, Logger log);
  ~LiveHub();  // stops the threads and ends every open stream
  LiveHub(const LiveHub&) = delete;
  LiveHub& operator=(const LiveHub&) = delete;

  // A stream for `user` of `tenant` whose client has seen `last_event_id` (-1: nothing). It is
  // registered until it ends, and due at once.
  std::shared_ptr<http::Stream> open(const std::string& tenant, const std::string& user,
                                     std::int64_t last_event_id);

  std::size_t open_streams() const;

 private:
  struct Watcher {
    std::shared_ptr<http::Stream> stream;
    std::int64_t sent = -1;  // the through_seq it was last sent
    std::uint64_t id = 0;
  };
  using UserKey = std::pair<std::string, std::string>;  // tenant, user

  // The registry, shared with the streams' close callbacks (which may outlive the hub).
  struct Registry {
    mutable std::mutex mu;
    std::condition_variable due_cv;
    std::map<UserKey, std::vector<Watcher>> watchers;  // guarded by mu
    // tenant -> user -> when the first notice that made it due arrived (mono ns; 0 when no
    // notice did: a new stream, a resubscription); guarded by mu
    std::map<std::string, std::map<std::string, std::int64_t>> due;
    std::uint64_t next_id = 1;  // guarded by mu
    std::size_t open = 0;       // guarded by mu
    bool stop = false;          // guarded by mu
    prometheus::Gauge* open_gauge = nullptr;
  };

  void listen(std::stop_token stop);
  void push_loop();
  // Marks `user` due when one of its streams has sent less than `through_seq` (-1: always);
  // `notice_ns`: when the notice that says so arrived (0: none).
  void mark_due(const UserKey& key, std::int64_t through_seq, std::int64_t notice_ns = 0);
  void mark_all_due();
  // Writes `view` to every stream of `key` that is behind it.
  void deliver(const std::string& tenant, const PortfolioView& view, std::int64_t notice_ns);
  void heartbeat();

  const Options options_;
  const Fetch fetch_;
  Logger log_;
  std::shared_ptr<Registry> registry_;
  prometheus::Counter& pushes_;
  prometheus::Counter& notices_;
  prometheus::Counter& reconnects_;
  prometheus::Counter& fetch_failures_;
  prometheus::Histogram& notice_to_push_;
  std::thread pusher_;
  std::jthread listener_;  // last: stopped and joined first
};

}  // namespace hi::api
