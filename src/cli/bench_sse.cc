// `hashinsight bench sse [--clients N] [--rate R] [--json]`: how fast a write reaches the open
// pages, with N of them open at once.
//
// The whole stack as a user runs it (UpStack: `up`, durable), N bench users, and for each user
// one GET /api/portfolio/stream held open by this process (one thread, epoll). Then one
// POST /api/miners per user, sent open loop at R writes/s by a few threads (a send waits for its
// slot, never for another's answer). A user's delivery time runs from just before its POST is
// sent to the moment its stream delivers an event whose id (through_seq) is at least the seq the
// POST returned; the event sent when the stream opened does not count (its through_seq is lower
// than any write's seq), and a push that arrives before the POST's answer does (pushes are kept
// per user). Meanwhile one client sends GET /api/portfolio, one at a time, for user after user:
// its p99 is what the open streams cost every other request.
//
// One JSON line (CONTRACTS): {"clients", "received", "delivery_p50_ms", "delivery_p99_ms",
// "get_portfolio_p99_ms", ...}; received < clients (a write never seen within --drain seconds)
// is a failure (exit 1) after the line.
#include <sys/epoll.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "api/auth.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "core/time.h"
#include "http/client.h"
#include "http/event_stream.h"

namespace hi::cli {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

struct SseBenchOptions {
  int clients = 1000;
  int rate = 500;  // writes per second
  int drain_s = 30;
  int writers = 8;
  bool json = false;
};

// One user's side of the run. Written by the writer that sends its POST (sent_ns, seq) and read
// by the stream thread once `answered` is set; pushes are the stream thread's own.
struct Client {
  std::string token;
  std::int64_t sent_ns = 0;
  std::int64_t seq = 0;  // from the POST's answer; 0 until then (or when it failed)
  std::atomic<bool> answered{false};
  std::vector<std::pair<std::int64_t, std::int64_t>> pushes;  // (through_seq, arrival ns)
  std::int64_t delivered_ns = 0;                              // 0 = not yet
};

Result<http::ClientResponse> request(const std::string& method, const std::string& url,
                                     const std::string& token, std::string body = "") {
  auto u = http::parse_url(url);
  if (!u) return u.error();
  http::ClientRequest r;
  r.method = method;
  r.url = *u;
  r.body = std::move(body);
  r.headers = {{"Authorization", "Bearer " + token}};
  r.timeout = std::chrono::seconds(30);
  return http::fetch(r);
}

void raise_nofile() {
  if (rlimit l{}; ::getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
    l.rlim_cur = l.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &l);
  }
}

// Marks `c` delivered when it has its seq and a push at or past it.
void check_delivered(Client& c) {
  if (c.delivered_ns != 0 || !c.answered.load(std::memory_order_acquire) || c.seq <= 0) return;
  for (const auto& [through, at] : c.pushes) {
    if (through >= c.seq) {
      c.delivered_ns = at;
      return;
    }
  }
}

int run_sse_bench(const SseBenchOptions& opt) {
  if (log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);  // stderr is for progress
  raise_nofile();
  if (rlimit l{};
      ::getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < static_cast<rlim_t>(opt.clients) + 64) {
    fail(kExitFailure, "bench sse: " + std::to_string(opt.clients) +
                           " streams need more open files than RLIMIT_NOFILE allows (" +
                           std::to_string(l.rlim_cur) + ")");
  }
  Progress starting("bench sse: starting the stack");
  starting.update(0, 1);
  auto stack = UpStack::start();
  if (!stack) fail(kExitFailure, stack.error().message);
  starting.update(1, 1);
  starting.finish();
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) fail(kExitFailure, owner.error().message);
  if (auto s = create_bench_users(*owner, opt.clients); !s) fail(kExitFailure, s.error().message);

  api::TokenOptions token_options;
  token_options.secret = (*stack)->jwt_secret();
  std::vector<Client> clients(static_cast<std::size_t>(opt.clients));
  for (std::size_t i = 0; i < clients.size(); ++i) {
    clients[i].token =
        api::issue_token(token_options, std::to_string(kFirstBenchUser + static_cast<long>(i)),
                         std::to_string(1 + i % 2), {"miners:write", "portfolio:read"},
                         std::chrono::hours(2), unix_now_us() / 1'000'000);
  }
  const std::string api = (*stack)->api_url();
  auto stream_url = http::parse_url(api + "/api/portfolio/stream");
  if (!stream_url) fail(kExitFailure, stream_url.error().message);

  // 1. Every stream open, each in the epoll set.
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<http::EventStream> streams;
  streams.reserve(clients.size());
  Progress opening("bench sse: opening streams");
  for (std::size_t i = 0; i < clients.size(); ++i) {
    auto s = http::EventStream::open(*stream_url, {{"Authorization", "Bearer " + clients[i].token}},
                                     std::chrono::seconds(30));
    if (!s) fail(kExitFailure, "bench sse: stream " + std::to_string(i) + ": " + s.error().message);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s->fd(), &e);
    streams.push_back(std::move(*s));
    opening.update(static_cast<double>(i + 1), static_cast<double>(clients.size()));
  }
  opening.finish();

  // 2. The writes, open loop, and the GET prober.
  std::atomic<bool> stop_probe{false};
  std::vector<double> get_ms;
  std::atomic<int> get_errors{0};
  std::thread prober([&] {
    for (std::size_t i = 0; !stop_probe.load(); i = (i + 1) % clients.size()) {
      const std::int64_t t0 = mono_now_ns();
      auto r = request("GET", api + "/api/portfolio", clients[i].token);
      if (!r || r->status != 200) {
        get_errors.fetch_add(1);
        continue;
      }
      get_ms.push_back(static_cast<double>(mono_now_ns() - t0) / 1e6);
    }
  });
  std::atomic<std::size_t> next{0};
  std::atomic<int> write_errors{0};
  std::atomic<int> answered{0};
  const std::int64_t start_ns = mono_now_ns() + 100'000'000;
  const std::int64_t interval_ns = 1'000'000'000 / std::max(1, opt.rate);
  std::vector<std::thread> writers;
  for (int w = 0; w < opt.writers; ++w) {
    writers.emplace_back([&] {
      for (std::size_t i; (i = next.fetch_add(1)) < clients.size();) {
        const std::int64_t at = start_ns + static_cast<std::int64_t>(i) * interval_ns;
        if (const std::int64_t wait = at - mono_now_ns(); wait > 0) {
          std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
        }
        Client& c = clients[i];
        c.sent_ns = mono_now_ns();
        const json body = {{"model_id", 1 + static_cast<int>(i % 49)}, {"quantity", 1}};
        auto r = request("POST", api + "/api/miners", c.token, body.dump());
        if (r && r->status == 201) {
          const auto answer = json::parse(r->body, nullptr, false);
          c.seq = answer.is_object() ? answer.value("seq", std::int64_t{0}) : 0;
        }
        if (c.seq <= 0) write_errors.fetch_add(1);
        c.answered.store(true, std::memory_order_release);
        answered.fetch_add(1);
      }
    });
  }

  // 3. The streams, until every write is seen or the drain ends.
  Progress delivering("bench sse: writes delivered");
  std::size_t delivered = 0;
  std::int64_t drain_deadline = 0;
  std::vector<epoll_event> ready(256);
  std::vector<char> scanned(clients.size(), 0);
  while (delivered < clients.size()) {
    const int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 50);
    const std::int64_t now = mono_now_ns();
    for (int k = 0; k < n; ++k) {
      const std::size_t i = ready[static_cast<std::size_t>(k)].data.u64;
      auto events = streams[i].read_available();
      if (!events) {
        ::epoll_ctl(ep, EPOLL_CTL_DEL, streams[i].fd(), nullptr);
        continue;  // the API closed it: this client can no longer receive
      }
      for (const auto& e : *events) {
        clients[i].pushes.emplace_back(std::strtoll(e.id.c_str(), nullptr, 10), now);
      }
      const bool was = clients[i].delivered_ns != 0;
      check_delivered(clients[i]);
      delivered += !was && clients[i].delivered_ns != 0;
    }
    // Writes answered since the last pass may have had their push already.
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (scanned[i] || !clients[i].answered.load(std::memory_order_acquire)) continue;
      scanned[i] = 1;
      const bool was = clients[i].delivered_ns != 0;
      check_delivered(clients[i]);
      delivered += !was && clients[i].delivered_ns != 0;
    }
    delivering.update(static_cast<double>(delivered), static_cast<double>(clients.size()),
                      "sent " + std::to_string(answered.load()));
    if (drain_deadline == 0 && answered.load() == opt.clients) {
      drain_deadline = now + std::int64_t{opt.drain_s} * 1'000'000'000;
    }
    if (drain_deadline != 0 && now > drain_deadline) break;
  }
  delivering.finish();
  for (auto& t : writers) t.join();
  stop_probe.store(true);
  prober.join();
  ::close(ep);

  std::vector<double> delivery_ms;
  for (const auto& c : clients) {
    if (c.delivered_ns != 0)
      delivery_ms.push_back(static_cast<double>(c.delivered_ns - c.sent_ns) / 1e6);
  }
  ordered_json out;
  out["clients"] = opt.clients;
  out["received"] = delivery_ms.size();
  out["delivery_p50_ms"] = round_to(quantile(delivery_ms, 0.50), 3);
  out["delivery_p99_ms"] = round_to(quantile(delivery_ms, 0.99), 3);
  out["delivery_max_ms"] = round_to(delivery_ms.empty() ? 0 : delivery_ms.back(), 3);
  out["get_portfolio_p99_ms"] = round_to(quantile(get_ms, 0.99), 3);
  out["get_portfolio_p50_ms"] = round_to(quantile(get_ms, 0.50), 3);
  out["get_requests"] = get_ms.size();
  out["get_errors"] = get_errors.load();
  out["rate"] = opt.rate;
  out["write_errors"] = write_errors.load();
  out["durable"] = true;
  out["cores"] = std::thread::hardware_concurrency();
  out["load_generator"] = "this process (same machine)";
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!opt.json) {
    std::fprintf(stderr,
                 "bench sse: %d streams, %zu of %d writes seen on their stream; delivery p50 "
                 "%.1f ms, p99 %.1f ms; GET /api/portfolio p99 %.1f ms meanwhile\n",
                 opt.clients, delivery_ms.size(), opt.clients, out["delivery_p50_ms"].get<double>(),
                 out["delivery_p99_ms"].get<double>(), out["get_portfolio_p99_ms"].get<double>());
  }
  return delivery_ms.size() == clients.size() ? 0 : kExitFailure;
}

}  // namespace

void add_bench_sse(CLI::App& bench, Flags& /*flags*/) {
  auto* cmd = bench.add_subcommand(
      "sse", "N open portfolio streams, one write per user: delivery time and GET p99 meanwhile");
  auto opt = std::make_shared<SseBenchOptions>();
  cmd->add_option("--clients", opt->clients, "open streams (one bench user each)")
      ->check(CLI::Range(1, 20'000));
  cmd->add_option("--rate", opt->rate, "writes per second (open loop)")
      ->check(CLI::Range(1, 100'000));
  cmd->add_option("--drain", opt->drain_s, "seconds to wait for the last pushes")
      ->check(CLI::Range(1, 600));
  cmd->add_flag("--json", opt->json, "print only the JSON line (no summary on stderr)");
  cmd->callback([opt] { throw Exit{run_sse_bench(*opt)}; });
}

}  // namespace hi::cli
