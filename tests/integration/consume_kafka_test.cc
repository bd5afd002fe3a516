// The portfolio worker on Kafka (librdkafka's mock cluster hosted here, workers as child
// processes): two members of one group apply every event exactly once; a member killed with
// SIGKILL mid-stream loses and doubles nothing (the group rebalances, the survivor resumes from
// the last committed offsets, the inbox absorbs the redeliveries).
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <thread>

#include "bus/kafka_mock.h"
#include "schema/seed.h"
#include "support/consume_helpers.h"
#include "support/relay_helpers.h"
#include "support/servers.h"

namespace hi {
namespace {

using test::eventually;
using test::TestServers;

constexpr const char* kGroup = "portfolio-recalc-group";

class ConsumeKafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    owner_ = TestServers::get().owner();
    ASSERT_TRUE(schema::seed(owner_, Logger("test")).ok());
    auto r = redis::Client::connect(TestServers::get().redis_url());
    ASSERT_TRUE(r.ok());
    redis_ = std::move(*r);
    test::reset_consumer_state(owner_, redis_);
    app_ = TestServers::get().app();
    auto m = bus::MockCluster::start(3);
    ASSERT_TRUE(m.ok()) << m.error().message;
    mock_ = std::move(*m);
    for (const auto& t : bus::standard_topics()) ASSERT_TRUE(mock_->create_topic(t, 6, 3).ok());
    bus::BusOptions o;
    o.kind = bus::BusKind::kKafka;
    o.kafka_brokers = mock_->bootstrap();
    auto p = bus::make_producer(o, [this](std::uint64_t, const Status& s) {
      EXPECT_TRUE(s.ok()) << s.error().message;
      ++delivered_;
    });
    ASSERT_TRUE(p.ok()) << p.error().message;
    producer_ = std::move(*p);
  }
  void TearDown() override {
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      if (!workers_[i].valid()) continue;
      workers_[i].signal(SIGTERM);
      auto st = workers_[i].wait_for(std::chrono::seconds(30));
      EXPECT_EQ(st.value_or(-1), 0) << test::file_text(log(i));
    }
    workers_.clear();
    producer_.reset();
    mock_.reset();
  }
  std::string log(std::size_t i) { return tmp_.path() + "/kworker" + std::to_string(i) + ".log"; }
  Process start_worker() {
    const std::size_t i = started_++;
    return test::start_worker("portfolio", log(i), {"--retry-backoff-ms", "20", "--poll-ms", "200"},
                              {"BUS=kafka", "KAFKA_BROKERS=" + mock_->bootstrap()});
  }
  void publish(const std::vector<test::TestEvent>& events) {
    for (const auto& e : events) ASSERT_TRUE(producer_->send(test::relay_message(e), 0).ok());
    sent_ += events.size();
    while (delivered_ < sent_) producer_->poll(std::chrono::milliseconds(50));
  }
  std::int64_t scalar(const std::string& sql, const pg::Params& params = {}) {
    auto r = owner_.exec(sql, params);
    return r && !r->empty() && !r->is_null(0, 0) ? r->int64(0, 0) : -1;
  }

  test::TempDir tmp_;
  pg::Connection owner_;
  pg::Connection app_;
  redis::Client redis_;
  std::unique_ptr<bus::MockCluster> mock_;
  std::unique_ptr<bus::Producer> producer_;
  std::size_t sent_ = 0;
  std::size_t delivered_ = 0;
  std::size_t started_ = 0;
  std::vector<Process> workers_;
};

TEST_F(ConsumeKafkaTest, TwoWorkersInOneGroupApplyEveryEventExactlyOnce) {
  const std::vector<std::pair<std::string, std::string>> users = {
      {"1", "101"}, {"1", "102"}, {"1", "103"}, {"2", "201"}, {"2", "202"}, {"2", "203"}};
  for (const auto& [t, u] : users) test::give_miners(owner_, t, u, 3);
  workers_.push_back(start_worker());
  workers_.push_back(start_worker());
  std::int64_t total = 0;
  std::map<std::string, std::int64_t> last_seq;
  for (int round = 0; round < 10; ++round) {
    std::vector<test::TestEvent> batch;
    for (const auto& [t, u] : users) {
      auto ev = test::outbox_events(app_, t, u, 10);
      last_seq[u] = ev.back().seq;
      batch.insert(batch.end(), ev.begin(), ev.end());
    }
    batch.insert(batch.end(), batch.begin(), batch.begin() + 5);  // redeliveries
    publish(batch);
    total += 60;
    if (round == 5) {
      // One member dies without leaving the group; the other takes over its partitions.
      workers_[0].signal(SIGKILL);
      workers_[0].wait_for(std::chrono::seconds(5));
      workers_[0] = start_worker();
    }
  }
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == total; },
                         std::chrono::seconds(120)))
      << test::inbox_rows(owner_, kGroup) << " of " << total << "\n"
      << test::file_text(log(1));
  EXPECT_EQ(scalar("SELECT sum(events_applied) FROM user_portfolio"), total);
  for (const auto& [u, seq] : last_seq) {
    EXPECT_EQ(scalar("SELECT through_seq FROM user_portfolio WHERE user_id = $1", {u}), seq) << u;
  }
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 3);
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "2"), 3);
  // Both members consumed something.
  int members_with_work = 0;
  for (std::size_t i = 0; i < started_; ++i) {
    if (test::file_text(log(i)).find("consuming") != std::string::npos) ++members_with_work;
  }
  EXPECT_GE(members_with_work, 2);
}

// A member killed after its group joined, with events in flight: its third batch is committed
// to the database but neither invalidated nor its offsets committed when it dies (the
// failpoint proves where). Its replacement joins the group, gets the partitions once the dead
// member's session expires, the redelivered batch is deduplicated by the inbox, and every
// event is applied exactly once.
TEST_F(ConsumeKafkaTest, AMemberKilledAfterJoiningWithEventsInFlightLosesAndDoublesNothing) {
  const std::vector<std::string> users = {"101", "102", "103", "104", "105"};
  for (const auto& u : users) test::give_miners(owner_, "1", u, 2);
  workers_.push_back(test::start_worker("portfolio", log(started_++),
                                        {"--retry-backoff-ms", "20", "--poll-ms", "200"},
                                        {"BUS=kafka", "KAFKA_BROKERS=" + mock_->bootstrap(),
                                         "HI_FAILPOINTS=consume.after_commit=3*crash"}));
  std::int64_t total = 0;
  std::map<std::string, std::int64_t> last_seq;
  for (int round = 0; round < 12; ++round) {
    std::vector<test::TestEvent> batch;
    for (const auto& u : users) {
      auto ev = test::outbox_events(app_, "1", u, 5);
      last_seq[u] = ev.back().seq;
      batch.insert(batch.end(), ev.begin(), ev.end());
    }
    publish(batch);
    total += static_cast<std::int64_t>(batch.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  auto status = workers_[0].wait_for(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "the member never crashed\n" << test::file_text(log(0));
  EXPECT_EQ(*status, 137);
  const std::string crashed = test::file_text(log(0));
  const auto joined = crashed.find("kafka partitions assigned");
  const auto died = crashed.find("failpoint consume.after_commit: crash (exit 137)");
  ASSERT_NE(died, std::string::npos) << crashed;
  EXPECT_LT(joined, died) << "the crash landed before the group was joined\n" << crashed;
  workers_[0] = Process();  // reaped
  workers_.push_back(start_worker());
  ASSERT_TRUE(eventually([&] { return test::inbox_rows(owner_, kGroup) == total; },
                         std::chrono::seconds(120)))
      << test::inbox_rows(owner_, kGroup) << " of " << total << "\n"
      << test::file_text(log(1));
  EXPECT_EQ(scalar("SELECT sum(events_applied) FROM user_portfolio"), total);
  for (const auto& [u, seq] : last_seq) {
    EXPECT_EQ(scalar("SELECT through_seq FROM user_portfolio WHERE user_id = $1", {u}), seq) << u;
  }
  EXPECT_EQ(test::expect_portfolios_match_recalculation(app_, "1"), 5);
}

}  // namespace
}  // namespace hi
