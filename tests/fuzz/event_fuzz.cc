// The consumers' parser of bus deliveries (consume/event.h): outbox envelopes, Debezium-format
// payloads and table changes, with whatever headers, key and value the bus hands over.
//
// Input, text so that seeds and findings read as what they are:
//   line 1: the topic ("events.miner", "cdc.public.miners", ...)
//   line 2: the key
//   line 3: the headers, name=value pairs separated by tabs
//   rest:   the value
//
// Checks what consume/event.h promises of a parsed event: it has an id and a decimal tenant, and
// refers to its delivery. An exception escaping parse_event is a crash: the code's own boundary is
// the place to catch third-party exceptions (nlohmann::json), not this harness.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "consume/event.h"
#include "fuzz_support.h"

namespace {

using hi::fuzz::check;
using hi::fuzz::next_line;

hi::bus::Headers parse_headers(std::string_view line) {
  hi::bus::Headers headers;
  while (!line.empty()) {
    const auto tab = line.find('\t');
    const std::string_view item = line.substr(0, tab);
    line = tab == std::string_view::npos ? std::string_view() : line.substr(tab + 1);
    const auto eq = item.find('=');
    headers.emplace_back(std::string(item.substr(0, eq)),
                         eq == std::string_view::npos ? "" : std::string(item.substr(eq + 1)));
  }
  return headers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  hi::bus::Delivery d;
  d.topic = next_line(rest);
  d.key = next_line(rest);
  d.headers = parse_headers(next_line(rest));
  d.value = rest;
  d.position = "1700000000000-0";

  const auto event = hi::consume::parse_event(d);
  if (!event) {
    check(event.error().code == hi::Code::kInvalidArgument,
          "a poison delivery is kInvalidArgument");
    return 0;
  }
  check(!event->id.empty(), "a parsed event has an id");
  check(hi::consume::is_decimal_id(event->tenant_id), "a parsed event has a decimal tenant");
  check(event->delivery == &d, "a parsed event refers to its delivery");
  return 0;
}
