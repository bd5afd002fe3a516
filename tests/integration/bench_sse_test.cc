// `hashinsight bench sse --clients 1000` as a user runs it, on its own stack started by `up`:
// every one of the 1,000 open streams receives the push of its own user's write (through_seq at
// least the seq the POST returned; the event sent on connect does not count). The timings are
// the benchmark's, not asserted.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/process.h"
#include "support/servers.h"

namespace hi {
namespace {

TEST(BenchSse, EveryOneOfAThousandStreamsReceivesItsOwnWrite) {
  SpawnOptions o;
  o.argv = {
      test::hashinsight_binary(), "bench", "sse", "--json", "--clients", "1000", "--rate", "400"};
  // Nothing of the caller's environment may point the bench at another stack.
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::minutes(5));
  ASSERT_TRUE(r.ok()) << r.error().message;

  // stdout and stderr arrive together here; the JSON is the one line that parses as an object.
  nlohmann::json out;
  std::istringstream lines(r->output);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("clients")) out = j;
  }
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

}  // namespace
}  // namespace hi
