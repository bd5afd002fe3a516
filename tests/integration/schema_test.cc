// Migrations, seed and row-level security against a real PostgreSQL.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/log.h"
#include "pg/migrate.h"
#include "pg/pool.h"
#include "pg/transaction.h"
#include "schema/migrations.h"
#include "schema/seed.h"
#include "support/servers.h"

namespace hi {
namespace {

using test::TestServers;

std::int64_t count(pg::Connection& c, const std::string& sql) {
  auto r = c.exec(sql);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r->int64(0, 0) : -1;
}

class SchemaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    owner_ = TestServers::get().owner();
    static bool seeded = false;
    if (!seeded) {
      auto r = schema::seed(owner_, Logger("test"));
      ASSERT_TRUE(r.ok()) << r.error().message;
      seeded = true;
    }
  }
  pg::Connection owner_;
};

TEST_F(SchemaTest, MigrateTwiceAppliesNothingTheSecondTime) {
  // The fixture migrated once already.
  const auto before = count(owner_, "SELECT count(*) FROM schema_migrations");
  EXPECT_EQ(before, static_cast<std::int64_t>(schema::migrations().size()));
  auto again = pg::migrate(owner_, schema::migrations(), Logger("test"));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->applied, 0);
  EXPECT_EQ(again->already, static_cast<int>(schema::migrations().size()));
  EXPECT_EQ(count(owner_, "SELECT count(*) FROM schema_migrations"), before);
}

// What the server says beside a result (an IF EXISTS that found nothing, a RAISE WARNING) comes
// out as our own log lines, not as libpq's raw "NOTICE:  ..." between them.
TEST_F(SchemaTest, ServerNoticesAreLogLinesNotRawText) {
  std::FILE* captured = std::tmpfile();
  ASSERT_NE(captured, nullptr);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(::fileno(captured), STDERR_FILENO);
  const LogLevel level = log_level();
  set_log_format(LogFormat::kJson);  // as the test binary logs anyway
  set_log_level(LogLevel::kDebug);
  const bool dropped = owner_.exec("DROP TABLE IF EXISTS no_such_table_here").ok();
  const bool warned = owner_.exec("DO $$ BEGIN RAISE WARNING 'careful: %', 42; END $$").ok();
  set_log_level(LogLevel::kWarn);
  const bool quiet = owner_.exec("DROP TABLE IF EXISTS no_such_table_either").ok();
  set_log_level(level);
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ASSERT_TRUE(dropped && warned && quiet);
  std::rewind(captured);
  std::vector<nlohmann::json> lines;
  for (char buf[4096]; std::fgets(buf, sizeof buf, captured) != nullptr;) {
    const auto j = nlohmann::json::parse(buf, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not a log line: " << buf;
    if (j.value("component", "") == "postgres") lines.push_back(j);
  }
  std::fclose(captured);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["level"], "debug");
  EXPECT_EQ(lines[0]["severity"], "NOTICE");
  EXPECT_EQ(lines[0]["msg"], "table \"no_such_table_here\" does not exist, skipping");
  EXPECT_EQ(lines[1]["level"], "warn");
  EXPECT_EQ(lines[1]["severity"], "WARNING");
  EXPECT_EQ(lines[1]["msg"], "careful: 42");
  EXPECT_EQ(lines[1]["sqlstate"], "01000");  // warning, as RAISE WARNING gives it
}

TEST_F(SchemaTest, SchemaHasEveryTableOfTheDesign) {
  for (const char* t : {"tenants",
                        "users",
                        "roles",
                        "permissions",
                        "role_permissions",
                        "user_roles",
                        "subscription_plans",
                        "user_subscriptions",
                        "miner_models",
                        "miners",
                        "user_miners",
                        "inventory",
                        "network_snapshots",
                        "miner_telemetry",
                        "forecast_daily",
                        "ops_schedule",
                        "user_portfolio",
                        "treasury_trades",
                        "crm_customers",
                        "event_outbox",
                        "consumer_inbox",
                        "event_dlq",
                        "api_idempotency_records",
                        "audit_logs"}) {
    EXPECT_EQ(count(owner_, std::string("SELECT count(*) FROM pg_class WHERE relname = '") + t +
                                "' AND relnamespace = 'public'::regnamespace"),
              1)
        << t;
  }
  // Time series are partitioned by day, with today's and the coming days' partitions present.
  for (const char* t : {"network_snapshots", "miner_telemetry", "forecast_daily"}) {
    EXPECT_EQ(count(owner_, std::string("SELECT count(*) FROM pg_partitioned_table WHERE "
                                        "partrelid = '") +
                                t + "'::regclass"),
              1)
        << t;
    EXPECT_EQ(count(owner_, std::string("SELECT count(*) FROM pg_class WHERE relname = '") + t +
                                "_p' || to_char((now() AT TIME ZONE 'UTC')::date + 7, "
                                "'YYYYMMDD')"),
              1)
        << t << " has no partition a week ahead";
  }
  // The inbox key is (consumer_name, event_id).
  EXPECT_EQ(count(owner_,
                  "SELECT count(*) FROM pg_constraint WHERE conrelid = 'consumer_inbox'::regclass "
                  "AND contype = 'p' AND array_length(conkey, 1) = 2"),
            1);
}

TEST_F(SchemaTest, SeedTwiceAddsNoDuplicates) {
  const char* counts =
      "SELECT (SELECT count(*) FROM miner_models) * 1000000 + (SELECT count(*) FROM users) * "
      "1000 + (SELECT count(*) FROM network_snapshots)";
  const auto before = count(owner_, counts);
  auto r = schema::seed(owner_, Logger("test"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->snapshots_inserted, 0);
  EXPECT_EQ(count(owner_, counts), before);
  EXPECT_GE(count(owner_, "SELECT count(*) FROM miner_models"), 42);
  EXPECT_EQ(count(owner_, "SELECT count(*) FROM network_snapshots"), 90);
  EXPECT_EQ(count(owner_, "SELECT count(*) FROM tenants"), 2);
  // Every role is held by a user in each tenant.
  EXPECT_EQ(count(owner_,
                  "SELECT count(*) FROM (SELECT t.id, r.id FROM tenants t CROSS JOIN roles r "
                  "EXCEPT SELECT ur.tenant_id, ur.role_id FROM user_roles ur) missing"),
            0);
  // Realistic levels: price in the tens of thousands, hashrate in the hundreds of EH/s.
  EXPECT_EQ(count(owner_,
                  "SELECT count(*) FROM network_snapshots WHERE btc_price_usd NOT BETWEEN 20000 "
                  "AND 400000 OR network_hashrate_ehs NOT BETWEEN 300 AND 3000"),
            0);
}

TEST_F(SchemaTest, AppRoleSeesOnlyItsTenant) {
  auto app = TestServers::get().app();
  // No tenant set: nothing is visible.
  EXPECT_EQ(count(app, "SELECT count(*) FROM users"), 0);
  pg::Transaction tx(app);
  ASSERT_TRUE(tx.begin("1").ok());
  EXPECT_EQ(count(app, "SELECT count(*) FROM users"), 5);
  EXPECT_EQ(count(app, "SELECT count(*) FROM users WHERE tenant_id = 2"), 0);
  ASSERT_TRUE(tx.commit().ok());
  // The setting is local to the transaction: gone afterwards on the same connection.
  EXPECT_EQ(count(app, "SELECT count(*) FROM users"), 0);
}

TEST_F(SchemaTest, AppRoleCannotWriteAnotherTenantsRows) {
  auto app = TestServers::get().app();
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("1").ok());
    auto ins = app.exec(
        "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) VALUES (2, 201, 1, 1)");
    ASSERT_FALSE(ins.ok());
    EXPECT_NE(ins.error().message.find("row-level security"), std::string::npos)
        << ins.error().message;
  }
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("2").ok());
    auto ins = app.exec(
        "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) VALUES (2, 201, 1, 3) "
        "RETURNING id");
    ASSERT_TRUE(ins.ok()) << ins.error().message;
    ASSERT_TRUE(tx.commit().ok());
  }
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("1").ok());
    auto upd = app.exec("UPDATE user_miners SET quantity = 99 WHERE tenant_id = 2");
    ASSERT_TRUE(upd.ok());
    EXPECT_EQ(upd->affected(), 0);  // invisible rows cannot be updated
    auto del = app.exec("DELETE FROM user_miners WHERE user_id = 201");
    ASSERT_TRUE(del.ok());
    EXPECT_EQ(del->affected(), 0);
    // Moving an own row to another tenant is rejected by WITH CHECK.
    auto own = app.exec(
        "INSERT INTO user_miners (tenant_id, user_id, model_id, quantity) VALUES (1, 101, 1, 1)");
    ASSERT_TRUE(own.ok()) << own.error().message;
    auto move = app.exec("UPDATE user_miners SET tenant_id = 2 WHERE user_id = 101");
    ASSERT_FALSE(move.ok());
  }
  EXPECT_EQ(count(owner_, "SELECT count(*) FROM user_miners WHERE tenant_id = 2 AND quantity = 99"),
            0);
}

TEST_F(SchemaTest, AppRoleHasNoBypassAndHealthCountsComeAsAggregates) {
  auto app = TestServers::get().app();
  EXPECT_EQ(count(app,
                  "SELECT count(*) FROM pg_roles WHERE rolname = current_user AND "
                  "(rolbypassrls OR rolsuper)"),
            0);
  // The outbox is tenant-scoped for the app; the SECURITY DEFINER function sees all tenants.
  for (const char* tenant : {"1", "2"}) {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin(tenant).ok());
    auto r = app.exec(
        "INSERT INTO event_outbox (id, tenant_id, kind, user_id, payload, seq) "
        "VALUES (gen_random_uuid()::text, $1, 'miner.added', '1', '{}', next_user_seq($1, '1'))",
        {tenant});
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(tx.commit().ok());
  }
  EXPECT_EQ(count(app, "SELECT count(*) FROM event_outbox"), 0);
  EXPECT_GE(count(app, "SELECT unprocessed FROM hi_outbox_stats()"), 2);
  // The relay role bypasses RLS but may not touch business tables.
  auto relay = pg::Connection::connect(TestServers::get().database_url(), "hashinsight_relay");
  ASSERT_TRUE(relay.ok());
  EXPECT_GE(count(*relay, "SELECT count(*) FROM event_outbox"), 2);
  EXPECT_FALSE(relay->exec("SELECT count(*) FROM user_miners").ok());
}

// Catalog-wide: every relation with a tenant_id column, the daily partitions included (a
// partition queried directly does not apply its parent's policies), either enforces
// row-level security (enabled and forced) or is out of the app role's reach altogether.
TEST_F(SchemaTest, EveryTenantRelationEnforcesRowLevelSecurity) {
  ASSERT_TRUE(owner_.exec("SELECT ensure_all_partitions()").ok());
  auto r = owner_.exec(
      "SELECT c.relname FROM pg_class c "
      "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT "
      "a.attisdropped "
      "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
      "AND NOT (c.relrowsecurity AND c.relforcerowsecurity) "
      "AND has_table_privilege('hashinsight_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE') "
      "ORDER BY 1");
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::string open;
  for (int i = 0; i < r->rows(); ++i) open += std::string(r->text(i, 0)) + " ";
  EXPECT_EQ(r->rows(), 0) << "reachable by the app without row-level security: " << open;
  // And there are partitions to check.
  EXPECT_GT(count(owner_,
                  "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                  "WHERE c.relname LIKE 'forecast_daily_%'"),
            10);
}

// SECURITY DEFINER functions cannot be hijacked through the caller's search_path.
TEST_F(SchemaTest, DefinerFunctionsPinTheirSearchPath) {
  auto r = owner_.exec(
      "SELECT p.proname, coalesce(array_to_string(p.proconfig, ';'), '') FROM pg_proc p "
      "WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace ORDER BY 1");
  ASSERT_TRUE(r.ok());
  ASSERT_GE(r->rows(), 4);
  for (int i = 0; i < r->rows(); ++i) {
    EXPECT_EQ(r->text(i, 1), "search_path=pg_catalog, public, pg_temp") << r->text(i, 0);
  }
}

// hi_audit_tenant_of tells the audit worker (no tenant yet) whose row a key is; a session of
// another tenant learns nothing from it.
TEST_F(SchemaTest, AuditTenantLookupNeverRevealsAnotherTenant) {
  ASSERT_TRUE(
      owner_
          .exec("INSERT INTO change_audit_log (tenant_id, event_id, source_table, operation, "
                "row_key, lsn) VALUES (1, 'audit-77', 'public.secret_rows', 'insert', "
                "'{\"id\": 77}', '0/1')")
          .ok());
  auto app = TestServers::get().app();
  auto lookup = [&](const char* tenant) -> std::string {
    pg::Transaction tx(app);
    EXPECT_TRUE(tx.begin(tenant).ok());
    auto r = app.exec("SELECT hi_audit_tenant_of('public.secret_rows', '{\"id\": 77}')");
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() && !r->is_null(0, 0) ? std::string(r->text(0, 0)) : "null";
  };
  EXPECT_EQ(lookup("1"), "1");
  EXPECT_EQ(lookup("2"), "null");
  // Without a tenant (the audit worker resolving a delete's key): the recorded tenant.
  auto r = app.exec("SELECT hi_audit_tenant_of('public.secret_rows', '{\"id\": 77}')");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text(0, 0), "1");
}

TEST_F(SchemaTest, UserSequenceIsMonotonicPerUser) {
  auto app = TestServers::get().app();
  pg::Transaction tx(app);
  ASSERT_TRUE(tx.begin("1").ok());
  const auto a = count(app, "SELECT next_user_seq(1, 'seq-user')");
  const auto b = count(app, "SELECT next_user_seq(1, 'seq-user')");
  const auto other = count(app, "SELECT next_user_seq(1, 'seq-other')");
  EXPECT_EQ(b, a + 1);
  EXPECT_EQ(other, 1);
}

TEST_F(SchemaTest, PoolHandsOutWorkingConnectionsAndPipelines) {
  pg::Pool pool(
      {TestServers::get().database_url(), "hashinsight_app", 2, std::chrono::milliseconds(500)});
  auto a = pool.acquire();
  ASSERT_TRUE(a.ok());
  auto b = pool.acquire();
  ASSERT_TRUE(b.ok());
  auto c = pool.acquire();  // both leased: times out with a clear error
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, Code::kUnavailable);
  const pg::Statement batch[] = {{"SELECT 1", {}, false},
                                 {"SELECT $1::int + 1", {std::string("41")}, false}};
  auto res = (*a)->pipeline(batch);
  ASSERT_TRUE(res.ok()) << res.error().message;
  EXPECT_EQ((*res)[1].int64(0, 0), 42);
  const pg::Statement bad[] = {{"SELECT 1/0", {}, false}};
  auto err = (*b)->pipeline(bad);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.error().message.find("division by zero"), std::string::npos);
  EXPECT_NE(err.error().message.find("SQLSTATE 22012"), std::string::npos);
}

// Statements with parameters are prepared once per connection (pg/connection.h); what a caller
// sees must not change: each tenant's rows under row-level security, the statement's own
// error inside a transaction, a result that follows a table's new columns.
TEST_F(SchemaTest, CachedStatementsKeepTenantsErrorsAndNewColumns) {
  auto app = TestServers::get().app();
  const std::string users_above = "SELECT count(*) FROM users WHERE id > $1::bigint";
  for (const char* tenant : {"1", "2", "1"}) {
    // The owner sees every row: the expected count comes from its own query.
    auto expected = owner_.exec(users_above + " AND tenant_id = $2::bigint", {"0", tenant});
    ASSERT_TRUE(expected.ok()) << expected.error().message;
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin(tenant).ok());
    auto seen = app.exec(users_above, {"0"});
    ASSERT_TRUE(seen.ok()) << seen.error().message;
    EXPECT_EQ(seen->int64(0, 0), expected->int64(0, 0)) << "tenant " << tenant;
    ASSERT_TRUE(tx.commit().ok());
  }
  // Three runs, one prepared statement.
  EXPECT_EQ(count(app, "SELECT count(*) FROM pg_prepared_statements WHERE statement = '" +
                           users_above + "'"),
            1);

  // Inside a transaction, a bad statement reports its own error, and the next statement the
  // transaction's state.
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("1").ok());
    auto bad = app.exec("SELECT nonsense FROM users WHERE id = $1::bigint", {"1"});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("nonsense"), std::string::npos) << bad.error().message;
  }
  auto after = app.exec(users_above, {"0"});
  ASSERT_TRUE(after.ok()) << after.error().message;

  // A table that gains a column: the cached statement is prepared again and returns it.
  ASSERT_TRUE(owner_.exec("CREATE TEMP TABLE widened (a int)").ok());
  ASSERT_TRUE(owner_.exec("INSERT INTO widened VALUES (7)").ok());
  const std::string star = "SELECT * FROM widened WHERE a = $1::int";
  auto narrow = owner_.exec(star, {"7"});
  ASSERT_TRUE(narrow.ok()) << narrow.error().message;
  EXPECT_EQ(narrow->columns(), 1);
  ASSERT_TRUE(owner_.exec("ALTER TABLE widened ADD COLUMN b int DEFAULT 8").ok());
  auto wide = owner_.exec(star, {"7"});
  if (!wide.ok()) {
    // PostgreSQL refuses the old statement once; the connection prepares it again.
    EXPECT_NE(wide.error().message.find("result type"), std::string::npos) << wide.error().message;
    wide = owner_.exec(star, {"7"});
  }
  ASSERT_TRUE(wide.ok()) << wide.error().message;
  ASSERT_EQ(wide->columns(), 2);
  EXPECT_EQ(wide->int64(0, 1), 8);

  // A pipeline prepares a new statement in its own round trip, once, even when it runs twice.
  const std::string plus = "SELECT $1::int + 100";
  const pg::Statement twice[] = {{plus, {std::string("1")}, false},
                                 {plus, {std::string("2")}, false}};
  auto res = owner_.pipeline(twice);
  ASSERT_TRUE(res.ok()) << res.error().message;
  EXPECT_EQ((*res)[0].int64(0, 0), 101);
  EXPECT_EQ((*res)[1].int64(0, 0), 102);
  EXPECT_EQ(
      count(owner_, "SELECT count(*) FROM pg_prepared_statements WHERE statement = '" + plus + "'"),
      1);
}

// Transaction::Start::kWithFirstStatement holds BEGIN and the tenant back to ride with the
// first statement, and commit_with() ends the transaction in its last statements' round trip:
// what a caller sees must be what an eager BEGIN and COMMIT give.
TEST_F(SchemaTest, TransactionsMayBeginWithTheirFirstStatementAndCommitWithTheirLast) {
  auto app = TestServers::get().app();
  const std::string users_above = "SELECT count(*) FROM users WHERE id > $1::bigint";
  auto expected = owner_.exec(users_above + " AND tenant_id = 2", {"0"});
  ASSERT_TRUE(expected.ok()) << expected.error().message;
  // Whether two statements run in one transaction (a transaction id is assigned on asking).
  const auto one_transaction = [&app] {
    const std::string xid = "SELECT pg_current_xact_id()::text WHERE $1::int = 1";
    auto a = app.exec(xid, {"1"});
    auto b = app.exec(xid, {"1"});
    EXPECT_TRUE(a.ok() && b.ok());
    return a.ok() && b.ok() && a->text(0, 0) == b->text(0, 0);
  };
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("2", pg::Transaction::Start::kWithFirstStatement).ok());
    EXPECT_TRUE(app.has_deferred());
    auto seen = app.exec(users_above, {"0"});  // row-level security: tenant 2's rows only
    ASSERT_TRUE(seen.ok()) << seen.error().message;
    EXPECT_EQ(seen->int64(0, 0), expected->int64(0, 0));
    EXPECT_FALSE(app.has_deferred());
    EXPECT_TRUE(one_transaction());
    ASSERT_TRUE(tx.commit().ok());
  }
  // A transaction that ran nothing: no error, and the connection is not left in a block (each
  // statement is then its own transaction).
  {
    pg::Transaction tx(app);
    ASSERT_TRUE(tx.begin("1", pg::Transaction::Start::kWithFirstStatement).ok());
    ASSERT_TRUE(tx.commit().ok());
    EXPECT_FALSE(app.has_deferred());
    EXPECT_FALSE(one_transaction());
  }

  ASSERT_TRUE(owner_.exec("CREATE TABLE IF NOT EXISTS tx_shapes (v int CHECK (v > 0))").ok());
  ASSERT_TRUE(owner_.exec("TRUNCATE tx_shapes").ok());
  const std::string insert = "INSERT INTO tx_shapes VALUES ($1::int) RETURNING v * 10";
  {
    // Committed with the last statements: their results come back, the rows are there.
    pg::Transaction tx(owner_);
    ASSERT_TRUE(tx.begin("1", pg::Transaction::Start::kWithFirstStatement).ok());
    ASSERT_TRUE(owner_.exec(insert, {"1"}).ok());
    const pg::Statement last[] = {{insert, {std::string("2")}, false},
                                  {insert, {std::string("3")}, false}};
    auto r = tx.commit_with(last);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->size(), 2u);
    EXPECT_EQ((*r)[1].int64(0, 0), 30);
    EXPECT_FALSE(tx.active());
  }
  {
    // A last statement that fails: nothing of the transaction is committed.
    pg::Transaction tx(owner_);
    ASSERT_TRUE(tx.begin("1", pg::Transaction::Start::kWithFirstStatement).ok());
    ASSERT_TRUE(owner_.exec(insert, {"4"}).ok());
    const pg::Statement last[] = {{insert, {std::string("5")}, false},
                                  {insert, {std::string("-1")}, false}};
    auto r = tx.commit_with(last);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("SQLSTATE 23514"), std::string::npos) << r.error().message;
  }
  // 1 + 2 + 3 from the first; nothing from the second (rolled back when tx went away).
  EXPECT_EQ(count(owner_, "SELECT coalesce(sum(v), 0) FROM tx_shapes"), 6);
  ASSERT_TRUE(owner_.exec("DROP TABLE tx_shapes").ok());
}

}  // namespace
}  // namespace hi
