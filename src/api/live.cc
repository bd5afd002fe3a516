#include "api/live.h"

#include <nlohmann/json.hpp>
#include <string_view>

#include "core/backoff.h"
#include "core/time.h"
#include "redis/client.h"

namespace hi::api {
namespace {

constexpr std::string_view kChannelPrefix = "hi:portfolio:";  // + tenant (portfolio_worker.h)
constexpr std::chrono::milliseconds kListenWait{500};
constexpr std::chrono::milliseconds kFetchRetry{500};

// One server-sent event; `data` is JSON, so a line break in it can only be the JSON's own
// whitespace, and each line becomes a data: line as the format requires.
std::string sse_event(const PortfolioView& v) {
  std::string out = "event: portfolio\nid: " + std::to_string(v.through_seq) + "\ndata: ";
  for (char c : v.json) {
    if (c == '\n') {
      out += "\ndata: ";
    } else {
      out += c;
    }
  }
  out += "\n\n";
  return out;
}

}  // namespace

LiveHub::LiveHub(Options options, Fetch fetch, Metrics& metrics, Logger log)
    : options_(std::move(options)),
      fetch_(std::move(fetch)),
      log_(std::move(log)),
      registry_(std::make_shared<Registry>()),
      pushes_(metrics.counter("hashinsight_api_stream_pushes_total",
                              "Portfolio events written to open streams")),
      notices_(metrics.counter("hashinsight_api_stream_notices_total",
                               "Portfolio change notices received from the workers")),
      reconnects_(metrics.counter("hashinsight_api_stream_redis_connects_total",
                                  "Subscriptions (re)established to the workers' notices")),
      fetch_failures_(metrics.counter("hashinsight_api_stream_fetch_failures_total",
                                      "Failed reads of due portfolios (retried)")),
      notice_to_push_(metrics.histogram(
          "hashinsight_api_stream_notice_to_push_seconds",
          "From a worker's notice arriving to the portfolio written to the user's streams", {},
          Metrics::fine_latency_buckets())) {
  registry_->open_gauge =
      &metrics.gauge("hashinsight_api_streams_open", "Open GET /api/portfolio/stream streams");
  pusher_ = std::thread([this] { push_loop(); });
  listener_ = std::jthread([this](std::stop_token stop) { listen(stop); });
}

LiveHub::~LiveHub() {
  listener_.request_stop();
  if (listener_.joinable()) listener_.join();
  std::vector<std::shared_ptr<http::Stream>> streams;
  {
    std::lock_guard lock(registry_->mu);
    registry_->stop = true;
    for (auto& [key, list] : registry_->watchers) {
      for (auto& w : list) streams.push_back(w.stream);
    }
  }
  registry_->due_cv.notify_all();
  if (pusher_.joinable()) pusher_.join();
  for (auto& s : streams) s->close();
}

std::shared_ptr<http::Stream> LiveHub::open(const std::string& tenant, const std::string& user,
                                            std::int64_t last_event_id) {
  auto stream = std::make_shared<http::Stream>(options_.stream_buffer);
  // The client reconnects after 2 s when the connection drops (the EventSource default is 3).
  stream->write("retry: 2000\n\n");
  const UserKey key{tenant, user};
  std::uint64_t id = 0;
  {
    std::lock_guard lock(registry_->mu);
    id = registry_->next_id++;
    registry_->watchers[key].push_back(Watcher{stream, last_event_id, id});
    registry_->open_gauge->Set(static_cast<double>(++registry_->open));
  }
  std::weak_ptr<Registry> weak = registry_;
  stream->on_close([weak, key, id] {
    auto registry = weak.lock();
    if (!registry) return;
    std::lock_guard lock(registry->mu);
    auto it = registry->watchers.find(key);
    if (it == registry->watchers.end()) return;
    std::erase_if(it->second, [id](const Watcher& w) { return w.id == id; });
    if (it->second.empty()) registry->watchers.erase(it);
    registry->open_gauge->Set(static_cast<double>(--registry->open));
  });
  mark_due(key, -1);
  return stream;
}

std::size_t LiveHub::open_streams() const {
  std::lock_guard lock(registry_->mu);
  return registry_->open;
}

void LiveHub::mark_due(const UserKey& key, std::int64_t through_seq, std::int64_t notice_ns) {
  {
    std::lock_guard lock(registry_->mu);
    auto it = registry_->watchers.find(key);
    if (it == registry_->watchers.end()) return;
    bool behind = false;
    for (const auto& w : it->second) behind = behind || through_seq < 0 || w.sent < through_seq;
    if (!behind) return;
    auto [at, added] = registry_->due[key.first].try_emplace(key.second, notice_ns);
    if (!added && at->second == 0) at->second = notice_ns;
  }
  registry_->due_cv.notify_one();
}

void LiveHub::mark_all_due() {
  {
    std::lock_guard lock(registry_->mu);
    for (const auto& [key, list] : registry_->watchers) {
      registry_->due[key.first].try_emplace(key.second, 0);
    }
  }
  registry_->due_cv.notify_one();
}

void LiveHub::listen(std::stop_token stop) {
  Backoff backoff(std::chrono::milliseconds(100), std::chrono::seconds(5));
  while (!stop.stop_requested()) {
    auto client = redis::Client::connect(options_.redis_url, std::chrono::milliseconds(1000));
    if (client) {
      const std::string pattern = std::string(kChannelPrefix) + "*";
      auto subscribed = client->command({"PSUBSCRIBE", pattern});
      if (subscribed && !subscribed->is_error()) {
        reconnects_.Increment();
        backoff.reset();
        // Whatever was published while no subscription stood is lost: bring every open
        // stream up to date.
        mark_all_due();
        while (!stop.stop_requested()) {
          auto message = client->receive(kListenWait);
          if (!message) {
            log_.warn("portfolio notices: subscription lost", {{"error", message.error().message}});
            break;
          }
          if (!*message) continue;  // quiet
          const auto& m = **message;
          // ["pmessage", pattern, channel, payload]
          if (m.elements.size() != 4 || m.elements[0].str != "pmessage") continue;
          const std::string& channel = m.elements[2].str;
          if (!channel.starts_with(kChannelPrefix)) continue;
          notices_.Increment();
          const auto notice = nlohmann::json::parse(m.elements[3].str, nullptr, false);
          if (!notice.is_object() || !notice.contains("user_id")) continue;
          const auto& user = notice["user_id"];
          const auto seq = notice.value("through_seq", std::int64_t{-1});
          mark_due({channel.substr(kChannelPrefix.size()),
                    user.is_string() ? user.get<std::string>() : user.dump()},
                   seq, mono_now_ns());
        }
      }
    }
    if (!sleep_for(stop, backoff.next())) return;
  }
}

void LiveHub::push_loop() {
  auto next_beat = std::chrono::steady_clock::now() + options_.heartbeat;
  std::unique_lock lock(registry_->mu);
  while (true) {
    registry_->due_cv.wait_until(lock, next_beat,
                                 [&] { return registry_->stop || !registry_->due.empty(); });
    if (registry_->stop) return;
    if (std::chrono::steady_clock::now() >= next_beat) {
      lock.unlock();
      heartbeat();
      lock.lock();
      next_beat = std::chrono::steady_clock::now() + options_.heartbeat;
    }
    auto due = std::exchange(registry_->due, {});
    lock.unlock();
    bool failed = false;
    for (auto& entry : due) {
      // Named, not a structured binding: a lambda may capture those only from C++20 on, which
      // clang 14 (the fuzz build's compiler) does not yet take.
      const std::string& tenant = entry.first;
      auto& users = entry.second;
      std::vector<std::string> batch;
      auto flush = [&] {
        auto views = fetch_(tenant, batch);
        if (!views) {
          fetch_failures_.Increment();
          log_.warn("portfolio stream: read failed; retrying",
                    {{"tenant", tenant}, {"error", views.error().message}});
          std::lock_guard relock(registry_->mu);
          for (const auto& user : batch) registry_->due[tenant].try_emplace(user, users[user]);
          failed = true;
        } else {
          for (const auto& v : *views) deliver(tenant, v, users[v.user_id]);
        }
        batch.clear();
      };
      for (const auto& [user, notice_ns] : users) {
        batch.push_back(user);
        if (batch.size() >= options_.batch) flush();
      }
      if (!batch.empty()) flush();
    }
    lock.lock();
    if (failed) {
      registry_->due_cv.wait_for(lock, kFetchRetry, [&] { return registry_->stop; });
    }
  }
}

void LiveHub::deliver(const std::string& tenant, const PortfolioView& view,
                      std::int64_t notice_ns) {
  std::string event;
  std::lock_guard lock(registry_->mu);
  auto it = registry_->watchers.find(UserKey{tenant, view.user_id});
  if (it == registry_->watchers.end()) return;
  for (auto& w : it->second) {
    if (w.sent >= view.through_seq) continue;
    if (event.empty()) event = sse_event(view);
    // A client too far behind is disconnected by the stream itself (and resumes).
    if (w.stream->write(event)) {
      pushes_.Increment();
      if (notice_ns != 0) {
        notice_to_push_.Observe(static_cast<double>(mono_now_ns() - notice_ns) / 1e9);
      }
    }
    w.sent = view.through_seq;
  }
}

void LiveHub::heartbeat() {
  std::vector<std::shared_ptr<http::Stream>> streams;
  {
    std::lock_guard lock(registry_->mu);
    streams.reserve(registry_->open);
    for (const auto& [key, list] : registry_->watchers) {
      for (const auto& w : list) streams.push_back(w.stream);
    }
  }
  for (auto& s : streams) s->write(": heartbeat\n\n");
}

}  // namespace hi::api
