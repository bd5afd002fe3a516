// `hashinsight bench api` as a user runs it, lean (1 s per run, 5 users, its own private stack):
// one JSON line with every field of the contract, and as many new user_miners rows as the API
// answered 2xx to POST /api/miners. The figures themselves are the benchmark's, not asserted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/process.h"
#include "support/servers.h"

namespace hi {
namespace {

bool wrk_installed() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (::access((std::filesystem::path(dir) / "wrk").c_str(), X_OK) == 0) return true;
  }
  return false;
}

TEST(BenchApi, PrintsEveryContractFieldAndCountsItsWrites) {
  if (!wrk_installed()) GTEST_SKIP() << "wrk is not installed (scripts/bootstrap)";
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(),
            "bench",
            "api",
            "--json",
            "--duration",
            "1",
            "--users",
            "5",
            "--connections",
            "8",
            "--post-connections",
            "4"};
  // Nothing of the caller's environment may point the bench at another stack.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::minutes(5));
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->status, 0) << r->output;

  // stdout and stderr arrive together here; the JSON is the one line that parses as an object.
  nlohmann::json out;
  std::istringstream lines(r->output);
  int json_lines = 0;
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) {
      out = j;
      ++json_lines;
    }
  }
  ASSERT_EQ(json_lines, 1) << r->output;

  for (const char* field :
       {"post_rps", "post_p99_ms", "pgbench_tps", "pgbench_post_tps", "get_rps", "get_p99_ms"}) {
    ASSERT_TRUE(out.contains(field)) << field << " in " << out.dump();
    EXPECT_TRUE(out[field].is_number()) << field << " in " << out.dump();
    EXPECT_GT(out[field].get<double>(), 0) << field << " in " << out.dump();
  }
  ASSERT_TRUE(out.contains("get_cache_hit_ratio"));
  if (!out["get_cache_hit_ratio"].is_null()) {
    EXPECT_GE(out["get_cache_hit_ratio"].get<double>(), 0);
    EXPECT_LE(out["get_cache_hit_ratio"].get<double>(), 1);
  }
  EXPECT_EQ(out["durable"], true);
  EXPECT_EQ(out["load_generator"], "wrk (same machine)");
  EXPECT_EQ(out["post_errors"], 0) << out.dump();
  EXPECT_EQ(out["get_errors"], 0) << out.dump();

  // Every 2xx is a committed row; wrk stops counting with requests still in flight, whose rows
  // may commit too: at most one per connection.
  const auto rows = out["post_rows"].get<std::int64_t>();
  const auto ok = out["post_requests_2xx"].get<std::int64_t>();
  EXPECT_GE(rows, ok) << out.dump();
  EXPECT_LE(rows, ok + out["post_connections"].get<std::int64_t>()) << out.dump();
}

}  // namespace
}  // namespace hi
