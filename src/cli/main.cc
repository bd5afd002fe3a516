// The `hashinsight` command: one binary, one subcommand per part of the platform.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/calc_command.h"
#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app{"HashInsight CDC: outbox -> logical replication -> bus -> exactly-once consumers",
               "hashinsight"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "hashinsight 0.1.0");
  hi::cli::Flags flags;
  hi::cli::add_up_command(app, flags);
  hi::cli::add_db_commands(app, flags);
  hi::cli::add_config_command(app, flags);
  hi::cli::add_relay_command(app, flags);
  hi::cli::add_worker_command(app, flags);
  hi::cli::add_dlq_command(app, flags);
  hi::cli::add_audit_command(app, flags);
  hi::cli::add_bench_command(app, flags);
  hi::cli::add_calc_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : hi::cli::kExitUsage;
  } catch (const hi::cli::Exit& e) {
    return e.code;
  }
  return hi::cli::kExitOk;
}
