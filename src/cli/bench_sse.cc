// `hashinsight bench sse [--clients N] [--rate R] [--json]`: how fast a write reaches the open
// pages, with N of them open at once.
//
// The whole stack as a user runs it (UpStack: `up`, durable), N bench users with a page each
// (bench_pages.h: a stream held open by this process), one POST /api/miners per user sent open
// loop at R writes/s, delivery = write-to-visible of each. Meanwhile one client sends
// GET /api/portfolio, one at a time, for user after user: its p99 is what the open streams cost
// every other request.
//
// One JSON line (CONTRACTS): {"clients", "received", "delivery_p50_ms", "delivery_p99_ms",
// "get_portfolio_p99_ms", ...}; received < clients (a write never seen within --drain seconds)
// is a failure (exit 1) after the line.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/bench_pages.h"
#include "cli/bench_stack.h"
#include "cli/common.h"

namespace hi::cli {
namespace {

using nlohmann::ordered_json;

struct SseBenchOptions {
  int clients = 1000;
  int rate = 500;  // writes per second
  int drain_s = 30;
  bool json = false;
};

int run_sse_bench(const SseBenchOptions& opt) {
  auto [stack, owner] = start_page_load_stack("bench sse", {}, opt.clients);
  PageLoadOptions load;
  load.api_url = stack->api_url();
  load.jwt_secret = stack->jwt_secret();
  load.users = opt.clients;
  load.writes = opt.clients;  // one per user
  load.rate = opt.rate;
  load.drain = std::chrono::seconds(opt.drain_s);
  load.probe_get = true;
  load.label = "bench sse";
  auto r = run_page_load(load);
  if (!r) fail(kExitFailure, "bench sse: " + r.error().message);

  ordered_json out;
  out["clients"] = opt.clients;
  out["received"] = r->visible_ms.size();
  out["delivery_p50_ms"] = round_to(quantile(r->visible_ms, 0.50), 3);
  out["delivery_p99_ms"] = round_to(quantile(r->visible_ms, 0.99), 3);
  out["delivery_max_ms"] = round_to(quantile(r->visible_ms, 1.0), 3);
  out["get_portfolio_p99_ms"] = round_to(quantile(r->get_ms, 0.99), 3);
  out["get_portfolio_p50_ms"] = round_to(quantile(r->get_ms, 0.50), 3);
  out["get_requests"] = r->get_ms.size();
  out["get_errors"] = r->get_errors;
  out["rate"] = opt.rate;
  add_run_fields(out, *r);
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!opt.json) {
    std::fprintf(stderr,
                 "bench sse: %d streams, %zu of %d writes seen on their stream; delivery p50 "
                 "%.1f ms, p99 %.1f ms; GET /api/portfolio p99 %.1f ms meanwhile\n",
                 opt.clients, r->visible_ms.size(), opt.clients,
                 out["delivery_p50_ms"].get<double>(), out["delivery_p99_ms"].get<double>(),
                 out["get_portfolio_p99_ms"].get<double>());
  }
  return static_cast<int>(r->visible_ms.size()) == opt.clients ? 0 : kExitFailure;
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
