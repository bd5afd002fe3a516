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
  // Under faults (`hashinsight chaos`): every POST carries an Idempotency-Key and is sent again
  // with it after a connection error, a 5xx, 409 or 429, until it is answered 201 or `give_up`
  // has passed since its scheduled time; a stream that cannot be reopened is tried again every
  // 250 ms instead of ending the run.
  bool retry_writes = false;
  std::chrono::seconds give_up{120};
  std::string key_prefix = "w";  // Idempotency-Key = prefix + "-" + the write's index
};

// One write as the load generator saw it (times: mono_now_ns()).
struct WriteRecord {
  std::size_t user = 0;           // index: user kFirstBenchUser + user
  std::int64_t scheduled_ns = 0;  // when it was due
  std::int64_t answered_ns = 0;   // the 201 (0: never answered 201)
  std::int64_t visible_ns = 0;    // the first push covering it (0: never)
  std::int64_t seq = 0;           // the POST's seq (0: failed)
  std::int64_t miner_id = 0;      // the user_miners row the POST answered with
  int attempts = 0;               // requests sent for it (1 + retries)
  std::string key;                // its Idempotency-Key (retry_writes only)
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
  std::int64_t start_ns = 0;         // the first scheduled send (mono_now_ns())
  std::vector<WriteRecord> records;  // every write, in schedule order
  std::vector<std::int64_t> shown;   // the last through_seq each page received, per user
  double longest_push_gap_ms = 0;    // the longest a page waited between two pushes
  CpuTimes cpu_before, cpu_after;    // the machine's, around the writes and their drain
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
// reconnects, and the machine (the stack is durable; the load generator shares its cores; how
// busy they were).
void add_run_fields(nlohmann::ordered_json& out, const PageLoadResult& r);

// Raises this process's open-file limit to the hard limit; an error when `needed` descriptors
// still do not fit.
Status raise_nofile(std::size_t needed);

}  // namespace hi::cli
