// Redis Streams retention: trimming never drops an entry some group has not acknowledged.
#include <gtest/gtest.h>

#include <thread>

#include "bus/redis_streams.h"
#include "redis/client.h"
#include "support/servers.h"

namespace hi {
namespace {

class StreamRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = redis::Client::connect(test::TestServers::get().redis_url());
    ASSERT_TRUE(r.ok());
    redis_ = std::move(*r);
    ASSERT_TRUE(redis_.command({"FLUSHALL"}).ok());
  }
  std::vector<std::string> add(const std::string& stream, int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      auto r = redis_.command({"XADD", stream, "*", "key", "k", "value", std::to_string(i)});
      EXPECT_TRUE(r.ok());
      ids.push_back(r->str);
    }
    return ids;
  }
  std::int64_t len(const std::string& s) { return redis_.command({"XLEN", s})->integer; }
  bool has(const std::string& s, const std::string& id) {
    auto r = redis_.command({"XRANGE", s, id, id});
    return r.ok() && r->elements.size() == 1;
  }
  redis::Client redis_;
};

TEST_F(StreamRetentionTest, TrimsAcknowledgedEntriesAndKeepsPendingAndUnread) {
  const auto ids = add("events.t1", 1000);
  ASSERT_EQ(redis_.command({"XGROUP", "CREATE", "events.t1", "g", "0"})->type,
            redis::Reply::Type::kStatus);
  // The group reads 950 entries and acknowledges the first 900: 50 pending, 50 unread.
  auto read = redis_.command(
      {"XREADGROUP", "GROUP", "g", "c", "COUNT", "950", "STREAMS", "events.t1", ">"});
  ASSERT_TRUE(read.ok());
  std::vector<std::string> ack = {"XACK", "events.t1", "g"};
  ack.insert(ack.end(), ids.begin(), ids.begin() + 900);
  ASSERT_EQ(redis_.command(ack)->integer, 900);

  auto trimmed = bus::trim_stream(redis_, "events.t1", std::chrono::milliseconds(0));
  ASSERT_TRUE(trimmed.ok()) << trimmed.error().message;
  EXPECT_GT(*trimmed, 700) << "acknowledged entries stay forever";
  for (int i = 900; i < 1000; ++i) EXPECT_TRUE(has("events.t1", ids[i])) << i;
  EXPECT_EQ(len("events.t1"), 1000 - *trimmed);
}

TEST_F(StreamRetentionTest, AGroupThatReadNothingKeepsEverything) {
  const auto ids = add("events.t2", 500);
  ASSERT_TRUE(redis_.command({"XGROUP", "CREATE", "events.t2", "fast", "0"}).ok());
  ASSERT_TRUE(redis_.command({"XGROUP", "CREATE", "events.t2", "slow", "0"}).ok());
  auto read = redis_.command(
      {"XREADGROUP", "GROUP", "fast", "c", "COUNT", "500", "STREAMS", "events.t2", ">"});
  ASSERT_TRUE(read.ok());
  std::vector<std::string> ack = {"XACK", "events.t2", "fast"};
  ack.insert(ack.end(), ids.begin(), ids.end());
  ASSERT_TRUE(redis_.command(ack).ok());
  auto trimmed = bus::trim_stream(redis_, "events.t2", std::chrono::milliseconds(0));
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 0);
  EXPECT_EQ(len("events.t2"), 500);
}

TEST_F(StreamRetentionTest, YoungEntriesStayAndStreamsWithoutGroupsAgeOut) {
  const auto ids = add("events.t3", 300);
  // "$": everything already in the stream counts as read.
  ASSERT_TRUE(redis_.command({"XGROUP", "CREATE", "events.t3", "g", "$"}).ok());
  auto trimmed = bus::trim_stream(redis_, "events.t3", std::chrono::hours(1));
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 0) << "younger than the retention";
  // A stream no group reads (events.dlq) keeps its young entries and loses its old ones.
  add("events.t4", 300);
  auto young = bus::trim_stream(redis_, "events.t4", std::chrono::hours(1));
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(*young, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto old = bus::trim_stream(redis_, "events.t4", std::chrono::milliseconds(1));
  ASSERT_TRUE(old.ok());
  // MINID ~ trims whole stream nodes (100 entries each by default): at least two of three.
  EXPECT_GE(*old, 200);
  EXPECT_EQ(len("events.t4"), 300 - *old);
}

// A pipeline never reconnects midway. Here the first command of a batch finds Redis down and
// Redis is back for the next two: sending those two alone would return two replies for three
// commands, and the caller would credit them to the wrong messages (the relay would confirm an
// event that was never written). The whole batch must fail, none of it sent, and the next
// batch must work.
TEST(RedisPipeline, NeverReconnectsMidwayAndFailsTheWholeBatch) {
  auto& servers = test::TestServers::get();
  auto c = redis::Client::connect(servers.redis_url(), std::chrono::milliseconds(500));
  ASSERT_TRUE(c.ok());
  redis::Client client = std::move(*c);
  ASSERT_TRUE(client.command({"DEL", "p1", "p2", "p3"}).ok());
  servers.stop_redis();
  EXPECT_FALSE(client.command({"PING"}).ok());  // the client notices the outage
  client.append(std::vector<std::string>{"SET", "p1", "1"});
  servers.start_redis();
  client.append(std::vector<std::string>{"SET", "p2", "2"});
  client.append(std::vector<std::string>{"SET", "p3", "3"});
  auto replies = client.flush();
  EXPECT_FALSE(replies.ok()) << "a batch of 3 came back with " << replies->size() << " replies";

  auto check = redis::Client::connect(servers.redis_url());
  ASSERT_TRUE(check.ok());
  for (const char* key : {"p1", "p2", "p3"}) {
    auto r = check->command({"EXISTS", key});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->integer, 0) << key << " was written by a failed batch";
  }
  client.append(std::vector<std::string>{"SET", "p1", "1"});
  client.append(std::vector<std::string>{"SET", "p2", "2"});
  client.append(std::vector<std::string>{"GET", "p1"});
  auto ok = client.flush();
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  ASSERT_EQ(ok->size(), 3u);
  EXPECT_EQ((*ok)[2].str, "1");
}

// A reclaimed entry says how often it was delivered: 1 for the first read, +1 per reclaim (the
// consumer runtime treats a repeatedly delivered entry as a suspect of killing its consumers).
TEST_F(StreamRetentionTest, ReclaimedEntriesCarryTheirDeliveryCount) {
  add("events.miner", 1);
  bus::BusOptions o;
  o.redis_url = test::TestServers::get().redis_url();
  auto consumer = [&](const std::string& name) {
    bus::ConsumerOptions co;
    co.group = "count-group";
    co.consumer_name = name;
    co.topics = {"events.miner"};
    co.claim_idle = std::chrono::milliseconds(100);
    auto c = bus::RedisStreamsConsumer::create(o, co);
    EXPECT_TRUE(c.ok());
    return std::move(*c);
  };
  auto first = consumer("a");
  auto got = first->poll(10, std::chrono::milliseconds(100));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].delivery_count, 1);
  // Two more consumers in turn find it idle, never acknowledged: deliveries 2 and 3.
  for (int expected : {2, 3}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    auto next = consumer("c" + std::to_string(expected));
    auto again = next->poll(10, std::chrono::milliseconds(100));
    ASSERT_TRUE(again.ok());
    ASSERT_EQ(again->size(), 1u);
    EXPECT_EQ((*again)[0].delivery_count, expected);
  }
}

// start_claim_idle: a consumer takes a dead one's pending entries at its first polls, however
// fresh (a sink's successor), then holds what it was given without claiming it back from itself
// while it polls again (a sink applies one batch while it polls the next), until claim_idle.
TEST_F(StreamRetentionTest, StartClaimsTakeADeadConsumersEntriesAtOnceButNotOnesOwn) {
  add("events.miner", 3);
  bus::BusOptions o;
  o.redis_url = test::TestServers::get().redis_url();
  bus::ConsumerOptions co;
  co.group = "start-group";
  co.topics = {"events.miner"};
  co.consumer_name = "dead";
  auto dead = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(dead.ok()) << dead.error().message;
  auto taken = (*dead)->poll(2, std::chrono::milliseconds(100));
  ASSERT_TRUE(taken.ok());
  ASSERT_EQ(taken->size(), 2u);  // and never acknowledged

  co.consumer_name = "successor";
  co.start_claim_idle = std::chrono::milliseconds(0);
  co.claim_idle = std::chrono::milliseconds(60000);
  auto next = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(next.ok()) << next.error().message;
  auto claimed = (*next)->poll(10, std::chrono::milliseconds(100));
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 2u) << "the dead consumer's entries first, without waiting";
  EXPECT_EQ((*claimed)[0].position, (*taken)[0].position);
  // Held, not acknowledged: the next polls bring the third entry, then nothing.
  auto third = (*next)->poll(10, std::chrono::milliseconds(100));
  ASSERT_TRUE(third.ok());
  ASSERT_EQ(third->size(), 1u);
  EXPECT_NE(third->front().position, (*taken)[0].position);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto none = (*next)->poll(10, std::chrono::milliseconds(50));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty()) << "claimed back its own entries";
}

// commit_later() sends the XACK with the next poll, in its round trip: until then the entries
// are pending (XPENDING, read here on another connection), after it they are not; entries
// deferred when the consumer stops go with an explicit commit().
TEST_F(StreamRetentionTest, DeferredAcknowledgementsGoWithTheNextPoll) {
  add("events.miner", 3);
  bus::BusOptions o;
  o.redis_url = test::TestServers::get().redis_url();
  bus::ConsumerOptions co;
  co.group = "later-group";
  co.consumer_name = "a";
  co.topics = {"events.miner"};
  auto c = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto pending = [&] {
    auto r = redis_.command({"XPENDING", "events.miner", "later-group"});
    return r.ok() && !r->elements.empty() ? r->elements[0].integer : -1;
  };
  auto got = (*c)->poll(10, std::chrono::milliseconds(100));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  ASSERT_TRUE((*c)->commit_later({(*got)[0], (*got)[1]}));
  EXPECT_EQ(pending(), 3) << "acknowledged before the next poll";
  auto none = (*c)->poll(10, std::chrono::milliseconds(20));
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(pending(), 1);
  ASSERT_TRUE((*c)->commit_later({(*got)[2]}));
  ASSERT_TRUE((*c)->commit({}));
  EXPECT_EQ(pending(), 0);
}

// A script runs by its SHA1, which must be the server's own name for it (SCRIPT LOAD returns
// it), and runs again after the server forgot it (SCRIPT FLUSH, as after a restart).
TEST(RedisScript, RunsByItsShaAndAgainAfterTheServerForgetsIt) {
  auto c = redis::Client::connect(test::TestServers::get().redis_url());
  ASSERT_TRUE(c.ok());
  const redis::Script script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
  ASSERT_TRUE(c->command({"DEL", "script-counter"}).ok());
  ASSERT_TRUE(c->command({"SCRIPT", "FLUSH"}).ok());
  auto first = c->eval(script, {"script-counter"}, {"a"});
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_EQ(first->elements.size(), 3u) << first->str;
  EXPECT_EQ(first->elements[1].str, "a");
  EXPECT_EQ(first->elements[2].integer, 1);

  auto loaded = c->command({"SCRIPT", "LOAD", script.source()});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->str, script.sha1());

  ASSERT_TRUE(c->command({"SCRIPT", "FLUSH"}).ok());
  auto again = c->eval(script, {"script-counter"}, {"b"});
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->elements.size(), 3u) << again->str;
  EXPECT_EQ(again->elements[2].integer, 2);
}

}  // namespace
}  // namespace hi
