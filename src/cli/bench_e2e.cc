// `hashinsight bench e2e --rate R --duration S [--bus redis|kafka] [--users U] [--warmup S]
// [--json]`: the headline number, written to visible, on the stack as a user runs it.
//
// `up` starts everything (UpStack: durable, PostgreSQL fsync on, the bus Redis appendfsync
// always; on --bus kafka the embedded mock cluster) and returns once every consumer group has
// joined; U bench users each get a page (bench_pages.h: a stream held open, as the dashboard
// holds one), then R x S POST /api/miners go out at a steady open-loop rate across them, after
// --warmup seconds of the same load that are not measured (a fresh stack's first second is
// its start: cold caches and connections) but whose losses count.
// Write-to-visible is from a write's scheduled send to its user's stream delivering
// through_seq >= its seq; one not visible within 10 s of the last answer is lost.
//
// `stages` come from the parts' own histograms, scraped before and after the run (the
// difference is this run's): api_commit (the API's POST /api/miners handling, its commit
// included), commit_to_bus (the relay: commit timestamp -> bus acknowledgement),
// bus_to_consumer_commit (the portfolio worker: the bus storing the event -> the commit that
// applied it), commit_to_push (the API: the worker's notice -> the push written to the stream).
// `duplicates` = effects applied more than once (sum of the bench users' events_applied minus
// their distinct inbox rows).
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/bench_pages.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "consume/portfolio_worker.h"
#include "http/client.h"

namespace hi::cli {
namespace {

using nlohmann::ordered_json;

struct E2eBenchOptions {
  double rate = 200;
  int duration_s = 60;
  std::string bus = "redis";
  int users = 100;
  int warmup_s = 5;
  bool json = false;
};

// A histogram of one part, as named in up.json's metrics_urls.
struct Stage {
  const char* name;
  const char* part;
  const char* metric;
  std::vector<std::string> labels;
  HistogramBuckets before;
};

Result<std::string> scrape(const nlohmann::json& ready, const std::string& part) {
  const auto urls = ready.value("metrics_urls", nlohmann::json::object());
  if (!urls.contains(part)) return not_found("no metrics for " + part);
  auto url = http::parse_url(urls[part].get<std::string>());
  if (!url) return url.error();
  http::ClientRequest r;
  r.url = *url;
  auto res = http::fetch(r);
  if (!res) return res.error();
  return res->body;
}

int run_e2e_bench(const E2eBenchOptions& opt) {
  auto [stack, owner] = start_page_load_stack("bench e2e", {"BUS=" + opt.bus}, opt.users);

  std::vector<Stage> stages = {
      {"api_commit",
       "api",
       "hashinsight_http_request_duration_seconds",
       {R"(route="/api/miners")", R"(method="POST")", R"(status="201")"},
       {}},
      {"commit_to_bus", "relay", "hashinsight_relay_commit_to_ack_seconds", {}, {}},
      {"bus_to_consumer_commit",
       "worker-portfolio",
       "hashinsight_consumer_bus_to_commit_seconds",
       {std::string("group=\"") + consume::kPortfolioGroup + "\""},
       {}},
      {"commit_to_push", "api", "hashinsight_api_stream_notice_to_push_seconds", {}, {}}};
  PageLoadOptions load;
  load.api_url = stack->api_url();
  load.jwt_secret = stack->jwt_secret();
  load.users = opt.users;
  load.rate = opt.rate;
  load.drain = std::chrono::seconds(10);
  // A fresh stack's first seconds measure its start (connections, caches, the first scan of
  // each table), not its steady state: they run at the same rate, unmeasured, first.
  std::int64_t warmup_lost = 0, warmup_errors = 0;
  if (opt.warmup_s > 0) {
    load.writes = static_cast<std::int64_t>(std::llround(opt.rate * opt.warmup_s));
    load.label = "bench e2e (warm-up)";
    auto w = run_page_load(load);
    if (!w) fail(kExitFailure, "bench e2e: warm-up: " + w.error().message);
    warmup_lost = w->lost;
    warmup_errors = w->write_errors;
  }

  const auto& ready = stack->ready();
  for (auto& s : stages) {
    if (auto text = scrape(ready, s.part)) s.before = histogram_buckets(*text, s.metric, s.labels);
  }
  const std::string worker_before = scrape(ready, "worker-portfolio").value_or("");

  load.writes = static_cast<std::int64_t>(std::llround(opt.rate * opt.duration_s));
  load.label = "bench e2e";
  auto r = run_page_load(load);
  if (!r) fail(kExitFailure, "bench e2e: " + r.error().message);

  ordered_json stage_json = ordered_json::object();
  for (auto& s : stages) {
    auto text = scrape(ready, s.part);
    if (!text) {
      stage_json[s.name] = nullptr;
      continue;
    }
    const auto run = histogram_delta(histogram_buckets(*text, s.metric, s.labels), s.before);
    auto ms = [&](double q) {
      const double v = histogram_quantile(run, q);
      return std::isnan(v) ? ordered_json(nullptr) : ordered_json(round_to(v * 1e3, 3));
    };
    stage_json[s.name] = {{"p50_ms", ms(0.50)}, {"p99_ms", ms(0.99)}};
  }
  // Where the portfolio worker's time went, per batch (its stage counters).
  if (auto worker = scrape(ready, "worker-portfolio")) {
    const std::vector<std::string> group = {std::string("group=\"") + consume::kPortfolioGroup +
                                            "\""};
    auto delta = [&](const std::string& name, std::vector<std::string> labels) {
      return metric_sum(*worker, name, labels) - metric_sum(worker_before, name, labels);
    };
    const double batches = delta("hashinsight_consumer_batch_seconds_count", group);
    ordered_json per_batch = ordered_json::object();
    for (const char* stage :
         {"poll", "lock", "inbox", "handler", "commit", "after_commit", "ack"}) {
      auto labels = group;
      labels.push_back(std::string("stage=\"") + stage + "\"");
      const double s = delta("hashinsight_consumer_stage_seconds_total", labels);
      per_batch[stage] = batches > 0 ? round_to(s * 1e3 / batches, 3) : 0.0;
    }
    stage_json["consumer"] = {
        {"batches", batches},
        {"events_per_batch",
         batches > 0 ? round_to(delta("hashinsight_consumer_deliveries_total", group) / batches, 2)
                     : 0.0},
        {"not_visible", delta("hashinsight_consumer_not_visible_total", group)},
        {"ms_per_batch", per_batch}};
  }
  auto check = owner.exec(
      // The stack is this run's: every portfolio inbox row is one of its writes.
      "SELECT (SELECT coalesce(sum(events_applied), 0) FROM user_portfolio WHERE user_id >= "
      "$1::bigint), (SELECT count(*) FROM consumer_inbox WHERE consumer_name = $2)",
      {std::to_string(kFirstBenchUser), consume::kPortfolioGroup});
  if (!check) fail(kExitFailure, "bench e2e: duplicates: " + check.error().message);
  const std::int64_t duplicates =
      std::max<std::int64_t>(0, check->int64(0, 0) - check->int64(0, 1));

  std::vector<double>& v = r->visible_ms;
  ordered_json out;
  out["rate"] = opt.rate;
  out["duration_s"] = opt.duration_s;
  out["writes"] = r->writes;
  out["p50_ms"] = round_to(quantile(v, 0.50), 3);
  out["p95_ms"] = round_to(quantile(v, 0.95), 3);
  out["p99_ms"] = round_to(quantile(v, 0.99), 3);
  out["max_ms"] = round_to(quantile(v, 1.0), 3);
  out["lost"] = r->lost + warmup_lost;
  out["duplicates"] = duplicates;
  out["throughput_eps"] =
      r->seconds > 0 ? round_to(static_cast<double>(v.size()) / r->seconds, 1) : 0.0;
  out["bus"] = opt.bus;
  out["stages"] = stage_json;
  out["users"] = opt.users;
  out["warmup_s"] = opt.warmup_s;
  add_run_fields(out, *r);
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!opt.json) {
    std::fprintf(stderr,
                 "bench e2e: %lld writes at %.0f/s on %s: write-to-visible p50 %.1f ms, p95 %.1f "
                 "ms, p99 %.1f ms; lost %lld, duplicates %lld\n",
                 static_cast<long long>(r->writes), opt.rate, opt.bus.c_str(),
                 out["p50_ms"].get<double>(), out["p95_ms"].get<double>(),
                 out["p99_ms"].get<double>(), static_cast<long long>(r->lost + warmup_lost),
                 static_cast<long long>(duplicates));
  }
  const bool clean =
      r->lost + warmup_lost == 0 && duplicates == 0 && r->write_errors + warmup_errors == 0;
  return clean ? 0 : kExitFailure;
}

}  // namespace

void add_bench_e2e(CLI::App& bench, Flags& /*flags*/) {
  auto* cmd = bench.add_subcommand(
      "e2e", "write-to-visible through the whole stack at a steady rate, with per-hop timings");
  auto opt = std::make_shared<E2eBenchOptions>();
  cmd->add_option("--rate", opt->rate, "POST /api/miners per second (open loop)")
      ->check(CLI::Range(0.1, 100'000.0));
  cmd->add_option("--duration", opt->duration_s, "seconds of writes")->check(CLI::Range(1, 3600));
  cmd->add_option("--bus", opt->bus, "redis or kafka")->check(CLI::IsMember({"redis", "kafka"}));
  cmd->add_option("--users", opt->users, "users, each with an open page")
      ->check(CLI::Range(1, 20'000));
  cmd->add_option("--warmup", opt->warmup_s,
                  "seconds of writes at the same rate before the measured run (not measured; "
                  "their losses count)")
      ->check(CLI::Range(0, 600));
  cmd->add_flag("--json", opt->json, "print only the JSON line (no summary on stderr)");
  cmd->callback([opt] { throw Exit{run_e2e_bench(*opt)}; });
}

}  // namespace hi::cli
