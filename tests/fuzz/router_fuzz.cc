// The relay's outbox router (cdc/router.h): RELAY_ROUTES parsing, and an outbox row turned into
// the bus message, which the consumers must then read back (consume/event.h).
//
// Input, text so that seeds and findings read as what they are:
//   line 1:  the route table spec, as in RELAY_ROUTES ("miner=outbox.miner,ops=x")
//   line 2:  options: first character 'd' for the Debezium format (else the envelope), then one
//            letter per outbox column in the order below: 't' text (also when missing), 'n' null,
//            'u' unchanged TOAST, 'b' binary, '-' column not in the relation at all
//   lines:   id, tenant_id, kind, user_id, entity_id, idempotency_key, seq, created_at, processed,
//            processed_at (one line each)
//   rest:    payload (last, so that it may span lines)
//
// Checks, besides "no crash": a routed message goes where the route table says, and when the row
// is one PostgreSQL could hold (valid UTF-8, integers where the table has bigint, a JSON object
// as payload, a kind of the checked shape, a user id) the message is valid JSON and parse_event
// reads back the id, kind, tenant, user and seq the relay wrote. The same row as a captured table
// change must parse too.
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "cdc/router.h"
#include "consume/event.h"
#include "fuzz_support.h"

namespace {

using hi::fuzz::check;
using hi::fuzz::is_utf8;
using hi::fuzz::next_line;
namespace cdc = hi::cdc;
namespace pg = hi::pg;

struct OutboxColumn {
  std::string_view name;
  std::uint32_t type_oid;
};

// public.event_outbox in table order (sql/migrations/004_events.sql).
constexpr std::array<OutboxColumn, 11> kColumns = {{
    {"id", 25},
    {"tenant_id", 20},
    {"kind", 25},
    {"user_id", 25},
    {"entity_id", 25},
    {"payload", 3802},
    {"idempotency_key", 25},
    {"seq", 20},
    {"created_at", 1184},
    {"processed", 16},
    {"processed_at", 1184},
}};
enum Field { kId, kTenant, kKind, kUser, kEntity, kPayload, kIdem, kSeq, kCreated };

// event_outbox_kind_shape: '^[a-z0-9_]+\.[a-z0-9_.]+$'.
bool is_kind(std::string_view kind) {
  const auto dot = kind.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == kind.size()) return false;
  for (std::size_t i = 0; i < kind.size(); ++i) {
    const char c = kind[i];
    const bool word = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!word && !(c == '.' && i >= dot)) return false;  // dots from the first one on
  }
  return true;
}

// The text form PostgreSQL prints for a bigint.
std::optional<std::int64_t> pg_bigint(std::string_view text) {
  if (text.empty() || text == "-" || text.starts_with("-0") ||
      (text.size() > 1 && text[0] == '0')) {
    return std::nullopt;
  }
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

hi::bus::Delivery as_delivery(const hi::bus::Message& m) {
  hi::bus::Delivery d;
  d.topic = m.topic;
  d.key = m.key;
  d.value = m.value;
  d.headers = m.headers;
  d.position = "1700000000000-0";
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view spec = next_line(rest);
  const std::string_view options = next_line(rest);
  std::array<std::string_view, kColumns.size()> values;
  for (std::size_t i = 0; i < kColumns.size(); ++i) {
    if (i != kPayload) values[i] = next_line(rest);
  }
  values[kPayload] = rest;

  auto routes = cdc::RouteTable::parse(spec, "events.dlq");
  if (!routes) {
    check(routes.error().code == hi::Code::kInvalidArgument,
          "a bad route spec is kInvalidArgument");
    return 0;
  }
  const auto route = routes->route(values[kKind]);
  check(!route.topic.empty(), "every kind routes to a topic");

  const bool debezium = !options.empty() && options[0] == 'd';
  pg::Relation rel;
  rel.id = 16400;
  rel.schema = "public";
  rel.name = "event_outbox";
  pg::Tuple row;
  bool realistic = true;  // a row PostgreSQL could have sent
  std::array<const pg::Column*, kColumns.size()> cells{};
  for (std::size_t i = 0; i < kColumns.size(); ++i) {
    const char letter = i + 1 < options.size() ? options[i + 1] : 't';
    if (letter == '-') {
      realistic = false;
      continue;
    }
    rel.columns.push_back({i == kId, std::string(kColumns[i].name), kColumns[i].type_oid, -1});
    pg::Column c;
    switch (letter) {
      case 'n':
        c.kind = pg::Column::Kind::kNull;
        break;
      case 'u':
        c.kind = pg::Column::Kind::kUnchangedToast;
        realistic = false;  // an INSERT has no unchanged columns
        break;
      case 'b':
        c.kind = pg::Column::Kind::kBinary;
        c.data = values[i];
        realistic = false;  // the relay does not ask for binary
        break;
      default:
        c.kind = pg::Column::Kind::kText;
        c.data = values[i];
        // PostgreSQL text is valid UTF-8 (in a UTF8 database) and never holds a NUL.
        realistic = realistic && is_utf8(c.data) && c.data.find('\0') == std::string::npos;
    }
    row.columns.push_back(std::move(c));
  }
  for (std::size_t i = 0, j = 0; i < kColumns.size() && j < rel.columns.size(); ++i) {
    if (rel.columns[j].name == kColumns[i].name) cells[i] = &row.columns[j++];
  }
  auto text = [&](Field f) -> std::optional<std::string_view> {
    const pg::Column* c = cells[f];
    if (c == nullptr || c->kind != pg::Column::Kind::kText) return std::nullopt;
    return c->data;
  };

  // What a row PostgreSQL could hold looks like: bigint text, jsonb text, timestamptz text.
  const auto payload = nlohmann::json::parse(text(kPayload).value_or(""), nullptr, false);
  const auto tenant = text(kTenant) ? pg_bigint(*text(kTenant)) : std::nullopt;
  const auto seq = text(kSeq) ? pg_bigint(*text(kSeq)) : std::nullopt;
  realistic = realistic && payload.is_object() && text(kId) && !text(kId)->empty() && tenant &&
              *tenant >= 0 && seq && text(kKind) && is_kind(*text(kKind)) && text(kUser) &&
              !text(kUser)->empty();
  if (const auto created = text(kCreated)) {
    for (const char ch : *created) realistic = realistic && ch > 0x20 && ch < 0x7f;
  }

  const cdc::ChangeSource source{pg::Lsn{0x16B3748}, 771, 1'700'000'000'000'000, 3};
  const cdc::OutboxRouter router(*routes,
                                 debezium ? cdc::Format::kDebezium : cdc::Format::kEnvelope);
  const auto message = router.route(rel, row, source);
  if (!message) {
    check(message.error().code == hi::Code::kInvalidArgument,
          "an unroutable row is kInvalidArgument");
    check(!realistic, "a row PostgreSQL could hold is routed");
    std::string reason;
    const auto parked = cdc::route_or_park(router, rel, row, source, "events.parked", &reason);
    check(parked.topic == "events.parked" && reason == message.error().message,
          "a refused row is parked with the reason");
  } else {
    check(message->topic == route.topic, "the message goes where the route table says");
    check(message->key == *text(kUser), "the key is the user id");
    if (realistic) {
      check(nlohmann::json::accept(message->value), "the message value is JSON");
      const auto delivery = as_delivery(*message);
      const auto event = hi::consume::parse_event(delivery);
      check(event.ok(), "the consumers parse what the relay routed");
      check(event->id == *text(kId), "the consumers read the event id");
      check(event->kind == *text(kKind), "the consumers read the kind");
      check(event->tenant_id == *text(kTenant), "the consumers read the tenant");
      check(event->user_id == *text(kUser), "the consumers read the user");
      if (debezium) {
        // The payload is the application's own JSON: nothing in it is the relay's metadata.
        check(event->seq == 0 && event->lsn.empty(),
              "the consumers take no seq or LSN from a Debezium payload");
      } else {
        check(event->seq == *seq, "the consumers read the seq");
        check(event->lsn == source.commit_lsn.to_string(), "the consumers read the commit LSN");
      }
    }
  }

  // The same row as a table change (an outbox table listed in RELAY_CAPTURE_TABLES).
  const auto change = cdc::capture_change(cdc::ChangeOp::kCreate, rel, nullptr, &row, source);
  check(change.topic == "cdc.public.event_outbox", "a change goes to cdc.<schema>.<table>");
  if (realistic) {
    check(nlohmann::json::accept(change.value), "the change event is JSON");
    const auto delivery = as_delivery(change);
    const auto event = hi::consume::parse_event(delivery);
    check(event.ok(), "the consumers parse a table change");
    check(event->kind == "cdc.c", "the consumers read the change op");
    check(event->tenant_id == *text(kTenant), "the consumers read the row's tenant");
  }
  return 0;
}
