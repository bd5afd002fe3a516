// `hashinsight migrate` and `hashinsight seed`.
#include <cstdio>

#include "cdc/slot.h"
#include "cli/common.h"
#include "core/strings.h"
#include "pg/connection.h"
#include "schema/migrations.h"
#include "schema/seed.h"

namespace hi::cli {

int apply_capture_tables(pg::Connection& owner, const Config& cfg, const Logger& log) {
  std::vector<std::string> tables;
  for (const auto& t : split_list(cfg.str("RELAY_CAPTURE_TABLES"))) {
    tables.push_back(t.find('.') == std::string::npos ? "public." + t : t);
  }
  if (auto s = cdc::set_capture_tables(owner, cfg.str("RELAY_PUBLICATION"), tables); !s) {
    log.error("capture publication", {{"error", s.error().message}});
    return kExitFailure;
  }
  if (!tables.empty()) {
    log.info("capture publication set", {{"tables", cfg.str("RELAY_CAPTURE_TABLES")}});
  }
  return kExitOk;
}

int run_migrate(pg::Connection& conn, const Logger& log) {
  auto report = pg::migrate(conn, schema::migrations(), log);
  if (!report) {
    log.error("migrate failed", {{"error", report.error().message}});
    return kExitFailure;
  }
  std::printf("migrations: %d applied, %d already present, schema version %d\n", report->applied,
              report->already, report->latest_version);
  return kExitOk;
}

void add_db_commands(CLI::App& app, Flags& flags) {
  auto* migrate = app.add_subcommand("migrate", "apply the schema migrations (safe to repeat)");
  migrate->callback([&flags] {
    const Config cfg = load_config(flags);
    Logger log("migrate");
    auto conn = connect_owner(cfg);
    if (int rc = run_migrate(conn, log); rc != kExitOk) throw Exit{rc};
    if (int rc = apply_capture_tables(conn, cfg, log); rc != kExitOk) throw Exit{rc};
  });

  auto* seed = app.add_subcommand("seed", "insert the reference data (deterministic, repeatable)");
  seed->callback([&flags] {
    const Config cfg = load_config(flags);
    Logger log("seed");
    auto conn = connect_owner(cfg);
    auto report = schema::seed(conn, log);
    if (!report) {
      log.error("seed failed", {{"error", report.error().message}});
      throw Exit{kExitFailure};
    }
    std::printf("seed: %d models, %d users, %d new network snapshots\n", report->models,
                report->users, report->snapshots_inserted);
  });
}

}  // namespace hi::cli
