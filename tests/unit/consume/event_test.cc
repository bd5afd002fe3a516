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
  EXPECT_EQ(e->xid, 740u);
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

// Each field of the wrong type, as a producer with a bug would write it: an error, never an
// exception (nlohmann's value() throws on these).
TEST(ParseEvent, RejectsFieldsOfTheWrongTypeWithoutThrowing) {
  const std::string src =
      R"("source":{"commit_lsn":"0/16B3748","ordinal":1,"xid":740,"commit_ts":"2026-11-22T10:00:00.000000Z"})";
  const std::vector<std::pair<std::string, std::string>> envelopes = {
      {"kind", R"({"id":"e1","kind":7,)" + src + "}"},
      {"source", R"({"id":"e1","kind":"miner.added","source":"relay"})"},
      {"source", R"({"id":"e1","kind":"miner.added","source":[1,2]})"},
      {"commit_lsn", R"({"id":"e1","kind":"miner.added","source":{"commit_lsn":5,"ordinal":1}})"},
      {"ordinal",
       R"({"id":"e1","kind":"miner.added","source":{"commit_lsn":"0/1","ordinal":"x"}})"},
      {"xid", R"({"id":"e1","kind":"miner.added","source":{"commit_lsn":"0/1","xid":"740"}})"},
      {"seq", R"({"id":"e1","kind":"miner.added","seq":"7",)" + src + "}"},
      {"id", R"({"id":{"a":1},"kind":"miner.added",)" + src + "}"},
      {"tenant_id", R"({"id":"e1","tenant_id":[1],)" + src + "}"},
  };
  for (const auto& [field, value] : envelopes) {
    bus::Delivery d;
    d.topic = "events.miner";
    d.position = "1-0";
    d.key = "101";
    d.value = value;
    d.headers = {{"id", "e1"}, {"tenant_id", "1"}};
    Result<Event> e = invalid_argument("");
    EXPECT_NO_THROW(e = parse_event(d)) << value;
    ASSERT_FALSE(e.ok()) << value;
    EXPECT_EQ(e.error().code, Code::kInvalidArgument);
    EXPECT_NE(e.error().message.find(field), std::string::npos) << e.error().message;
  }
  const std::vector<std::string> changes = {
      R"({"op":1,"after":{"id":1}})",
      R"({"op":"u","after":{"id":1},"source":"x"})",
      R"({"op":"u","after":{"id":1},"source":{"commit_lsn":["0/1"]}})",
      R"({"op":"u","after":{"id":1},"source":{"commit_lsn":"0/1","ordinal":1.5}})",
      R"({"op":"u","after":{"id":1,"tenant_id":true}})",
  };
  for (const auto& value : changes) {
    bus::Delivery d;
    d.topic = "cdc.public.user_miners";
    d.value = value;
    Result<Event> e = invalid_argument("");
    EXPECT_NO_THROW(e = parse_event(d)) << value;
    EXPECT_FALSE(e.ok()) << value;
  }
}

TEST(ParseEvent, DebeziumPayloadMayHoldAnyFields) {
  bus::Delivery d;
  d.topic = "outbox.event.miner";
  d.key = "102";
  d.value = R"({"source":"web","kind":3})";
  d.headers = {{"id", "e2"}, {"eventType", "miner.added"}, {"tenant_id", "2"}};
  auto e = parse_event(d);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->kind, "miner.added");
}

TEST(ParseEvent, RejectsIdsAndTenantsTheDatabaseCannotStore) {
  for (const std::string& id : {std::string("e\xff"
                                            "1"),
                                std::string("e\0"
                                            "1",
                                            3),
                                std::string(600, 'x')}) {
    auto d = envelope_delivery();
    d.headers[0].second = id;
    EXPECT_FALSE(parse_event(d).ok());
  }
  auto d = envelope_delivery();
  d.headers[2].second = "12345678901234567890";  // 20 digits: beyond bigint
  EXPECT_EQ(parse_event(d).error().code, Code::kInvalidArgument);
  d = envelope_delivery();
  d.key = "10\xc3";  // cut inside a UTF-8 sequence
  EXPECT_FALSE(parse_event(d).ok());
}

TEST(IsDecimalId, AcceptsDigitsOnly) {
  EXPECT_TRUE(is_decimal_id("101"));
  EXPECT_FALSE(is_decimal_id(""));
  EXPECT_FALSE(is_decimal_id("-1"));
  EXPECT_FALSE(is_decimal_id("1e3"));
  EXPECT_FALSE(is_decimal_id("12345678901234567890"));
}

TEST(IsDecimalId, AcceptsWhatFitsABigintOnly) {
  EXPECT_TRUE(is_decimal_id("9223372036854775807"));
  EXPECT_FALSE(is_decimal_id("9223372036854775808"));
  EXPECT_FALSE(is_decimal_id("9999999999999999999"));
}

}  // namespace
}  // namespace hi::consume
