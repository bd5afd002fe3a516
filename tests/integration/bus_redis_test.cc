// Redis Streams retention: trimming never drops an entry some group has not acknowledged.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "bus/redis_streams.h"
#include "core/process.h"
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
  static bus::BusOptions bus_options() {
    bus::BusOptions o;
    o.redis_url = test::TestServers::get().redis_url();
    return o;
  }
  // A reader that keeps its own positions (a sink), none applied yet.
  static bus::ConsumerOptions positioned(const std::string& group, const std::string& topic,
                                         const std::string& name) {
    bus::ConsumerOptions co;
    co.group = group;
    co.consumer_name = name;
    co.topics = {topic};
    co.resume_from.emplace();
    return co;
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
  const std::uint64_t first_connection = client.connections();
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
  // What was set up on the first connection (a WATCH) is known to be gone.
  EXPECT_GT(client.connections(), first_connection);
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

// A reader that keeps its own positions (a sink: ConsumerOptions::resume_from) leaves nothing
// pending in the group and reports how far it applied; its successor resumes after the position
// it is given: first what the group delivered to the dead reader beyond it, in order, then new
// entries.
TEST_F(StreamRetentionTest, APositionedReaderResumesAfterItsOwnPositionNotTheGroups) {
  const auto ids = add("cdc.public.t", 10);
  const bus::BusOptions o = bus_options();
  bus::ConsumerOptions co = positioned("sink-a", "cdc.public.t", "first");
  auto first = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto a = (*first)->poll(4, std::chrono::milliseconds(100));
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = (*first)->poll(4, std::chrono::milliseconds(100));
  ASSERT_TRUE(b.ok()) << b.error().message;
  ASSERT_EQ(a->size(), 4u);
  ASSERT_EQ(b->size(), 4u);
  EXPECT_EQ((*b)[3].position, ids[7]);
  auto pending = redis_.command({"XPENDING", "cdc.public.t", "sink-a"});
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->elements[0].integer, 0) << "NOACK reads leave nothing pending";
  ASSERT_TRUE((*first)->commit(*a));
  EXPECT_EQ(redis_.command({"HGET", "hi:bus:applied:cdc.public.t", "sink-a"})->str, ids[3]);
  // The first reader dies with entries 4..7 in hand; its lease runs out.
  first->reset();
  ASSERT_TRUE(redis_.command({"DEL", "hi:bus:lease:sink-a"}).ok());

  co.consumer_name = "second";
  co.resume_from = std::map<std::string, std::string>{{"cdc.public.t", ids[3]}};
  auto second = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(second.ok()) << second.error().message;
  std::vector<std::string> seen;
  for (int i = 0; i < 5 && seen.size() < 6; ++i) {
    auto got = (*second)->poll(100, std::chrono::milliseconds(50));
    ASSERT_TRUE(got.ok()) << got.error().message;
    for (const auto& d : *got) seen.push_back(d.position);
  }
  EXPECT_EQ(seen, std::vector<std::string>(ids.begin() + 4, ids.end()))
      << "the dead reader's entries after the position, then the new ones, each once";
}

namespace {

pid_t a_dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

}  // namespace

// One process reads a positioned group at a time: a second waits while the holder lives, takes
// over at once from a holder that died on this host, and when a holder elsewhere stops renewing
// its lease; a reader whose lease was taken learns it at its next poll.
TEST_F(StreamRetentionTest, ALeaseLetsOneProcessReadAPositionedGroup) {
  add("cdc.public.l", 3);
  const bus::BusOptions o = bus_options();
  bus::ConsumerOptions co = positioned("sink-l", "cdc.public.l", "holder");
  co.lease_ttl = std::chrono::milliseconds(300);
  auto holder = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(holder.ok());
  auto got = (*holder)->poll(1, std::chrono::milliseconds(50));
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->size(), 1u);

  co.consumer_name = "standby";
  auto standby = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(standby.ok());
  auto refused = (*standby)->poll(10, std::chrono::milliseconds(10));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Code::kUnavailable) << refused.error().message;

  // The holder's process is gone (its pid exited on this host): taken at once, and the entry
  // it had in hand is read again.
  const std::string dead =
      nlohmann::json{{"consumer", "holder"}, {"host", host_name()}, {"pid", a_dead_pid()}}.dump();
  ASSERT_TRUE(redis_.command({"SET", "hi:bus:lease:sink-l", dead, "PX", "60000"}).ok());
  auto taken = (*standby)->poll(10, std::chrono::milliseconds(10));
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ(taken->front().position, got->front().position);
  auto lost = (*holder)->poll(10, std::chrono::milliseconds(10));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().code, Code::kFailedPrecondition) << lost.error().message;

  // A holder on another host is waited for until its lease ends.
  ASSERT_TRUE(redis_
                  .command({"SET", "hi:bus:lease:sink-l",
                            R"({"consumer":"far","host":"elsewhere","pid":1})", "PX", "300"})
                  .ok());
  co.consumer_name = "third";
  auto third = bus::RedisStreamsConsumer::create(o, co);
  ASSERT_TRUE(third.ok());
  auto waits = (*third)->poll(10, std::chrono::milliseconds(10));
  EXPECT_FALSE(waits.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  auto after = (*third)->poll(10, std::chrono::milliseconds(10));
  ASSERT_TRUE(after.ok()) << after.error().message;
}

// Retention keeps what a positioned reader has not reported applied, though the group's
// last-delivered id is past it (NOACK: nothing pending says so).
TEST_F(StreamRetentionTest, TrimKeepsWhatAPositionedReaderHasNotApplied) {
  const auto ids = add("cdc.public.r", 1000);
  auto c =
      bus::RedisStreamsConsumer::create(bus_options(), positioned("sink-r", "cdc.public.r", "r"));
  ASSERT_TRUE(c.ok());
  auto got = (*c)->poll(950, std::chrono::milliseconds(100));
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 950u);
  ASSERT_TRUE((*c)->commit(std::vector<bus::Delivery>(got->begin(), got->begin() + 500)));
  auto trimmed = bus::trim_stream(redis_, "cdc.public.r", std::chrono::milliseconds(0));
  ASSERT_TRUE(trimmed.ok()) << trimmed.error().message;
  // MINID ~ removes whole stream nodes (100 entries each): at most the 500 applied.
  EXPECT_GE(*trimmed, 300);
  for (int i = 500; i < 1000; ++i) EXPECT_TRUE(has("cdc.public.r", ids[i])) << i;
  // Backlog: 450 in hand, 50 never read.
  auto lag = (*c)->lag();
  ASSERT_TRUE(lag.ok());
  EXPECT_EQ(*lag, 500);
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
