// The servers a benchmark runs against: DATABASE_URL / REDIS_URL when given, else a private
// PostgreSQL and redis-server started in a temporary directory and removed afterwards. They are
// as durable as `up`'s (PostgreSQL fsync on, Redis appendfsync always) unless `durable` is
// false (`--no-durable`, for comparison); the JSON says which. The schema is migrated either way.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/process.h"
#include "core/result.h"
#include "pg/connection.h"
#include "pg/local_server.h"
#include "redis/local_server.h"

namespace hi::cli {

class BenchStack {
 public:
  static Result<std::unique_ptr<BenchStack>> start(const Config& cfg, bool durable = true);
  // Whether the private servers persist what they acknowledge (given servers: assumed so).
  bool durable() const { return durable_; }
  ~BenchStack();

  const std::string& database_url() const { return database_url_; }
  const std::string& redis_url() const { return redis_url_; }
  // The cache's (CACHE_REDIS_URL): a second, volatile server when the stack is private, else
  // CACHE_REDIS_URL or REDIS_URL.
  const std::string& cache_redis_url() const {
    return cache_redis_url_.empty() ? redis_url_ : cache_redis_url_;
  }
  const std::string& dir() const { return dir_; }

 private:
  BenchStack() = default;
  std::string dir_;
  std::string database_url_;
  std::string redis_url_;
  std::string cache_redis_url_;
  bool durable_ = true;
  std::unique_ptr<pg::LocalServer> pg_;
  std::unique_ptr<redis::LocalServer> redis_;
  std::unique_ptr<redis::LocalServer> cache_redis_;
};

// The whole stack as a user runs it: `hashinsight up` (this binary) as a child process in a
// temporary data directory, durable as `up` is by default (PostgreSQL fsync on, Redis appendfsync
// always), with every part it starts (relay, workers, API). For the benchmarks that measure
// the pipeline end to end. start() returns once up.json says the stack is ready; the destructor
// stops `up` (SIGTERM: it stops its parts and servers) and removes the directory.
class UpStack {
 public:
  // `env`: settings for `up` and its parts (e.g. "BUS=kafka").
  static Result<std::unique_ptr<UpStack>> start(const std::vector<std::string>& env = {});
  ~UpStack();

  const nlohmann::json& ready() const { return ready_; }  // up.json
  std::string api_url() const { return ready_.value("api_url", ""); }
  std::string database_url() const { return ready_.value("database_url", ""); }
  const std::string& dir() const { return dir_; }
  // The key `up` signs tokens with (DIR/secrets/jwt_secret).
  std::string jwt_secret() const;
  // up's log, for failure messages.
  std::string log_text() const;
  pid_t up_pid() const { return up_pid_; }
  // Stops `up` (SIGTERM: it stops its parts and servers, SIGKILL after 60 s); its exit status.
  int stop();
  // The directory (data and logs) is kept when the stack is destroyed, for inspection.
  void keep() { keep_ = true; }

 private:
  UpStack() = default;
  std::string dir_;
  pid_t up_pid_ = 0;
  bool keep_ = false;
  int status_ = 0;
  Process up_;
  nlohmann::json ready_;
};

// The bench users: ids from kFirstBenchUser on, tenant 1 + (id - kFirstBenchUser) % 2 (the seeded
// tenants), the plan "bench" (no max_miners, a requests_per_minute no run reaches: the limiter
// runs and never refuses), three user_miners rows each. create_bench_users() replaces them (their
// portfolios, miners and subscriptions too).
inline constexpr long kFirstBenchUser = 1'000'000;
Status create_bench_users(pg::Connection& owner, int users);

// `v` rounded to `digits` decimals (divided, not multiplied, by the power of ten, so that the
// JSON shows 0.47 rather than 0.47000000000000003).
double round_to(double v, int digits);

// The `q` quantile (0..1) of `values` by the nearest-rank method; 0 for none. Sorts `values`.
double quantile(std::vector<double>& values, double q);

// A Prometheus histogram from /metrics text: le -> cumulative count, summed over the series
// named `name` whose labels contain every one of `labels` (e.g. `route="/api/miners"`).
using HistogramBuckets = std::map<double, double>;
HistogramBuckets histogram_buckets(const std::string& text, const std::string& name,
                                   const std::vector<std::string>& labels = {});
// `after` - `before`: what was observed between two scrapes.
HistogramBuckets histogram_delta(const HistogramBuckets& after, const HistogramBuckets& before);
// The `q` quantile, linear within a bucket (as PromQL's histogram_quantile); NaN when empty.
double histogram_quantile(const HistogramBuckets& buckets, double q);
// The sum of the samples of counter or gauge `name` whose labels contain every one of `labels`.
double metric_sum(const std::string& text, const std::string& name,
                  const std::vector<std::string>& labels = {});

// The machine's CPU time so far, every core together (/proc/stat; zeros when unreadable). Two
// readings around a run say whether it had the cores to itself or was bound by them: the load
// generator, the servers and the parts share them.
struct CpuTimes {
  std::uint64_t busy = 0;   // user, nice, system, irq, softirq
  std::uint64_t steal = 0;  // what the hypervisor gave to other machines
  std::uint64_t total = 0;  // all of it, idle and I/O wait included
};
CpuTimes cpu_times();
// Into `out`: "cpu_busy", the share of the cores' time between the readings spent running
// anything on this machine, and "cpu_steal", the share taken by the hypervisor (both 0-1; null
// when /proc/stat could not be read).
void add_cpu_fields(nlohmann::ordered_json& out, const CpuTimes& before, const CpuTimes& after);

// Progress on stderr, only when it is a terminal (benchmarks print one JSON line on stdout).
class Progress {
 public:
  explicit Progress(std::string label);
  void update(double done, double total, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  bool tty_;
  std::int64_t last_ns_ = 0;
};

}  // namespace hi::cli
