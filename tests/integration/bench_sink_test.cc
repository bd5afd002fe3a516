// `hashinsight bench sink` as a user runs it, small (2000 rows, its own private stack), once per
// destination: one JSON line with every field of the contract, every row applied, masking on.
// The figures themselves are the benchmark's, not asserted. ClickHouse is skipped without
// clickhouse-server.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/process.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;

json run_bench_sink(const std::string& destination) {
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(),
            "bench",
            "sink",
            "--rows",
            "2000",
            "--destination",
            destination,
            "--batch",
            "500",
            "--json"};
  // Nothing of the caller's environment may point the bench at another stack.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "LOG_FORMAT=text", "HI_DATA_DIR=/nonexistent"};
  auto r = run_command(o, std::chrono::minutes(5));
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok()) return nullptr;
  EXPECT_EQ(r->status, 0) << r->output;
  // stdout and stderr arrive together here; the JSON is the last line.
  const auto brace = r->output.rfind("\n{");
  const json out =
      json::parse(r->output.substr(brace == std::string::npos ? 0 : brace + 1), nullptr, false);
  EXPECT_TRUE(out.is_object()) << r->output;
  return out.is_object() ? out : nullptr;
}

void expect_contract(const json& out, const std::string& destination) {
  ASSERT_TRUE(out.is_object());
  EXPECT_EQ(out["rows"], 2000) << out.dump();
  EXPECT_EQ(out["destination"], destination) << out.dump();
  EXPECT_EQ(out["masking"], true) << out.dump();
  ASSERT_TRUE(out["rows_per_s"].is_number()) << out.dump();
  EXPECT_GT(out["rows_per_s"].get<double>(), 0) << out.dump();
  EXPECT_GT(out["seconds"].get<double>(), 0) << out.dump();
  EXPECT_EQ(out["batch"], 500) << out.dump();
  EXPECT_GE(out["batches"].get<int>(), 4) << out.dump();  // 2000 changes, 500 at most each
  EXPECT_EQ(out["bus"], "redis") << out.dump();
  EXPECT_EQ(out["durable"], true) << out.dump();
  // Shares of the cores' time while the sink drained: it parsed and wrote rows, so some.
  ASSERT_TRUE(out["cpu_busy"].is_number() && out["cpu_steal"].is_number()) << out.dump();
  EXPECT_GT(out["cpu_busy"].get<double>(), 0) << out.dump();
  EXPECT_LE(out["cpu_busy"].get<double>() + out["cpu_steal"].get<double>(), 1) << out.dump();
}

TEST(BenchSink, PostgresAppliesEveryRowMasked) {
  expect_contract(run_bench_sink("postgres"), "postgres");
}

TEST(BenchSink, ClickHouseAppliesEveryRowMasked) {
  if (::access("/usr/sbin/clickhouse-server", X_OK) != 0) {
    GTEST_SKIP() << "clickhouse-server is not installed (scripts/bootstrap)";
  }
  expect_contract(run_bench_sink("clickhouse"), "clickhouse");
}

}  // namespace
}  // namespace hi
