#include "consume/event.h"

#include <gtest/gtest.h>

namespace hi::consume {
namespace {

bus::Delivery envelope_delivery() {
  bus::Delivery d;
  d.topic = "events.miner";
  d.position = "1700000000000-0";
  d.key = "101";
  d.value =
      R"({"id":"e1","kind":"miner.added","tenant_id":"1","user_id":"101","entity_id":null,)"
      R"("idempotency_key":null,"seq":7,"payload":{"model_id":1},"created_at":"2026-11-22T10:00:00.000000Z",)"
      R"("source":{"commit_lsn":"0/16B3748","ordinal":1,"xid":740,"commit_ts":"2026-11-22T10:00:00.000000Z"}})";
  d.headers = {{"id", "e1"}, {"kind", "miner.added"}, {"tenant_id", "1"}};
  return d;
}

TEST(ParseEvent, ReadsTheRelayEnvelope) {
  const auto d = envelope_delivery();
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->id, "e1");
  EXPECT_EQ(e->kind, "miner.added");
  EXPECT_EQ(e->tenant_id, "1");
  EXPECT_EQ(e->user_id, "101");
  EXPECT_EQ(e->seq, 7);
  EXPECT_EQ(e->lsn, "0/16B3748");
  EXPECT_EQ(e->delivery, &d);
}

TEST(ParseEvent, FallsBackToTheEnvelopeWhenHeadersAreMissing) {
  auto d = envelope_delivery();
  d.headers.clear();
  d.key.clear();
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->id, "e1");
  EXPECT_EQ(e->tenant_id, "1");
  EXPECT_EQ(e->user_id, "101");
}

TEST(ParseEvent, DebeziumPayloadUsesHeaders) {
  bus::Delivery d;
  d.topic = "outbox.event.miner";
  d.key = "102";
  d.value = R"({"model_id":3})";
  d.headers = {{"id", "e2"}, {"eventType", "miner.added"}, {"tenant_id", "2"}};
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->kind, "miner.added");
  EXPECT_EQ(e->tenant_id, "2");
  EXPECT_EQ(e->seq, 0);
}

TEST(ParseEvent, TableChangeTakesTenantFromTheRow) {
  bus::Delivery d;
  d.topic = "cdc.public.user_miners";
  d.key = R"({"id":5})";
  d.value =
      R"({"op":"u","before":null,"after":{"id":5,"tenant_id":2,"quantity":3},"unchanged":[],)"
      R"("source":{"commit_lsn":"0/1A","ordinal":3,"xid":9,"commit_ts":"2026-11-22T10:00:00.000000Z","table":"public.user_miners"}})";
  d.headers = {{"id", "0/1A:3"}, {"op", "u"}, {"table", "public.user_miners"}};
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->id, "0/1A:3");
  EXPECT_EQ(e->kind, "cdc.u");
  EXPECT_EQ(e->tenant_id, "2");
  EXPECT_TRUE(e->user_id.empty());
}

TEST(ParseEvent, GlobalTableChangeGoesToTenantZero) {
  bus::Delivery d;
  d.topic = "cdc.public.miner_models";
  d.value =
      R"({"op":"d","before":{"id":1},"after":null,"unchanged":[],"source":{"commit_lsn":"0/1B","ordinal":1}})";
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->tenant_id, "0");
  EXPECT_EQ(e->id, "0/1B:1");
}

TEST(ParseEvent, RejectsWhatCannotBeDeduplicatedOrScoped) {
  bus::Delivery no_id;
  no_id.topic = "events.miner";
  no_id.value = "{}";
  no_id.headers = {{"tenant_id", "1"}};
  EXPECT_FALSE(parse_event(no_id).ok());

  auto bad_tenant = envelope_delivery();
  bad_tenant.headers = {{"id", "e1"}, {"kind", "miner.added"}, {"tenant_id", "acme"}};
  EXPECT_EQ(parse_event(bad_tenant).error().code, Code::kInvalidArgument);

  bus::Delivery garbage;
  garbage.topic = "events.miner";
  garbage.value = "not json{";
  garbage.headers = {{"id", "e3"}, {"tenant_id", "1"}};
  EXPECT_FALSE(parse_event(garbage).ok());
}

TEST(IsDecimalId, AcceptsDigitsOnly) {
  EXPECT_TRUE(is_decimal_id("101"));
  EXPECT_FALSE(is_decimal_id(""));
  EXPECT_FALSE(is_decimal_id("-1"));
  EXPECT_FALSE(is_decimal_id("1e3"));
  EXPECT_FALSE(is_decimal_id("12345678901234567890"));
}

}  // namespace
}  // namespace hi::consume
