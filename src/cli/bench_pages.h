// Open pages under writes, for `bench sse` and `bench e2e`: one GET /api/portfolio/stream per
// user held open by this process (one thread, epoll; a stream the API drops is reopened with
// Last-Event-ID, as a browser's EventSource does), and POST /api/miners sent open loop at a
// fixed rate by a pool of threads, each over a connection it keeps open (keep-alive).
//
// Write-to-visible of a write runs from its scheduled send time (not the moment a busy sender
// got to it: the generator does not coordinate with the system under test) to the arrival of
// the first event on its user's stream whose id (through_seq) is at least the seq the POST
// returned. Pushes are kept per user, so one that arrives before the POST's answer counts; the
// event sent when a stream opens cannot count (its through_seq is below any later write's seq).
// A write not visible within `drain` of the last answer is lost.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/bench_stack.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::cli {

struct PageLoadOptions {
  std::string api_url;     // http://127.0.0.1:PORT
  std::string jwt_secret;  // the key the API checks tokens with
  int users = 100;         // bench users kFirstBenchUser.. (create_bench_users)
  std::int64_t writes = 100;
  double rate = 100;  // writes per second
  std::chrono::seconds drain{10};
  bool probe_get = false;  // GET /api/portfolio one at a time while the writes run
  std::string label = "bench";
};

struct PageLoadResult {
  std::vector<double> visible_ms;  // write-to-visible of every visible write
  std::int64_t writes = 0;         // POSTs answered 201
  std::int64_t write_errors = 0;   // POSTs that failed or answered otherwise
  std::int64_t lost = 0;           // answered 201, never visible within the drain
  std::int64_t reconnects = 0;     // streams the API ended, reopened
  double seconds = 0;              // the first scheduled send to the last visible push
  std::vector<double> get_ms;      // the GET probe's latencies
  std::int64_t get_errors = 0;
};

// Opens the streams, runs the writes, waits for them to be visible. Progress on stderr.
Result<PageLoadResult> run_page_load(const PageLoadOptions& options);

// The stack of a page-load benchmark: `up` started with `env` (progress on stderr) and `users`
// bench users created in it. Exits with the reason on failure.
struct PageLoadStack {
  std::unique_ptr<UpStack> stack;
  pg::Connection owner;
};
PageLoadStack start_page_load_stack(const std::string& label, const std::vector<std::string>& env,
                                    int users);

// What every page-load benchmark reports besides its figures: the run's errors and
// reconnects, and the machine (the stack is durable; the load generator shares its cores).
void add_run_fields(nlohmann::ordered_json& out, const PageLoadResult& r);

// Raises this process's open-file limit to the hard limit; an error when `needed` descriptors
// still do not fit.
Status raise_nofile(std::size_t needed);

}  // namespace hi::cli
