// `hashinsight bench sse` and `bench e2e` as a user runs them, each on its own stack started by
// `up` (one binary: the two run one after the other, not beside each other):
//  - sse --clients 1000: every one of the 1,000 open streams receives the push of its own
//    user's write (through_seq at least the seq the POST returned; the event sent on connect
//    does not count);
//  - e2e --rate 200 --duration 10: nothing lost, nothing applied twice, and at least 95 % of the
//    scheduled writes made (the sender keeps up).
// The timings are the benchmarks', not asserted.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/process.h"
#include "support/servers.h"

namespace hi {
namespace {

// The one JSON line of a bench command's output (stdout and stderr arrive together here).
nlohmann::json json_line(const std::string& output, const char* field) {
  nlohmann::json out;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains(field)) out = j;
  }
  return out;
}

TEST(BenchSse, EveryOneOfAThousandStreamsReceivesItsOwnWrite) {
  SpawnOptions o;
  o.argv = {
      test::hashinsight_binary(), "bench", "sse", "--json", "--clients", "1000", "--rate", "400"};
  // Nothing of the caller's environment may point the bench at another stack.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::minutes(5));
  ASSERT_TRUE(r.ok()) << r.error().message;

  const nlohmann::json out = json_line(r->output, "clients");
  ASSERT_TRUE(out.is_object()) << r->output;
  EXPECT_EQ(r->status, 0) << r->output;
  EXPECT_EQ(out["clients"], 1000);
  EXPECT_EQ(out["write_errors"], 0) << out.dump();
  EXPECT_EQ(out["received"], 1000) << out.dump();
  for (const char* field : {"delivery_p50_ms", "delivery_p99_ms", "get_portfolio_p99_ms"}) {
    ASSERT_TRUE(out.contains(field)) << field;
    EXPECT_GT(out[field].get<double>(), 0) << field << " in " << out.dump();
  }
  EXPECT_GT(out["get_requests"].get<int>(), 0) << out.dump();
}

TEST(BenchE2e, LosesNothingAppliesNothingTwiceAndKeepsTheRate) {
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(),
            "bench",
            "e2e",
            "--json",
            "--rate",
            "200",
            "--duration",
            "10",
            "--warmup",
            "2"};
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::minutes(5));
  ASSERT_TRUE(r.ok()) << r.error().message;
  const nlohmann::json out = json_line(r->output, "writes");
  ASSERT_TRUE(out.is_object()) << r->output;
  EXPECT_EQ(r->status, 0) << r->output;
  EXPECT_EQ(out["lost"], 0) << out.dump();
  EXPECT_EQ(out["duplicates"], 0) << out.dump();
  EXPECT_GE(out["writes"].get<double>(), 0.95 * 200 * 10) << out.dump();  // rate x duration
  for (const char* field : {"rate", "duration_s", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                            "throughput_eps", "bus", "durable", "stages"}) {
    EXPECT_TRUE(out.contains(field)) << field << " in " << out.dump();
  }
  // Shares of the cores' time while the writes ran: 2,000 requests and their pushes, so some.
  ASSERT_TRUE(out["cpu_busy"].is_number() && out["cpu_steal"].is_number()) << out.dump();
  EXPECT_GT(out["cpu_busy"].get<double>(), 0) << out.dump();
  EXPECT_LE(out["cpu_busy"].get<double>() + out["cpu_steal"].get<double>(), 1) << out.dump();
  for (const char* stage :
       {"api_commit", "commit_to_bus", "bus_to_consumer_commit", "commit_to_push"}) {
    ASSERT_TRUE(out["stages"].contains(stage)) << stage << " in " << out.dump();
    EXPECT_TRUE(out["stages"][stage]["p50_ms"].is_number()) << stage << " in " << out.dump();
  }
}

}  // namespace
}  // namespace hi
