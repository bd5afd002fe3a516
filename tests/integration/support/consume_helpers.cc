#include "support/consume_helpers.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "consume/portfolio_worker.h"
#include "core/ids.h"
#include "core/time.h"
#include "pg/transaction.h"
#include "schema/outbox.h"
#include "schema/seed.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi::test {

using nlohmann::json;

std::vector<TestEvent> outbox_events(pg::Connection& app, const std::string& tenant,
                                     const std::string& user, int count, const std::string& kind) {
  std::vector<TestEvent> out;
  pg::Transaction tx(app);
  if (auto s = tx.begin(tenant); !s) {
    ADD_FAILURE() << s.error().message;
    return out;
  }
  for (int i = 0; i < count; ++i) {
    auto r = schema::append_event(
        app, {tenant, user, kind, std::nullopt, R"({"model_id":1})", std::nullopt, std::nullopt});
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return {};
    }
    out.push_back({r->id, tenant, user, kind, r->seq});
  }
  if (auto s = tx.commit(); !s) ADD_FAILURE() << s.error().message;
  return out;
}

TestEvent synthetic_event(const std::string& tenant, const std::string& user, std::int64_t seq,
                          const std::string& kind) {
  return {uuid_v7(), tenant, user, kind, seq};
}

bus::Message relay_message(const TestEvent& e) {
  const std::string now = format_rfc3339_us(unix_now_us());
  json env = {
      {"id", e.id},
      {"kind", e.kind},
      {"tenant_id", e.tenant_id},
      {"user_id", e.user_id},
      {"entity_id", nullptr},
      {"idempotency_key", nullptr},
      {"seq", e.seq},
      {"payload", {{"model_id", 1}}},
      {"created_at", now},
      {"source", {{"commit_lsn", "0/16B3748"}, {"ordinal", 1}, {"xid", 740}, {"commit_ts", now}}}};
  bus::Message m;
  m.topic = "events." + e.kind.substr(0, e.kind.find('.'));
  m.key = e.user_id;
  m.value = env.dump();
  m.headers = {{"id", e.id}, {"kind", e.kind}, {"tenant_id", e.tenant_id}};
  return m;
}

void publish(redis::Client& redis, const std::vector<TestEvent>& events) {
  std::size_t queued = 0;
  auto flush = [&] {
    auto r = redis.flush();
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (const auto& reply : *r) ASSERT_FALSE(reply.is_error()) << reply.str;
    queued = 0;
  };
  for (const auto& e : events) {
    const bus::Message m = relay_message(e);
    std::vector<std::string> argv = {"XADD", m.topic, "*", "key", m.key, "value", m.value};
    for (const auto& [k, v] : m.headers) {
      argv.push_back(k);
      argv.push_back(v);
    }
    redis.append(argv);
    if (++queued == 1000) flush();
  }
  if (queued > 0) flush();
}

Process start_worker(const std::string& name, const std::string& log_path,
                     const std::vector<std::string>& args, const std::vector<std::string>& env) {
  SpawnOptions o;
  o.argv = {hashinsight_binary(), "worker", name};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
           "REDIS_URL=" + TestServers::get().redis_url(), "LOG_FORMAT=text",
           "HI_DATA_DIR=/nonexistent"};
  o.env.insert(o.env.end(), env.begin(), env.end());
  o.output_path = log_path;
  auto p = Process::spawn(o);
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
  return p.ok() ? std::move(*p) : Process();
}

CommandResult run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  SpawnOptions o;
  o.argv = {hashinsight_binary()};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
           "REDIS_URL=" + TestServers::get().redis_url(), "LOG_FORMAT=text",
           "HI_DATA_DIR=/nonexistent"};
  o.env.insert(o.env.end(), env.begin(), env.end());
  auto r = run_command(o, std::chrono::seconds(60));
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : CommandResult{};
}

void give_miners(pg::Connection& owner, const std::string& tenant, const std::string& user,
                 int rows) {
  for (int i = 0; i < rows; ++i) {
    auto r = owner.exec(
        "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, status) "
        "VALUES ($1, $2, $3, $4, 'active')",
        {tenant, user, std::to_string(1 + i % 40), std::to_string(1 + i % 5)});
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
}

void reset_consumer_state(pg::Connection& owner, redis::Client& redis) {
  auto r = owner.exec(
      "TRUNCATE consumer_inbox, event_dlq, user_portfolio, user_miners, event_outbox, "
      "user_event_seq, change_audit_log, forecast_daily");
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto f = redis.command({"FLUSHALL"});
  ASSERT_TRUE(f.ok());
}

std::int64_t inbox_rows(pg::Connection& owner, const std::string& consumer) {
  auto r = owner.exec("SELECT count(*) FROM consumer_inbox WHERE consumer_name = $1", {consumer});
  return r && !r->empty() ? r->int64(0, 0) : -1;
}

int expect_portfolios_match_recalculation(pg::Connection& app, const std::string& tenant) {
  pg::Transaction tx(app);
  EXPECT_TRUE(tx.begin(tenant).ok());
  auto rows = app.exec(
      "SELECT user_id, units, hashrate_ths, power_kw, revenue_usd_day, cost_usd_day, "
      "profit_usd_day FROM user_portfolio ORDER BY user_id");
  EXPECT_TRUE(rows.ok());
  if (!rows) return 0;
  std::vector<std::string> users;
  for (int i = 0; i < rows->rows(); ++i) users.emplace_back(rows->text(i, 0));
  auto in = consume::load_inputs(app, users);
  EXPECT_TRUE(in.ok()) << (in.ok() ? "" : in.error().message);
  if (!in) return 0;
  for (int i = 0; i < rows->rows(); ++i) {
    auto p = consume::portfolio_of(*in, users[static_cast<std::size_t>(i)], in->snapshot);
    EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
    if (!p) continue;
    const auto& t = p->totals;
    auto near = [](double a, double b) {
      return std::abs(a - b) <= 1e-9 * std::max(1.0, std::abs(b));
    };
    EXPECT_EQ(rows->int64(i, 1), t.units) << "user " << users[static_cast<std::size_t>(i)];
    EXPECT_TRUE(near(rows->float64(i, 2), t.hashrate_ths))
        << "user " << users[static_cast<std::size_t>(i)];
    EXPECT_TRUE(near(rows->float64(i, 3), t.power_kw));
    EXPECT_TRUE(near(rows->float64(i, 4), t.revenue_usd_per_day));
    EXPECT_TRUE(near(rows->float64(i, 5), t.cost_usd_per_day));
    EXPECT_TRUE(near(rows->float64(i, 6), t.profit_usd_per_day));
  }
  return rows->rows();
}

TestEvent add_miner_with_event(pg::Connection& app, const std::string& tenant,
                               const std::string& user, int model_id, int quantity) {
  pg::Transaction tx(app);
  if (auto s = tx.begin(tenant); !s) {
    ADD_FAILURE() << s.error().message;
    return {};
  }
  auto m = app.exec(
      "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity, status) "
      "VALUES ($1, $2, $3, $4, 'active')",
      {tenant, user, std::to_string(model_id), std::to_string(quantity)});
  if (!m) {
    ADD_FAILURE() << m.error().message;
    return {};
  }
  auto r = schema::append_event(app, {tenant, user, "miner.added", std::nullopt,
                                      json({{"model_id", model_id}, {"quantity", quantity}}).dump(),
                                      std::nullopt, std::nullopt});
  if (!r) {
    ADD_FAILURE() << r.error().message;
    return {};
  }
  if (auto s = tx.commit(); !s) ADD_FAILURE() << s.error().message;
  return {r->id, tenant, user, "miner.added", r->seq};
}

void xadd_raw(redis::Client& redis, const std::string& stream, const std::string& key,
              const std::string& value, const bus::Headers& headers) {
  std::vector<std::string> argv = {"XADD", stream, "*", "key", key, "value", value};
  for (const auto& [k, v] : headers) {
    argv.push_back(k);
    argv.push_back(v);
  }
  auto r = redis.command(argv);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_FALSE(r->is_error()) << r->str;
}

std::int64_t pending_entries(redis::Client& redis, const std::string& stream,
                             const std::string& group) {
  auto p = redis.command({"XPENDING", stream, group});
  if (!p || p->is_error() || p->elements.empty()) return -1;
  return p->elements[0].integer;
}

RawHoldings raw_holdings(pg::Connection& owner, const std::string& user) {
  auto r = owner.exec(
      "SELECT COALESCE(sum(um.quantity), 0), COALESCE(sum(um.quantity * mm.power_w) / 1000.0, 0) "
      "FROM user_miners um JOIN miner_models mm ON mm.id = um.model_id "
      "WHERE um.user_id = $1::bigint AND um.status = 'active'",
      {user});
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (!r || r->empty()) return {};
  return {r->int64(0, 0), r->float64(0, 1)};
}

void ConsumerFixture::SetUp() {
  owner_ = TestServers::get().owner();
  static bool seeded = false;
  if (!seeded) {
    auto s = schema::seed(owner_, Logger("test"));
    ASSERT_TRUE(s.ok()) << s.error().message;
    seeded = true;
  }
  auto r = redis::Client::connect(TestServers::get().redis_url());
  ASSERT_TRUE(r.ok());
  redis_ = std::move(*r);
  reset_relay_state(owner_, redis_);
  reset_consumer_state(owner_, redis_);
  app_ = TestServers::get().app();
}

void ConsumerFixture::TearDown() {
  for (std::size_t i = 0; i < procs_.size(); ++i) {
    if (!procs_[i].valid()) continue;
    procs_[i].signal(SIGTERM);
    auto st = procs_[i].wait_for(std::chrono::seconds(20));
    EXPECT_TRUE(st.has_value()) << "process " << i << " did not stop on SIGTERM";
    EXPECT_EQ(st.value_or(-1), 0) << file_text(log(i));
  }
}

std::string ConsumerFixture::log(std::size_t i) const {
  return tmp_.path() + "/p" + std::to_string(i) + ".log";
}

std::size_t ConsumerFixture::worker(const std::string& name, std::vector<std::string> args,
                                    const std::vector<std::string>& env, bool wait) {
  args.insert(args.begin(), worker_args_.begin(), worker_args_.end());
  const std::size_t i = procs_.size();
  procs_.push_back(start_worker(name, log(i), args, env));
  if (wait) {
    EXPECT_TRUE(eventually([&] {
      return file_text(log(i)).find("consuming") != std::string::npos;
    })) << file_text(log(i));
  }
  return i;
}

std::int64_t ConsumerFixture::scalar(const std::string& sql, const pg::Params& params) {
  auto r = owner_.exec(sql, params);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r && !r->empty() && !r->is_null(0, 0) ? r->int64(0, 0) : -1;
}

bool ConsumerFixture::cached(const std::string& key) {
  // An invalidated entry is a tombstone (consume/cache.h): nothing a reader would serve.
  auto r = redis_.command({"GET", key});
  return r.ok() && r->type == redis::Reply::Type::kString &&
         r->str.find("\"invalidated\":true") == std::string::npos;
}

}  // namespace hi::test
