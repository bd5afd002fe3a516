// The pgoutput decoder, driven the way the relay drives it: one Decoder for the whole input, fed
// payload after payload, every decoded change routed through a RelationCache into the bus message
// the relay would publish.
//
// Input: a sequence of payloads, each a 2-byte big-endian length followed by that many bytes (a
// length past the end takes what is left). pgoutput_seeds.pl turns the recorded payloads of
// tests/data/pgoutput into seeds of this shape.
//
// Besides "no crash, no sanitizer report", checks what pg/pgoutput.h promises: errors are
// kDataLoss or kInvalidArgument with a message, an error leaves the Decoder's state unchanged, and
// a change carries an xid exactly when it was decoded inside a stream segment.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <variant>

#include "cdc/router.h"
#include "fuzz_support.h"
#include "pg/pgoutput.h"

namespace {

using hi::fuzz::check;
namespace cdc = hi::cdc;
namespace pg = hi::pg;

// Takes the next payload off the front of `rest`.
std::span<const std::uint8_t> next_payload(std::span<const std::uint8_t>& rest) {
  std::size_t n = rest.size();
  if (rest.size() >= 2) {
    n = static_cast<std::size_t>(rest[0]) << 8 | rest[1];
    rest = rest.subspan(2);
    if (n > rest.size()) n = rest.size();
  }
  const auto payload = rest.first(n);
  rest = rest.subspan(n);
  return payload;
}

class Pipeline {
 public:
  void feed(std::span<const std::uint8_t> payload) {
    const auto stream_before = decoder_.stream_xid();
    auto decoded = decoder_.decode(payload);
    if (!decoded) {
      const auto code = decoded.error().code;
      check(code == hi::Code::kDataLoss || code == hi::Code::kInvalidArgument,
            "decode fails with kDataLoss or kInvalidArgument");
      check(decoded.error().message.rfind("pgoutput", 0) == 0,
            "a decode error names pgoutput and the message kind");
      check(decoder_.stream_xid() == stream_before, "a failed decode leaves the state unchanged");
      return;
    }
    check(!pg::message_name(*decoded).empty(), "every message has a name");
    std::visit([&](const auto& m) { route(m, stream_before.has_value()); }, *decoded);
  }

 private:
  template <typename M>
  void route(const M& m, bool in_stream) {
    if constexpr (requires { m.xid.has_value(); }) {
      check(m.xid.has_value() == in_stream, "a change carries an xid exactly inside a stream");
    }
    if constexpr (std::is_same_v<M, pg::Begin>) {
      source_ = {m.final_lsn, m.xid, pg::pg_time_to_unix_us(m.commit_time_us), 0};
    } else if constexpr (std::is_same_v<M, pg::StreamStart>) {
      check(decoder_.stream_xid() == m.xid, "StreamStart opens a segment of its xid");
      source_.xid = m.xid;
    } else if constexpr (std::is_same_v<M, pg::StreamStop>) {
      check(!decoder_.in_stream(), "StreamStop closes the segment");
    } else if constexpr (std::is_same_v<M, pg::Relation>) {
      relations_.put(m);
    } else if constexpr (std::is_same_v<M, pg::Insert>) {
      if (const pg::Relation* rel = find(m.relation_id)) {
        if (cdc::is_table(*rel, "public.event_outbox")) {
          std::string parked;
          const auto routed =
              cdc::route_or_park(outbox_, *rel, m.new_tuple, source_, "events.dlq", &parked);
          check(!routed.topic.empty(), "an outbox row is routed or parked, never dropped");
          check(parked.empty() || routed.topic == "events.dlq", "a refused row is parked");
        } else {
          publish(
              cdc::capture_change(cdc::ChangeOp::kCreate, *rel, nullptr, &m.new_tuple, source_));
        }
      }
    } else if constexpr (std::is_same_v<M, pg::Update>) {
      if (const pg::Relation* rel = find(m.relation_id)) {
        const pg::Tuple* before = m.old_kind == pg::OldTupleKind::kNone ? nullptr : &m.old_tuple;
        publish(cdc::capture_change(cdc::ChangeOp::kUpdate, *rel, before, &m.new_tuple, source_));
      }
    } else if constexpr (std::is_same_v<M, pg::Delete>) {
      if (const pg::Relation* rel = find(m.relation_id)) {
        publish(cdc::capture_change(cdc::ChangeOp::kDelete, *rel, &m.old_tuple, nullptr, source_));
      }
    } else if constexpr (std::is_same_v<M, pg::Truncate>) {
      for (const auto id : m.relation_ids) {
        if (const pg::Relation* rel = find(id)) {
          publish(cdc::capture_change(cdc::ChangeOp::kTruncate, *rel, nullptr, nullptr, source_));
        }
      }
    }
  }

  const pg::Relation* find(std::uint32_t id) {
    ++source_.ordinal;
    return relations_.find(id);
  }

  static void publish(const hi::bus::Message& m) {
    check(m.topic.rfind("cdc.", 0) == 0, "a change event goes to cdc.<schema>.<table>");
    check(!m.value.empty() && m.value.front() == '{' && m.value.back() == '}',
          "a change event is a JSON object");
  }

  pg::Decoder decoder_;
  cdc::RelationCache relations_;
  cdc::OutboxRouter outbox_{cdc::RouteTable(), cdc::Format::kEnvelope};
  cdc::ChangeSource source_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> rest(data, size);
  Pipeline pipeline;
  while (!rest.empty()) pipeline.feed(next_payload(rest));
  return 0;
}
