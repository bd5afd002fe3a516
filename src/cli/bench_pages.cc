#include "cli/bench_pages.h"

#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/auth.h"
#include "cli/common.h"
#include "core/time.h"
#include "http/client.h"
#include "http/event_stream.h"

namespace hi::cli {
namespace {

using nlohmann::json;

// Over `session`: each sender keeps its connection open, as a page keeps one to its origin.
Result<http::ClientResponse> call(http::Session& session, const std::string& method,
                                  const std::string& url, const std::string& token,
                                  std::string body = "", const std::string& idempotency_key = "") {
  auto u = http::parse_url(url);
  if (!u) return u.error();
  http::ClientRequest r;
  r.method = method;
  r.url = *u;
  r.body = std::move(body);
  r.headers = {{"Authorization", "Bearer " + token}};
  if (!idempotency_key.empty()) r.headers.emplace_back("Idempotency-Key", idempotency_key);
  r.timeout = std::chrono::seconds(30);
  return session.fetch(r);
}

// Whether a write answered so (or not at all) is sent again under retry_writes: the API or a
// server it needs was down or restarting, or the key's first request still runs.
bool worth_retrying(const Result<http::ClientResponse>& r) {
  return !r || r->status >= 500 || r->status == 409 || r->status == 429;
}

// Raises `slot` to at least `value`.
void raise_to(std::atomic<std::int64_t>& slot, std::int64_t value) {
  std::int64_t seen = slot.load();
  while (seen < value && !slot.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

PageLoadStack start_page_load_stack(const std::string& label, const std::vector<std::string>& env,
                                    int users) {
  if (log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);  // stderr is for progress
  if (auto s = raise_nofile(static_cast<std::size_t>(users) + 256); !s) {
    fail(kExitFailure, label + ": " + s.error().message);
  }
  Progress starting(label + ": starting the stack");
  starting.update(0, 1);
  auto stack = UpStack::start(env);
  if (!stack) fail(kExitFailure, label + ": " + stack.error().message);
  starting.update(1, 1);
  starting.finish();
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) fail(kExitFailure, label + ": " + owner.error().message);
  if (auto s = create_bench_users(*owner, users); !s) {
    fail(kExitFailure, label + ": " + s.error().message);
  }
  return {std::move(*stack), std::move(*owner)};
}

void add_run_fields(nlohmann::ordered_json& out, const PageLoadResult& r) {
  out["write_errors"] = r.write_errors;
  out["stream_reconnects"] = r.reconnects;
  out["durable"] = true;
  out["cores"] = std::thread::hardware_concurrency();
  out["load_generator"] = "this process (same machine)";
  add_cpu_fields(out, r.cpu_before, r.cpu_after);
}

Status raise_nofile(std::size_t needed) {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return {};
  if (l.rlim_cur < l.rlim_max) {
    l.rlim_cur = l.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &l);
  }
  if (l.rlim_cur < needed) {
    return failed_precondition(std::to_string(needed) +
                               " open files are needed; RLIMIT_NOFILE allows " +
                               std::to_string(l.rlim_cur));
  }
  return {};
}

Result<PageLoadResult> run_page_load(const PageLoadOptions& o) {
  const auto users = static_cast<std::size_t>(std::max(1, o.users));
  if (auto s = raise_nofile(users + 256); !s) return s.error();
  api::TokenOptions token_options;
  token_options.secret = o.jwt_secret;
  std::vector<std::string> tokens;
  for (std::size_t u = 0; u < users; ++u) {
    tokens.push_back(api::issue_token(token_options,
                                      std::to_string(kFirstBenchUser + static_cast<long>(u)),
                                      std::to_string(1 + u % 2), {"miners:write", "portfolio:read"},
                                      std::chrono::hours(4), unix_now_us() / 1'000'000));
  }
  auto stream_url = http::parse_url(o.api_url + "/api/portfolio/stream");
  if (!stream_url) return stream_url.error();
  auto open = [&](std::size_t u, const std::string& last_id) {
    http::Pairs headers = {{"Authorization", "Bearer " + tokens[u]}};
    if (!last_id.empty()) headers.emplace_back("Last-Event-ID", last_id);
    return http::EventStream::open(*stream_url, headers, std::chrono::seconds(30));
  };

  // 1. A page per user.
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<http::EventStream> streams;
  streams.reserve(users);
  Progress opening(o.label + ": opening streams");
  for (std::size_t u = 0; u < users; ++u) {
    auto s = open(u, "");
    if (!s) {
      ::close(ep);
      return s.error().wrap("stream " + std::to_string(u));
    }
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = u;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s->fd(), &e);
    streams.push_back(std::move(*s));
    opening.update(static_cast<double>(u + 1), static_cast<double>(users));
  }
  opening.finish();

  // 2. The writes, open loop, and the GET probe.
  PageLoadResult out;
  std::vector<WriteRecord> writes(static_cast<std::size_t>(o.writes));
  std::vector<std::atomic<std::int64_t>> max_seq(users);  // of each user's answered writes
  std::atomic<std::size_t> next{0};
  std::atomic<std::int64_t> answered{0};
  std::atomic<std::int64_t> errors{0};
  const std::int64_t start_ns = mono_now_ns() + 200'000'000;
  out.cpu_before = cpu_times();
  const double interval_ns = 1e9 / std::max(0.001, o.rate);
  // Enough senders that a slow answer does not delay the next send: ~50 ms of writes.
  const int senders = std::clamp(static_cast<int>(o.rate / 20), 8, 64);
  std::vector<std::thread> writers;
  for (int w = 0; w < senders; ++w) {
    writers.emplace_back([&] {
      auto session = std::make_unique<http::Session>();
      for (std::size_t i; (i = next.fetch_add(1)) < writes.size();) {
        WriteRecord& wr = writes[i];
        wr.user = i % users;
        wr.scheduled_ns =
            start_ns + static_cast<std::int64_t>(static_cast<double>(i) * interval_ns);
        if (o.retry_writes) wr.key = o.key_prefix + "-" + std::to_string(i);
        if (const std::int64_t wait = wr.scheduled_ns - mono_now_ns(); wait > 0) {
          std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
        }
        const json body = {{"model_id", 1 + static_cast<int>(i % 49)}, {"quantity", 1}};
        const std::int64_t give_up_ns = wr.scheduled_ns + o.give_up.count() * 1'000'000'000;
        for (std::chrono::milliseconds pause{25};;
             pause = std::min(2 * pause, std::chrono::milliseconds(1000))) {
          ++wr.attempts;
          auto r = call(*session, "POST", o.api_url + "/api/miners", tokens[wr.user], body.dump(),
                        wr.key);
          if (r && r->status == 201) {
            const auto answer = json::parse(r->body, nullptr, false);
            if (answer.is_object()) {
              wr.seq = answer.value("seq", std::int64_t{0});
              wr.miner_id = answer.value("id", std::int64_t{0});
            }
            wr.answered_ns = mono_now_ns();
            break;
          }
          if (!o.retry_writes || !worth_retrying(r) || mono_now_ns() > give_up_ns) break;
          if (!r) session = std::make_unique<http::Session>();  // a fresh connection
          std::this_thread::sleep_for(pause);
        }
        if (wr.seq > 0) {
          raise_to(max_seq[wr.user], wr.seq);
        } else {
          errors.fetch_add(1);
        }
        answered.fetch_add(1, std::memory_order_release);
      }
    });
  }
  std::atomic<bool> writing{true};
  std::thread prober;
  if (o.probe_get) {
    prober = std::thread([&] {
      http::Session session;
      for (std::size_t u = 0; writing.load(); u = (u + 1) % users) {
        const std::int64_t t0 = mono_now_ns();
        auto r = call(session, "GET", o.api_url + "/api/portfolio", tokens[u]);
        if (!r || r->status != 200) {
          ++out.get_errors;
          continue;
        }
        out.get_ms.push_back(static_cast<double>(mono_now_ns() - t0) / 1e6);
      }
    });
  }

  // 3. The pages, until every write is visible or the drain ends.
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> pushes(users);  // seq, ns
  std::vector<std::int64_t> shown(users, 0);  // the highest through_seq each page got
  std::vector<std::string> last_id(users);
  std::vector<std::int64_t> last_push(users, start_ns);
  std::vector<std::int64_t> reopen_at(users, 0);  // retry_writes: a page waiting to reopen
  std::int64_t longest_gap = 0;
  std::vector<epoll_event> ready(512);
  Progress progress(o.label + ": writes");
  std::int64_t drain_deadline = 0;
  std::int64_t next_check = 0;
  auto reopen = [&](std::size_t u) -> Status {
    auto again = open(u, last_id[u]);
    if (!again) {
      if (!o.retry_writes) return again.error().wrap("reopening stream " + std::to_string(u));
      reopen_at[u] = mono_now_ns() + 250'000'000;
      return {};
    }
    reopen_at[u] = 0;
    streams[u] = std::move(*again);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = u;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, streams[u].fd(), &e);
    ++out.reconnects;
    return {};
  };
  while (true) {
    const int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 20);
    const std::int64_t now = mono_now_ns();
    for (int k = 0; k < n; ++k) {
      const std::size_t u = ready[static_cast<std::size_t>(k)].data.u64;
      auto events = streams[u].read_available();
      if (!events) {  // the API ended it: reopen where the page left off
        ::epoll_ctl(ep, EPOLL_CTL_DEL, streams[u].fd(), nullptr);
        if (auto s = reopen(u); !s) {
          ::close(ep);
          return s.error();
        }
        continue;
      }
      for (const auto& e : *events) {
        const std::int64_t seq = std::strtoll(e.id.c_str(), nullptr, 10);
        pushes[u].emplace_back(seq, now);
        shown[u] = std::max(shown[u], seq);
        last_id[u] = e.id;
        if (now > start_ns) longest_gap = std::max(longest_gap, now - last_push[u]);
        last_push[u] = std::max(now, start_ns);
      }
    }
    if (now < next_check) continue;
    next_check = now + 100'000'000;
    for (std::size_t u = 0; u < users; ++u) {
      if (reopen_at[u] != 0 && now >= reopen_at[u]) (void)reopen(u);
    }
    const std::int64_t done = answered.load(std::memory_order_acquire);
    std::size_t caught_up = 0;
    for (std::size_t u = 0; u < users; ++u) caught_up += shown[u] >= max_seq[u].load();
    progress.update(static_cast<double>(done), static_cast<double>(writes.size()),
                    "pages up to date " + std::to_string(caught_up) + "/" + std::to_string(users));
    if (done < static_cast<std::int64_t>(writes.size())) continue;
    if (caught_up == users) break;
    if (drain_deadline == 0) drain_deadline = now + o.drain.count() * 1'000'000'000;
    if (now > drain_deadline) break;
  }
  progress.finish();
  out.cpu_after = cpu_times();
  writing.store(false);
  for (auto& t : writers) t.join();
  if (prober.joinable()) prober.join();
  ::close(ep);

  // Each page's pushes in arrival order, their seq replaced by the highest so far: the first
  // at or above a write's seq is when the page first covered it.
  for (auto& p : pushes) {
    for (std::size_t k = 1; k < p.size(); ++k) p[k].first = std::max(p[k].first, p[k - 1].first);
  }
  std::int64_t last_visible = start_ns;
  for (auto& w : writes) {
    if (w.seq <= 0) continue;
    ++out.writes;
    const auto& p = pushes[w.user];
    const auto it =
        std::lower_bound(p.begin(), p.end(), std::pair<std::int64_t, std::int64_t>{w.seq, 0},
                         [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it == p.end()) {
      ++out.lost;
      continue;
    }
    w.visible_ns = it->second;
    out.visible_ms.push_back(
        static_cast<double>(std::max<std::int64_t>(0, it->second - w.scheduled_ns)) / 1e6);
    last_visible = std::max(last_visible, it->second);
  }
  out.start_ns = start_ns;
  out.records = std::move(writes);
  out.shown = std::move(shown);
  out.longest_push_gap_ms = static_cast<double>(longest_gap) / 1e6;
  out.write_errors = errors.load();
  out.seconds = static_cast<double>(last_visible - start_ns) / 1e9;
  return out;
}

}  // namespace hi::cli
