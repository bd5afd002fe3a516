// `hashinsight chaos` as a user runs it, on each bus: writes at 100/s while parts, Redis,
// PostgreSQL (and on Kafka the brokers) fail, three poisoned events among them; then every
// invariant must hold. Each run is its own CTest test (hi_chaos_redis_test, hi_chaos_kafka_test)
// so the two run beside each other.
//
// The expected counts are the run's arithmetic: rate x duration acknowledged writes, the
// poisoned events in the dead-letter queue, and every fault kind the bus allows.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/process.h"
#include "support/servers.h"

namespace hi {
namespace {

nlohmann::json json_line(const std::string& output) {
  nlohmann::json out;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("invariants")) out = j;
  }
  return out;
}

void run_chaos(const std::string& bus, int duration_s, const std::set<std::string>& kinds) {
  constexpr int kRate = 100;
  constexpr int kPoison = 3;
  SpawnOptions o;
  o.argv = {test::hashinsight_binary(),
            "chaos",
            "--json",
            "--bus",
            bus,
            "--rate",
            std::to_string(kRate),
            "--duration",
            std::to_string(duration_s),
            "--poison",
            std::to_string(kPoison),
            "--seed",
            "20261128"};
  o.env = {"DATABASE_URL=", "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::minutes(12));
  ASSERT_TRUE(r.ok()) << r.error().message;
  const nlohmann::json out = json_line(r->output);
  ASSERT_TRUE(out.is_object()) << r->output;
  EXPECT_EQ(r->status, 0) << r->output;
  EXPECT_EQ(out["ok"], true) << out.dump(2);
  for (const char* name :
       {"acknowledged_writes_once", "outbox_equals_bus",
        "inbox_equals_events:portfolio-recalc-group", "inbox_equals_events:intel-group",
        "events_applied_equals_inbox", "portfolio_equals_recalculation", "pages_end_at_last_seq",
        "dlq_holds_exactly_the_poison", "every_fault_injected", "no_process_left"}) {
    ASSERT_TRUE(out["invariants"].contains(name)) << name << " in " << out.dump(2);
    EXPECT_EQ(out["invariants"][name]["ok"], true) << name << ": " << out["invariants"][name];
  }
  // Every scheduled write was acknowledged once: rate x duration of them.
  EXPECT_EQ(out["invariants"]["acknowledged_writes_once"]["count"], kRate * duration_s);
  EXPECT_EQ(out["writes"], kRate * duration_s);
  EXPECT_EQ(out["invariants"]["dlq_holds_exactly_the_poison"]["count"], kPoison);
  std::set<std::string> injected;
  for (const auto& f : out["faults"]) injected.insert(f["kind"].get<std::string>());
  EXPECT_EQ(injected, kinds) << out["faults"].dump(2);
  for (const char* field : {"w2v_p50_ms", "w2v_p99_ms", "w2v_max_ms", "longest_push_gap_ms"}) {
    ASSERT_TRUE(out.contains(field)) << field;
    EXPECT_GT(out[field].get<double>(), 0) << field;
  }
}

TEST(Chaos, RedisStreamsLosesNothingUnderKillsAndRestarts) {
  run_chaos("redis", 90, {"kill_part", "failpoint", "kill_redis", "stop_postgres"});
}

TEST(Chaos, KafkaLosesNothingUnderKillsRestartsAndBrokerFaults) {
  run_chaos("kafka", 60,
            {"kill_part", "failpoint", "kill_redis", "stop_postgres", "broker_down",
             "produce_errors", "fetch_errors"});
}

}  // namespace
}  // namespace hi
