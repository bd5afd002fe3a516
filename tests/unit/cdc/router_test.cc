#include "cdc/router.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace hi::cdc {
namespace {

using nlohmann::json;
using pg::Column;

pg::Relation outbox_relation() {
  pg::Relation r;
  r.id = 16400;
  r.schema = "public";
  r.name = "event_outbox";
  for (const char* c : {"id", "tenant_id", "kind", "user_id", "entity_id", "payload",
                        "idempotency_key", "seq", "created_at", "processed", "processed_at"}) {
    r.columns.push_back({std::string_view(c) == "id", c, 25, -1});
  }
  return r;
}

pg::Tuple outbox_row(const std::string& kind, const std::string& payload = R"({"model_id":3})") {
  auto t = [](std::string v) { return Column{Column::Kind::kText, std::move(v)}; };
  const Column null{Column::Kind::kNull, {}};
  return pg::Tuple{{t("0190-id"), t("1"), t(kind), t("101"), t("miner-9"), t(payload), null,
                    t("42"), t("2026-11-22 10:00:00.5+00"), t("f"), null}};
}

ChangeSource source() {
  ChangeSource s;
  s.commit_lsn = pg::Lsn{0x16B3748};
  s.xid = 771;
  s.commit_time_unix_us = 1'763'805'600'000'001;
  s.ordinal = 3;
  return s;
}
TEST(RouteTable, RoutesByKindPrefixWithOverridesAndUnknowns) {
  auto routes = RouteTable::parse("miner=outbox.event.miner,audit=events.ops", "events.dlq");
  ASSERT_TRUE(routes.ok());
  EXPECT_EQ(routes->route("miner.added").topic, "outbox.event.miner");
  EXPECT_EQ(routes->route("treasury.trade_executed").topic, "events.treasury");
  EXPECT_EQ(routes->route("ops.schedule_created").topic, "events.ops");
  EXPECT_EQ(routes->route("crm.customer_created").topic, "events.crm");
  EXPECT_EQ(routes->route("audit.x").topic, "events.ops");
  const auto unknown = routes->route("weather.changed");
  EXPECT_EQ(unknown.topic, "events.dlq");
  EXPECT_FALSE(unknown.known);
}

TEST(RouteTable, RejectsMalformedSpecs) {
  EXPECT_FALSE(RouteTable::parse("miner", "events.dlq").ok());
  EXPECT_FALSE(RouteTable::parse("=topic", "events.dlq").ok());
  EXPECT_FALSE(RouteTable::parse("miner=", "events.dlq").ok());
  EXPECT_TRUE(RouteTable::parse("", "events.dlq").ok());
}

TEST(OutboxRouter, BuildsTheEnvelopeOfTheContract) {
  OutboxRouter router(*RouteTable::parse("", "events.dlq"), Format::kEnvelope);
  auto m = router.route(outbox_relation(), outbox_row("miner.added"), source());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->topic, "events.miner");
  EXPECT_EQ(m->key, "101");
  const bus::Headers expected = {{"id", "0190-id"}, {"kind", "miner.added"}, {"tenant_id", "1"}};
  EXPECT_EQ(m->headers, expected);
  const json v = json::parse(m->value);
  EXPECT_EQ(v, json::parse(R"({
    "id": "0190-id", "kind": "miner.added", "tenant_id": "1", "user_id": "101",
    "entity_id": "miner-9", "idempotency_key": null, "seq": 42, "payload": {"model_id": 3},
    "created_at": "2026-11-22T10:00:00.500000Z",
    "source": {"commit_lsn": "0/16B3748", "ordinal": 3, "xid": 771,
               "commit_ts": "2025-11-22T10:00:00.000001Z"}})"));
}

TEST(OutboxRouter, DebeziumFormatCarriesPayloadAndEventType) {
  OutboxRouter router(*RouteTable::parse("miner=outbox.event.miner", "events.dlq"),
                      Format::kDebezium);
  auto m = router.route(outbox_relation(), outbox_row("miner.added"), source());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->topic, "outbox.event.miner");
  EXPECT_EQ(m->value, R"({"model_id":3})");
  EXPECT_EQ(m->headers[0], (std::pair<std::string, std::string>{"id", "0190-id"}));
  EXPECT_EQ(m->headers[1], (std::pair<std::string, std::string>{"eventType", "miner.added"}));
}

TEST(OutboxRouter, UnknownKindCarriesAReason) {
  OutboxRouter router(*RouteTable::parse("", "events.dlq"), Format::kEnvelope);
  auto m = router.route(outbox_relation(), outbox_row("weather.changed"), source());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->topic, "events.dlq");
  EXPECT_EQ(m->headers.back().first, "reason");
  EXPECT_NE(m->headers.back().second.find("weather.changed"), std::string::npos);
}

TEST(OutboxRouter, RejectsRowsThePlatformCouldNotHaveWritten) {
  OutboxRouter router(*RouteTable::parse("", "events.dlq"), Format::kEnvelope);
  auto not_object = router.route(outbox_relation(), outbox_row("miner.added", "[1,2]"), source());
  ASSERT_FALSE(not_object.ok());
  EXPECT_NE(not_object.error().message.find("not a JSON object"), std::string::npos);
  pg::Tuple no_kind = outbox_row("miner.added");
  no_kind.columns[2] = Column{Column::Kind::kNull, {}};
  EXPECT_FALSE(router.route(outbox_relation(), no_kind, source()).ok());
  pg::Tuple short_row;  // truncated: fewer columns than the relation
  EXPECT_FALSE(router.route(outbox_relation(), short_row, source()).ok());
}

TEST(CaptureChange, UnchangedToastIsNamedNotNulled) {
  pg::Relation rel;
  rel.schema = "public";
  rel.name = "miners";
  rel.columns = {{true, "id", 23, -1}, {false, "notes", 25, -1}, {false, "online", 16, -1}};
  pg::Tuple after{{{Column::Kind::kText, "7"},
                   {Column::Kind::kUnchangedToast, {}},
                   {Column::Kind::kText, "t"}}};
  auto m = capture_change(ChangeOp::kUpdate, rel, nullptr, &after, source());
  EXPECT_EQ(m.topic, "cdc.public.miners");
  EXPECT_EQ(m.key, R"({"id":7})");
  const json v = json::parse(m.value);
  EXPECT_EQ(v["op"], "u");
  EXPECT_EQ(v["after"], json::parse(R"({"id":7,"online":true})"));
  EXPECT_EQ(v["unchanged"], json::array({"notes"}));
  EXPECT_EQ(m.headers[0].second, "0/16B3748:3");
}

}  // namespace
}  // namespace hi::cdc
