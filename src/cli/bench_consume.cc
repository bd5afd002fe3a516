// `hashinsight bench consume --events N --users U --redeliver-fraction F [--bus redis|kafka]
// [--workers W] [--batch-size B] --json`: the portfolio worker's throughput with the inbox on.
//
// U bench users (half in each seeded tenant, unlimited plan, a few miners each) and N events
// for random users are published the way the relay publishes them, plus F x N of them a second
// time (redeliveries); then W portfolio runtimes (threads of this process, each a member of
// portfolio-recalc-group with its own connections) drain the topic. The clock runs from their
// start until every delivery is settled. duplicates_applied = sum(user_portfolio.events_applied)
// - distinct inbox rows: 0 when every effect was applied exactly once.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "bus/kafka_mock.h"
#include "cli/bench_stack.h"
#include "cli/common.h"
#include "consume/portfolio_worker.h"
#include "consume/runtime.h"
#include "core/ids.h"
#include "core/metrics.h"
#include "core/time.h"
#include "redis/client.h"

namespace hi::cli {
namespace {

using nlohmann::json;

struct ConsumeBenchOptions {
  long events = 100000;
  int users = 1000;
  double redeliver_fraction = 0.1;
  int workers = 1;
  int batch_size = 0;  // 0: CONSUMER_BATCH_SIZE, as the worker
  bool json = false;
  bool no_durable = false;
};

std::string envelope(const std::string& id, const std::string& tenant, const std::string& user,
                     std::int64_t seq, const std::string& now) {
  std::string v;
  v.reserve(400);
  v += R"({"id":")" + id + R"(","kind":"miner.added","tenant_id":")" + tenant + R"(","user_id":")" +
       user + R"(","entity_id":null,"idempotency_key":null,"seq":)" + std::to_string(seq) +
       R"(,"payload":{"model_id":1,"quantity":1},"created_at":")" + now +
       R"(","source":{"commit_lsn":"0/16B3748","ordinal":)" + std::to_string(seq) +
       R"(,"xid":740,"commit_ts":")" + now + R"("}})";
  return v;
}

int run_consume_bench(const Config& cfg, const ConsumeBenchOptions& opt) {
  if (log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);  // stderr is for progress
  auto stack = BenchStack::start(cfg, !opt.no_durable);
  if (!stack) fail(kExitFailure, "bench consume: " + stack.error().message);
  auto owner = pg::Connection::connect((*stack)->database_url());
  if (!owner) fail(kExitFailure, owner.error().message);
  if (auto s = create_bench_users(*owner, opt.users); !s) fail(kExitFailure, s.error().message);
  for (const char* sql :
       {"DELETE FROM consumer_inbox WHERE consumer_name = 'portfolio-recalc-group'",
        "DELETE FROM event_dlq"}) {
    if (auto r = owner->exec(sql); !r) fail(kExitFailure, r.error().message);
  }

  StackUrls urls{(*stack)->database_url(), (*stack)->redis_url(), cfg.str("KAFKA_BROKERS"),
                 cfg.str("BUS"), ""};
  std::unique_ptr<bus::MockCluster> mock;
  if (urls.bus == "kafka" && urls.kafka_brokers.empty()) {
    auto m = bus::MockCluster::start_with_topics(
        1, bus::standard_topics(), static_cast<int>(cfg.integer("KAFKA_PARTITIONS")), 1);
    if (!m) fail(kExitFailure, "kafka mock cluster: " + m.error().message);
    mock = std::move(*m);
    urls.kafka_brokers = mock->bootstrap();
  }
  bus::BusOptions bus = bus_options(cfg, urls);
  {
    auto r = redis::Client::connect(urls.redis_url);
    if (!r) fail(kExitFailure, r.error().message);
    for (const char* k : {"events.miner", "events.dlq"}) (void)r->command({"DEL", k});
  }

  // The deliveries: N events, F x N of them twice, in random order.
  std::mt19937_64 rng(20261122);
  std::vector<std::int64_t> seq(static_cast<std::size_t>(opt.users), 0);
  std::vector<bus::Message> messages;
  const long redelivered = std::lround(opt.redeliver_fraction * static_cast<double>(opt.events));
  messages.reserve(static_cast<std::size_t>(opt.events + redelivered));
  const std::string now = format_rfc3339_us(unix_now_us());
  for (long i = 0; i < opt.events; ++i) {
    const auto u = static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(opt.users));
    const std::string user = std::to_string(kFirstBenchUser + static_cast<long>(u));
    const std::string tenant = (u % 2 == 0) ? "1" : "2";
    const std::string id = uuid_v7();
    messages.push_back({"events.miner",
                        user,
                        envelope(id, tenant, user, ++seq[u], now),
                        {{"id", id}, {"kind", "miner.added"}, {"tenant_id", tenant}}});
  }
  for (long i = 0; i < redelivered; ++i) {
    messages.push_back(messages[rng() % static_cast<std::uint64_t>(opt.events)]);
  }
  std::shuffle(messages.begin(), messages.end(), rng);
  {
    Progress progress("publish");
    std::size_t delivered = 0;
    auto producer = bus::make_producer(bus, [&](std::uint64_t, const Status& s) {
      if (!s) fail(kExitFailure, "publish: " + s.error().message);
      ++delivered;
    });
    if (!producer) fail(kExitFailure, producer.error().message);
    std::uint64_t tag = 0;
    for (auto& m : messages) {
      if (auto s = (*producer)->send(m, ++tag); !s) fail(kExitFailure, s.error().message);
      if (tag % 2000 == 0) (*producer)->poll(std::chrono::milliseconds(0));
      progress.update(static_cast<double>(delivered), static_cast<double>(messages.size()));
    }
    while ((*producer)->in_flight() > 0) {
      (*producer)->poll(std::chrono::milliseconds(100));
      progress.update(static_cast<double>(delivered), static_cast<double>(messages.size()));
    }
    progress.finish();
  }
  const std::uint64_t total_deliveries = messages.size();
  messages.clear();
  messages.shrink_to_fit();

  // Drain with W runtimes.
  Metrics metrics;
  consume::PortfolioHandler handlers[16];
  std::vector<std::unique_ptr<consume::Runtime>> runtimes;
  const int workers = std::clamp(opt.workers, 1, 16);
  for (int w = 0; w < workers; ++w) {
    consume::RuntimeOptions o;
    o.name = consume::kPortfolioGroup;
    o.bus = bus;
    o.consumer.group = consume::kPortfolioGroup;
    o.consumer.consumer_name = "bench-" + std::to_string(w) + "-" + random_hex(2);
    o.consumer.topics = {"events.miner"};
    o.bus.client_id = o.consumer.consumer_name;
    o.database_url = urls.database_url;
    o.db_role = cfg.str("DB_APP_ROLE");
    o.redis_url = (*stack)->cache_redis_url();  // locks, invalidations, status (as `up`)
    o.batch_size = static_cast<std::size_t>(
        opt.batch_size > 0 ? opt.batch_size : cfg.integer("CONSUMER_BATCH_SIZE"));
    o.poll_timeout = std::chrono::milliseconds(100);
    runtimes.push_back(
        std::make_unique<consume::Runtime>(o, handlers[w], metrics, Logger("consume")));
  }
  std::stop_source stop;
  const std::int64_t t0 = mono_now_ns();
  std::vector<std::jthread> threads;
  std::vector<Status> results(static_cast<std::size_t>(workers));
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back(
        [&, w] { results[static_cast<std::size_t>(w)] = runtimes[w]->run(stop.get_token()); });
  }
  Progress progress("consume");
  auto settled = [&] {
    std::uint64_t n = 0;
    for (const auto& r : runtimes) {
      n += r->stats().applied + r->stats().duplicates + r->stats().dead_lettered;
    }
    return n;
  };
  std::int64_t t1 = 0;
  for (;;) {
    const std::uint64_t n = settled();
    progress.update(static_cast<double>(n), static_cast<double>(total_deliveries));
    if (n >= total_deliveries) {
      t1 = mono_now_ns();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (mono_now_ns() - t0 > 3'600'000'000'000LL) fail(kExitFailure, "bench consume: timed out");
  }
  progress.finish();
  stop.request_stop();
  threads.clear();
  for (const auto& s : results) {
    if (!s) fail(kExitFailure, "bench consume: " + s.error().message);
  }
  const double seconds = static_cast<double>(t1 - t0) / 1e9;

  std::uint64_t applied = 0, duplicates = 0, dead = 0, fenced = 0, batches = 0;
  json stages = json::object();
  auto ms = [](std::int64_t ns) { return std::round(static_cast<double>(ns) / 1e5) / 10; };
  for (const auto& r : runtimes) {
    const auto& st = r->stats();
    stages["poll"] = stages.value("poll", 0.0) + ms(st.poll_ns);
    stages["lock"] = stages.value("lock", 0.0) + ms(st.lock_ns);
    stages["inbox"] = stages.value("inbox", 0.0) + ms(st.inbox_ns);
    stages["handler"] = stages.value("handler", 0.0) + ms(st.handler_ns);
    stages["commit"] = stages.value("commit", 0.0) + ms(st.commit_ns);
    stages["after_commit"] = stages.value("after_commit", 0.0) + ms(st.after_commit_ns);
    stages["ack"] = stages.value("ack", 0.0) + ms(st.ack_ns);
    applied += r->stats().applied;
    duplicates += r->stats().duplicates;
    dead += r->stats().dead_lettered;
    fenced += r->stats().fenced;
    batches += r->stats().batches;
  }
  auto check = owner->exec(
      "SELECT (SELECT COALESCE(sum(events_applied), 0) FROM user_portfolio WHERE user_id >= $1),"
      "       (SELECT count(*) FROM consumer_inbox WHERE consumer_name = $2)",
      {std::to_string(kFirstBenchUser), consume::kPortfolioGroup});
  if (!check) fail(kExitFailure, check.error().message);
  json out = {
      {"bench", "consume"},
      {"bus", bus::to_string(bus.kind)},
      {"durable", (*stack)->durable()},
      {"events", opt.events},
      {"users", opt.users},
      {"redeliver_fraction", opt.redeliver_fraction},
      {"deliveries", total_deliveries},
      {"workers", workers},
      {"batch_size", opt.batch_size > 0 ? opt.batch_size : cfg.integer("CONSUMER_BATCH_SIZE")},
      {"seconds", std::round(seconds * 1000) / 1000},
      {"events_per_s", std::round(static_cast<double>(opt.events) / seconds)},
      {"deliveries_per_s", std::round(static_cast<double>(total_deliveries) / seconds)},
      {"applied", applied},
      {"duplicates_skipped", duplicates},
      {"dead_lettered", dead},
      {"fenced", fenced},
      {"batches", batches},
      {"inbox_rows", check->int64(0, 1)},
      {"stage_ms", stages},
      {"duplicates_applied", check->int64(0, 0) - check->int64(0, 1)}};
  std::printf("%s\n", out.dump().c_str());
  return kExitOk;
}

}  // namespace

void add_bench_consume(CLI::App& bench, Flags& flags) {
  auto* cmd = bench.add_subcommand("consume", "portfolio worker throughput with the inbox on");
  auto opt = std::make_shared<ConsumeBenchOptions>();
  cmd->add_option("--events", opt->events, "distinct events")->check(CLI::Range(1L, 100'000'000L));
  cmd->add_option("--users", opt->users, "bench users")->check(CLI::Range(1, 1'000'000));
  cmd->add_option("--redeliver-fraction", opt->redeliver_fraction,
                  "fraction of the events delivered twice")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; }, "redis or kafka");
  cmd->add_option("--workers", opt->workers, "portfolio runtimes (threads)")
      ->check(CLI::Range(1, 16));
  cmd->add_option("--batch-size", opt->batch_size, "events per batch (default CONSUMER_BATCH_SIZE)")
      ->check(CLI::Range(1, 100000));
  cmd->add_flag("--json", opt->json, "print the result as JSON (always one line)");
  cmd->add_flag("--no-durable", opt->no_durable,
                "private servers without fsync (PostgreSQL fsync off, Redis appendfsync no)");
  cmd->callback([&flags, opt] { throw Exit{run_consume_bench(load_config(flags), *opt)}; });
}

}  // namespace hi::cli
