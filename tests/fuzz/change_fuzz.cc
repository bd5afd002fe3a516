// The sink's reading of table changes (sinks/change.h): parse_change(), which reads with simdjson,
// against parse_change_reference(), which reads with nlohmann. Whatever the bus hands over, both
// must agree: the same error, or the same change down to the type of every number.
//
// Input, text so that seeds and findings read as what they are:
//   line 1: the topic ("cdc.public.customers")
//   line 2: the key
//   rest:   the value
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.h"
#include "same_json.h"
#include "sinks/change.h"

namespace {

using hi::fuzz::check;
using hi::fuzz::next_line;
using hi::test::same_json;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  hi::bus::Delivery d;
  d.topic = next_line(rest);
  d.key = next_line(rest);
  d.value = rest;
  d.position = "1700000000000-0";

  for (const bool cached : {false, true}) {
    hi::sinks::TypesCache fast_cache, reference_cache;
    const auto fast = hi::sinks::parse_change(d, cached ? &fast_cache : nullptr);
    const auto reference =
        hi::sinks::parse_change_reference(d, cached ? &reference_cache : nullptr);
    check(fast.ok() == reference.ok(), "both readings accept the change, or neither");
    if (!fast.ok()) {
      check(fast.error().message == reference.error().message, "the same error");
      continue;
    }
    const hi::sinks::Change& a = *fast;
    const hi::sinks::Change& b = *reference;
    check(a.op == b.op && a.table == b.table && a.version == b.version && a.id == b.id,
          "the same op, table and version");
    check(a.commit_unix_us == b.commit_unix_us, "the same commit time");
    check(a.key_text == b.key_text, "the same key");
    check(same_json(a.after, b.after), "the same after image");
    check(same_json(a.before, b.before), "the same before image");
    check(a.unchanged == b.unchanged, "the same unchanged columns");
    check((a.types == nullptr) == (b.types == nullptr), "types in both, or in neither");
    if (a.types != nullptr) check(same_json(*a.types, *b.types), "the same types");
  }
  return 0;
}
