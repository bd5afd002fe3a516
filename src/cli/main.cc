// The `hashinsight` command: one binary, one subcommand per part of the platform (src/cli).
#include <CLI/CLI.hpp>
#include <csignal>

#include "cli/common.h"
#include "core/version.h"

#ifdef HI_JEMALLOC
// jemalloc returns freed pages to the kernel on a thread of its own rather than in the thread
// that frees (the sink's threads free a batch of about a million small objects at a time, and
// purging inline, with the page faults that take the memory back, was 7 % of their samples in
// `bench sink`). MALLOC_CONF still overrides it.
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true";
}
#endif

int main(int argc, char** argv) {
  // A peer that closes its socket while we write (Redis killed mid-pipeline, an HTTP client
  // gone) must be an error return of write(), not a silent death by SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"HashInsight CDC: outbox -> logical replication -> bus -> exactly-once consumers",
               "hashinsight"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hashinsight ") + hi::kVersion);
  hi::cli::Flags flags;
  hi::cli::add_commands(app, flags);
  return hi::cli::run_command_line(app, [&] { app.parse(argc, argv); });
}
