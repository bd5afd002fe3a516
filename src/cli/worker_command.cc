// `hashinsight worker portfolio|intel|crm|audit`: one consumer group member.
//
// SIGTERM/SIGINT finish the batch in hand (commit, acknowledge) and exit 0.
#include <unistd.h>

#include <memory>
#include <thread>

#include "cli/common.h"
#include "consume/audit_worker.h"
#include "consume/crm_worker.h"
#include "consume/intel_worker.h"
#include "consume/portfolio_worker.h"
#include "consume/runtime.h"
#include "core/ids.h"
#include "core/metrics.h"
#include "core/strings.h"
#include "http/part_endpoint.h"

namespace hi::cli {
namespace {

struct WorkerFlags {
  std::string name;
  std::string group;
  std::string topics;
  std::string instance;
  std::int64_t backoff_ms = 100;
  std::int64_t poll_ms = 500;
  std::int64_t linger_ms = -1;  // -1: the worker's default (kDefaultLingerMs)
};

// How long a worker gathers a batch after its first event. The portfolio worker is on the
// page's path (write to visible) and the crm worker's webhook is someone's notification:
// neither waits. The intel and audit workers are not awaited by anyone, and each batch costs
// them a transaction, so they gather events: the audit worker 100 ms of them, the intel worker
// a second's (each batch revalues every user of the batch 21 times and rewrites the tenant's
// forecast rows; at 100 ms it took a fifth of the machine at 200 writes/s and the page's path
// waited behind it: bench e2e p95 16.5-19.4 ms, at one second 12.8-14.9 ms).
std::int64_t default_linger_ms(const std::string& worker) {
  return worker == "intel" ? 1000 : worker == "audit" ? 100 : 0;
}

}  // namespace

void add_worker_command(CLI::App& app, Flags& flags) {
  auto* cmd = app.add_subcommand("worker", "run a consumer: portfolio, intel, crm or audit");
  auto wf = std::make_shared<WorkerFlags>();
  cmd->add_option("name", wf->name, "portfolio | intel | crm | audit")
      ->required()
      ->check(CLI::IsMember({"portfolio", "intel", "crm", "audit"}));
  auto bind = [&](const char* flag, const char* setting, const char* help) {
    cmd->add_option_function<std::string>(
        flag, [&flags, setting](const std::string& v) { flags.overrides[setting] = v; }, help);
  };
  bind("--bus", "BUS", "redis or kafka (BUS)");
  bind("--batch-size", "CONSUMER_BATCH_SIZE", "events per batch (CONSUMER_BATCH_SIZE)");
  bind("--max-attempts", "CONSUMER_MAX_ATTEMPTS",
       "attempts before an event is dead-lettered (CONSUMER_MAX_ATTEMPTS)");
  bind("--metrics-port", "METRICS_PORT", "serve /metrics and /alive here (METRICS_PORT)");
  bind("--max-crashes", "CONSUMER_MAX_CRASHES",
       "deliveries that killed the consumer before a message is dead-lettered "
       "(CONSUMER_MAX_CRASHES)");
  bind("--claim-idle-ms", "CONSUMER_CLAIM_IDLE_MS",
       "reclaim entries a dead consumer left pending this long (CONSUMER_CLAIM_IDLE_MS)");
  bind("--lease-ms", "LOCK_LEASE_MS", "lease of lock:recalc:{user_id} (LOCK_LEASE_MS)");
  bind("--webhook-url", "CRM_WEBHOOK_URL", "crm: where events are delivered (CRM_WEBHOOK_URL)");
  bind("--webhook-timeout-ms", "CRM_WEBHOOK_TIMEOUT_MS", "crm: webhook timeout");
  bind("--capture", "RELAY_CAPTURE_TABLES",
       "audit: captured tables schema.table,... (RELAY_CAPTURE_TABLES)");
  cmd->add_option("--group", wf->group, "consumer group (default: the worker's)");
  cmd->add_option("--topics", wf->topics,
                  "topics to consume, comma separated (default: the worker's)");
  cmd->add_option("--instance", wf->instance, "consumer name in the group (default: host-pid)");
  cmd->add_option("--retry-backoff-ms", wf->backoff_ms, "first retry delay (doubles, jittered)")
      ->check(CLI::Range(1, 600000));
  cmd->add_option("--poll-ms", wf->poll_ms, "longest wait for a batch")
      ->check(CLI::Range(1, 60000));
  cmd->add_option("--linger-ms", wf->linger_ms,
                  "after a batch's first event, gather more this long (default: 100 for intel "
                  "and audit, 0 for portfolio and crm)")
      ->check(CLI::Range(0, 10000));
  cmd->callback([&flags, wf] {
    const Config cfg = load_config(flags);
    arm_failpoints_for(cfg, "worker-" + wf->name);
    const StackUrls urls = stack_urls(cfg);
    if (urls.database_url.empty()) {
      fail(kExitUsage, "DATABASE_URL is not set and no running stack was found");
    }
    if (urls.redis_url.empty()) fail(kExitUsage, "REDIS_URL is not set (locks, caches, status)");
    if (cfg.str("BUS") == "kafka" && urls.kafka_brokers.empty()) {
      fail(kExitUsage, "BUS=kafka needs KAFKA_BROKERS");
    }
    Logger log("consume");
    consume::RuntimeOptions o;
    o.bus = bus_options(cfg, urls);
    o.database_url = urls.database_url;
    o.db_role = cfg.str("DB_APP_ROLE");
    o.redis_url = urls.cache_redis();
    o.batch_size = static_cast<std::size_t>(cfg.integer("CONSUMER_BATCH_SIZE"));
    o.max_attempts = static_cast<int>(cfg.integer("CONSUMER_MAX_ATTEMPTS"));
    o.max_crashes = static_cast<int>(cfg.integer("CONSUMER_MAX_CRASHES"));
    o.lock_lease = std::chrono::milliseconds(cfg.integer("LOCK_LEASE_MS"));
    o.backoff_base = std::chrono::milliseconds(wf->backoff_ms);
    o.poll_timeout = std::chrono::milliseconds(wf->poll_ms);
    o.linger =
        std::chrono::milliseconds(wf->linger_ms >= 0 ? wf->linger_ms : default_linger_ms(wf->name));
    o.consumer.claim_idle = std::chrono::milliseconds(cfg.integer("CONSUMER_CLAIM_IDLE_MS"));

    std::unique_ptr<consume::Handler> handler;
    std::string group;
    std::vector<std::string> topics;
    if (wf->name == "portfolio") {
      group = consume::kPortfolioGroup;
      topics = {"events.miner"};
      handler = std::make_unique<consume::PortfolioHandler>();
    } else if (wf->name == "intel") {
      group = consume::kIntelGroup;
      topics = {"events.miner", "events.ops"};
      handler = std::make_unique<consume::IntelHandler>();
    } else if (wf->name == "crm") {
      group = consume::kCrmGroup;
      topics = {"events.crm"};
      if (!cfg.is_set("CRM_WEBHOOK_URL")) fail(kExitUsage, "worker crm needs CRM_WEBHOOK_URL");
      consume::CrmOptions co;
      co.webhook_url = cfg.str("CRM_WEBHOOK_URL");
      co.timeout = std::chrono::milliseconds(cfg.integer("CRM_WEBHOOK_TIMEOUT_MS"));
      auto h = consume::CrmHandler::create(co);
      if (!h) fail(kExitUsage, h.error().message);
      handler = std::move(*h);
    } else {
      group = consume::kAuditGroup;
      topics = consume::audit_topics(split_list(cfg.str("RELAY_CAPTURE_TABLES")), o.bus);
      handler = std::make_unique<consume::AuditHandler>();
    }
    if (!wf->group.empty()) group = wf->group;
    if (!wf->topics.empty()) topics = split_list(wf->topics);
    if (topics.empty()) {
      fail(kExitUsage,
           "worker " + wf->name + ": no topics (audit: set RELAY_CAPTURE_TABLES or --topics)");
    }
    o.name = group;
    o.consumer.group = group;
    o.consumer.topics = topics;
    o.consumer.consumer_name =
        !wf->instance.empty()
            ? wf->instance
            : group + "-" + host_name() + "-" + std::to_string(::getpid()) + "-" + random_hex(2);
    o.bus.client_id = o.consumer.consumer_name;

    // Signals first: the endpoint's thread inherits the mask, so SIGTERM reaches the waiter
    // (delivered to a thread that does not block it, it would end the process at once).
    std::stop_source stop;
    auto signals = stop_on_signals(stop);
    Metrics metrics;
    auto endpoint =
        http::start_part_endpoint(static_cast<int>(cfg.integer("METRICS_PORT")), metrics, log);
    if (!endpoint) fail(kExitFailure, "metrics endpoint: " + endpoint.error().message);
    consume::Runtime runtime(o, *handler, metrics, log);
    Status s = runtime.run(stop.get_token());
    signals.request_stop();
    if (!s) fail(kExitFailure, "worker " + wf->name + ": " + s.error().message);
  });
}

}  // namespace hi::cli
