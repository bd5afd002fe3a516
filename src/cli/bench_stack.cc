#include "cli/bench_stack.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli/common.h"
#include "core/log.h"
#include "core/time.h"
#include "pg/connection.h"
#include "pg/migrate.h"
#include "schema/migrations.h"
#include "schema/seed.h"

namespace hi::cli {

Result<std::unique_ptr<BenchStack>> BenchStack::start(const Config& cfg, bool durable) {
  std::unique_ptr<BenchStack> s(new BenchStack());
  s->durable_ = durable;
  Logger log("bench");
  if (!cfg.is_set("DATABASE_URL") || !cfg.is_set("REDIS_URL")) {
    char tmpl[] = "/tmp/hashinsight-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      return unavailable("bench: cannot create a temporary directory");
    s->dir_ = tmpl;
    ::chmod(tmpl, 0755);  // the postgres user must traverse it when we are root
  }
  auto port = [] { return free_port(); };
  if (cfg.is_set("DATABASE_URL")) {
    s->database_url_ = cfg.str("DATABASE_URL");
  } else {
    pg::LocalServerOptions o;
    o.data_dir = s->dir_ + "/pg";
    o.port = port();
    o.durable = durable;
    auto pg = pg::LocalServer::start(o, log);
    if (!pg) return pg.error();
    s->pg_ = std::move(*pg);
    s->database_url_ = s->pg_->url();
  }
  if (cfg.is_set("REDIS_URL")) {
    s->redis_url_ = cfg.str("REDIS_URL");
    s->cache_redis_url_ = cfg.str("CACHE_REDIS_URL");
  } else {
    redis::LocalServerOptions o;
    o.data_dir = s->dir_ + "/redis";
    o.port = port();
    o.durable = durable;
    o.appendfsync = durable ? "always" : "no";
    auto r = redis::LocalServer::start(o, log);
    if (!r) return r.error();
    s->redis_ = std::move(*r);
    s->redis_url_ = s->redis_->url();
    // As `up` runs it: what may be lost on a server of its own, without persistence.
    redis::LocalServerOptions c;
    c.data_dir = s->dir_ + "/cache-redis";
    c.port = port();
    c.durable = false;
    auto cache = redis::LocalServer::start(c, log);
    if (!cache) return cache.error();
    s->cache_redis_ = std::move(*cache);
    s->cache_redis_url_ = s->cache_redis_->url();
  }
  auto conn = pg::Connection::connect(s->database_url_);
  if (!conn) return conn.error();
  auto m = pg::migrate(*conn, schema::migrations(), log);
  if (!m) return m.error();
  auto seeded = conn->exec("SELECT count(*) FROM tenants");
  if (seeded && seeded->int64(0, 0) == 0) {
    if (auto r = schema::seed(*conn, log); !r) return r.error();
  }
  return s;
}

Status create_bench_users(pg::Connection& owner, int users) {
  const std::string n = std::to_string(users);
  const std::string first = std::to_string(kFirstBenchUser);
  const char* sqls[] = {
      "DELETE FROM user_portfolio WHERE user_id >= $1::bigint",
      "DELETE FROM user_miners WHERE user_id >= $1::bigint",
      "DELETE FROM user_subscriptions WHERE user_id >= $1::bigint",
      "DELETE FROM users WHERE id >= $1::bigint",
      "INSERT INTO users (id, tenant_id, email, display_name, electricity_price_usd_kwh) "
      "SELECT $1::bigint + g, 1 + g % 2, 'bench' || g || '@bench.example', 'Bench ' || g, "
      "0.04 + (g % 7) * 0.01 FROM generate_series(0, $2::int - 1) g",
      // No unit limit and a request rate no run reaches: the limiter runs on every request,
      // as it does for a paying user, and never refuses.
      "INSERT INTO subscription_plans (id, name, max_miners, requests_per_minute, "
      "price_usd_month) VALUES (900, 'bench', NULL, 10000000, 0) ON CONFLICT (id) DO UPDATE "
      "SET max_miners = NULL, requests_per_minute = EXCLUDED.requests_per_minute",
      "INSERT INTO user_subscriptions (tenant_id, user_id, plan_id) SELECT tenant_id, id, 900 "
      "FROM users WHERE id >= $1::bigint",
      "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, status) "
      "SELECT u.tenant_id, u.id, 1 + (u.id + k * 7) % 40, 1 + (u.id + k) % 10, "
      "CASE WHEN k = 2 THEN 'maintenance' ELSE 'active' END "
      "FROM users u CROSS JOIN generate_series(0, 2) k WHERE u.id >= $1::bigint"};
  for (const char* sql : sqls) {
    const std::string_view text(sql);
    auto r = text.find("$2") != text.npos   ? owner.exec(sql, {first, n})
             : text.find("$1") != text.npos ? owner.exec(sql, {first})
                                            : owner.exec(sql);
    if (!r) return r.error().wrap("bench users");
  }
  return {};
}

BenchStack::~BenchStack() {
  cache_redis_.reset();
  redis_.reset();
  pg_.reset();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Result<std::unique_ptr<UpStack>> UpStack::start(const std::vector<std::string>& env) {
  std::unique_ptr<UpStack> s(new UpStack());
  char tmpl[] = "/tmp/hashinsight-bench-up-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return unavailable("bench: cannot create a temporary directory");
  s->dir_ = tmpl;
  ::chmod(tmpl, 0755);  // the postgres user must traverse it when we are root
  SpawnOptions o;
  o.argv = {self_exe(), "up", "--data-dir", s->dir_ + "/data"};
  o.env = env;
  o.env.push_back("LOG_FORMAT=text");
  o.output_path = s->dir_ + "/up.log";
  auto up = Process::spawn(o);
  if (!up) return up.error();
  s->up_ = std::move(*up);
  s->up_pid_ = s->up_.pid();
  const std::string ready_file = s->dir_ + "/data/up.json";
  const std::int64_t deadline = mono_now_ns() + std::int64_t{180} * 1'000'000'000;
  while (true) {
    if (std::ifstream in(ready_file); in) {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_object() && j.contains("api_url")) {
        s->ready_ = std::move(j);
        return s;
      }
    }
    if (!s->up_.running()) return unavailable("bench: up exited before ready:\n" + s->log_text());
    if (mono_now_ns() > deadline)
      return unavailable("bench: up not ready in 180 s:\n" + s->log_text());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

UpStack::~UpStack() {
  (void)stop();
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

int UpStack::stop() {
  if (up_.valid()) status_ = up_.stop(std::chrono::seconds(60));
  return status_;
}

std::string UpStack::jwt_secret() const {
  return read_or_create_secret(dir_ + "/data", "jwt_secret", 32);
}

std::string UpStack::log_text() const {
  std::ifstream in(dir_ + "/up.log");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
}

double round_to(double v, int digits) {
  const double p = std::pow(10.0, digits);
  return std::round(v * p) / p;
}

double quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

HistogramBuckets histogram_buckets(const std::string& text, const std::string& name,
                                   const std::vector<std::string>& labels) {
  HistogramBuckets out;
  std::istringstream in(text);
  const std::string prefix = name + "_bucket{";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto close = line.find('}');
    if (close == std::string::npos) continue;
    const std::string_view set(line.data() + prefix.size(), close - prefix.size());
    bool wanted = true;
    for (const auto& l : labels) wanted = wanted && set.find(l) != std::string_view::npos;
    const auto le_at = set.find("le=\"");
    if (!wanted || le_at == std::string_view::npos) continue;
    const auto le_end = set.find('"', le_at + 4);
    const std::string le(set.substr(le_at + 4, le_end - le_at - 4));
    const double bound = le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
    out[bound] += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return out;
}

HistogramBuckets histogram_delta(const HistogramBuckets& after, const HistogramBuckets& before) {
  HistogramBuckets out = after;
  for (const auto& [le, count] : before) out[le] -= count;
  return out;
}

double histogram_quantile(const HistogramBuckets& buckets, double q) {
  if (buckets.empty() || buckets.rbegin()->second <= 0) return NAN;
  const double target = q * buckets.rbegin()->second;
  double prev_le = 0, prev_count = 0;
  for (const auto& [le, count] : buckets) {
    if (count >= target) {
      if (std::isinf(le)) return prev_le;
      const double span = count - prev_count;
      const double frac = span > 0 ? (target - prev_count) / span : 1.0;
      return prev_le + frac * (le - prev_le);
    }
    prev_le = le;
    prev_count = count;
  }
  return prev_le;
}

double metric_sum(const std::string& text, const std::string& name,
                  const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    const std::string_view set =
        next == '{' ? std::string_view(line).substr(name.size(), line.find('}') - name.size())
                    : std::string_view();
    bool wanted = true;
    for (const auto& l : labels) wanted = wanted && set.find(l) != std::string_view::npos;
    if (wanted) sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

Progress::Progress(std::string label) : label_(std::move(label)), tty_(::isatty(2) != 0) {}

void Progress::update(double done, double total, const std::string& extra) {
  if (!tty_) return;
  const std::int64_t now = mono_now_ns();
  if (now - last_ns_ < 100'000'000 && done < total) return;
  last_ns_ = now;
  std::fprintf(stderr, "\r%s: %.0f/%.0f (%.0f%%) %s\033[K", label_.c_str(), done, total,
               total > 0 ? 100.0 * done / total : 0.0, extra.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fputs("\n", stderr);
}

CpuTimes cpu_times() {
  std::ifstream in("/proc/stat");
  std::string label;
  std::uint64_t v[8] = {};  // user nice system idle iowait irq softirq steal
  in >> label;
  for (auto& x : v) in >> x;
  if (!in || label != "cpu") return {};
  CpuTimes t;
  t.busy = v[0] + v[1] + v[2] + v[5] + v[6];
  t.steal = v[7];
  t.total = t.busy + v[3] + v[4] + t.steal;
  return t;
}

void add_cpu_fields(nlohmann::ordered_json& out, const CpuTimes& before, const CpuTimes& after) {
  if (before.total == 0 || after.total <= before.total) {
    out["cpu_busy"] = nullptr;
    out["cpu_steal"] = nullptr;
    return;
  }
  const auto total = static_cast<double>(after.total - before.total);
  out["cpu_busy"] = std::round(static_cast<double>(after.busy - before.busy) / total * 1000) / 1000;
  out["cpu_steal"] =
      std::round(static_cast<double>(after.steal - before.steal) / total * 1000) / 1000;
}

}  // namespace hi::cli
