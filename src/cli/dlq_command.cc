// `hashinsight dlq stats` and `hashinsight dlq replay --hours N [--dry-run] [--limit M]
// [--consumer C]`: the dead-letter queue's operator tools (consume/dlq.h).
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "cli/common.h"
#include "consume/dlq.h"
#include "pg/connection.h"

namespace hi::cli {
namespace {

pg::Connection app_connection(const Config& cfg, const StackUrls& urls) {
  if (urls.database_url.empty()) {
    fail(kExitUsage, "DATABASE_URL is not set and no running stack was found");
  }
  auto conn = pg::Connection::connect(urls.database_url, cfg.str("DB_APP_ROLE"));
  if (!conn) fail(kExitFailure, conn.error().message);
  return std::move(*conn);
}

struct ReplayFlags {
  double hours = 24;
  bool dry_run = false;
  std::int64_t limit = 0;
  std::string consumer;
};

}  // namespace

void add_dlq_command(CLI::App& app, Flags& flags) {
  auto* dlq = app.add_subcommand("dlq", "dead-letter queue: stats, replay");
  dlq->require_subcommand(1);

  auto* stats = dlq->add_subcommand("stats", "parked events per consumer and kind (JSON)");
  stats->callback([&flags] {
    const Config cfg = load_config(flags);
    auto conn = app_connection(cfg, stack_urls(cfg));
    auto s = consume::dlq_stats(conn);
    if (!s) fail(kExitFailure, "dlq stats: " + s.error().message);
    std::printf("%s\n", s->dump().c_str());
  });

  auto* replay = dlq->add_subcommand(
      "replay", "re-publish parked events to their topics with their original ids");
  auto rf = std::make_shared<ReplayFlags>();
  replay->add_option("--hours", rf->hours, "events parked within the last N hours")
      ->required()
      ->check(CLI::PositiveNumber);
  replay->add_flag("--dry-run", rf->dry_run, "list what would be replayed; change nothing");
  replay->add_option("--limit", rf->limit, "at most M events")->check(CLI::PositiveNumber);
  replay->add_option("--consumer", rf->consumer, "only events parked by this consumer");
  replay->add_option_function<std::string>(
      "--bus", [&flags](const std::string& v) { flags.overrides["BUS"] = v; }, "redis or kafka");
  replay->callback([&flags, rf] {
    const Config cfg = load_config(flags);
    arm_failpoints_for(cfg, "dlq");
    const StackUrls urls = stack_urls(cfg);
    auto conn = app_connection(cfg, urls);
    consume::ReplayOptions o;
    o.hours = rf->hours;
    o.dry_run = rf->dry_run;
    if (rf->limit > 0) o.limit = rf->limit;
    o.consumer = rf->consumer;
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    auto progress = [tty](std::int64_t done, std::int64_t total) {
      if (!tty) return;
      std::fprintf(stderr, "\rreplayed %lld/%lld", static_cast<long long>(done),
                   static_cast<long long>(total));
      std::fflush(stderr);
    };
    auto report = consume::replay(conn, bus_options(cfg, urls), o, progress);
    if (tty && !rf->dry_run) std::fprintf(stderr, "\n");
    if (!report) fail(kExitFailure, "dlq replay: " + report.error().message);
    std::printf("%s\n", report->to_json().dump().c_str());
    if (tty) {
      std::fprintf(
          stderr, "%s %lld event(s)%s\n", rf->dry_run ? "would replay" : "replayed",
          static_cast<long long>(rf->dry_run ? report->selected : report->replayed),
          report->failed > 0 ? (", " + std::to_string(report->failed) + " failed").c_str() : "");
    }
    if (report->failed > 0) throw Exit{kExitFailure};
  });
}

}  // namespace hi::cli
