// The sink's reading of the relay's table changes (sinks/change.h): what a change says, and that
// the fast reading (simdjson) and the reference reading (nlohmann) agree on every input, valid or
// not. Expected values are written out by hand from the message text.
#include "sinks/change.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "same_json.h"

namespace hi::sinks {
namespace {

bus::Delivery delivery(std::string value, std::string key = R"({"id":7})") {
  bus::Delivery d;
  d.topic = "cdc.public.customers";
  d.key = std::move(key);
  d.value = std::move(value);
  d.position = "1700000000000-0";
  return d;
}

// An update as the relay writes it (cdc/router.cc): types, both images, an unchanged TOAST
// column, the source.
constexpr const char* kUpdate =
    R"({"op":"u","types":{"id":"bigint","qty":"integer","price":"double precision",)"
    R"("note":"text","doc":"jsonb","ok":"boolean","big":"text"},)"
    R"("before":{"id":7,"qty":5,"price":1.5,"note":"old","doc":null,"ok":false,"big":null},)"
    R"("after":{"id":7,"qty":-2,"price":0.25,"note":"a\"b\\c\n\u00e9","doc":{"k":[1,"x"]},)"
    R"("ok":true},"unchanged":["big"],"source":{"commit_lsn":"0/16B3748","ordinal":3,)"
    R"("xid":771,"commit_ts":"2026-11-29T12:00:00.000001Z","table":"public.customers"}})";

TEST(ParseChange, ReadsWhatTheRelayWrote) {
  TypesCache cache;
  auto c = parse_change(delivery(kUpdate), &cache);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->op, 'u');
  EXPECT_EQ(c->table, "public.customers");
  EXPECT_EQ(c->version.lsn, 0x16B3748u);  // "0/16B3748": high 32 bits 0
  EXPECT_EQ(c->version.ordinal, 3u);
  EXPECT_EQ(c->id, "0/16B3748:3");
  EXPECT_EQ(c->commit_unix_us, 1795953600000001);  // 2026-11-29 12:00:00 UTC is 1795953600 s
  EXPECT_EQ(c->key_text, R"({"id":7})");
  ASSERT_TRUE(c->after.is_object());
  EXPECT_TRUE(c->after["id"].is_number_unsigned());  // as nlohmann reads a non-negative integer
  EXPECT_EQ(c->after["id"].get<std::uint64_t>(), 7u);
  EXPECT_TRUE(c->after["qty"].is_number_integer() && !c->after["qty"].is_number_unsigned());
  EXPECT_EQ(c->after["qty"].get<std::int64_t>(), -2);
  EXPECT_TRUE(c->after["price"].is_number_float());
  EXPECT_EQ(c->after["price"].get<double>(), 0.25);
  EXPECT_EQ(c->after["note"].get<std::string>(), "a\"b\\c\n\xC3\xA9");
  EXPECT_EQ(c->after["doc"].dump(), R"({"k":[1,"x"]})");
  EXPECT_EQ(c->after["ok"], true);
  EXPECT_FALSE(c->after.contains("big"));
  EXPECT_EQ(c->before["note"], "old");
  EXPECT_TRUE(c->before["doc"].is_null());
  EXPECT_EQ(c->unchanged, std::vector<std::string>{"big"});
  ASSERT_NE(c->types, nullptr);
  EXPECT_EQ(c->types->size(), 7u);
  EXPECT_EQ((*c->types)["price"], "double precision");

  // The next change of the topic with the same types shares them.
  auto next = parse_change(delivery(kUpdate), &cache);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->types.get(), c->types.get());
}

TEST(ParseChange, ATruncateHasNoKeyAndADeleteNoAfterImage) {
  auto t = parse_change(
      delivery(R"({"op":"t","types":{},"before":null,"after":null,"unchanged":[],"source":)"
               R"({"commit_lsn":"1/20","ordinal":1,"xid":6,"commit_ts":"2026-11-29T12:00:00Z",)"
               R"("table":"public.customers"}})",
               ""));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->op, 't');
  EXPECT_EQ(t->version.lsn, (std::uint64_t{1} << 32) + 0x20);  // "1/20"
  EXPECT_TRUE(t->key_text.empty());

  auto d = parse_change(
      delivery(R"({"op":"d","types":{"id":"bigint"},"before":{"id":7},"after":null,"unchanged":[],)"
               R"("source":{"commit_lsn":"0/10","ordinal":2,"table":"public.customers"}})"));
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_TRUE(d->after.is_null());
  EXPECT_EQ(d->before["id"], 7);
  EXPECT_EQ(d->commit_unix_us, 0);  // no commit_ts
}

// Every input is read the same by both readings: the same error, or the same change down to the
// type of each number.
TEST(ParseChange, TheFastReadingAgreesWithTheReference) {
  const std::string src =
      R"("source":{"commit_lsn":"0/10","ordinal":2,"table":"public.t","commit_ts":"2026-11-29T12:00:00Z"})";
  const std::vector<std::string> values = {
      kUpdate,
      std::string(kUpdate) + "  \n",  // trailing white space
      std::string(kUpdate) + "{}",    // trailing text
      "  " + std::string(kUpdate),    // leading white space
      R"({"op":"c","after":{"a":-0,"b":18446744073709551615,"c":18446744073709551616,)"
      R"("d":1e2,"e":-9223372036854775808,"f":1.0},)" +
          src + "}",
      R"({"op":"c","after":{"a":1e400},)" + src + "}",     // out of range
      R"({"op":"c","after":{"a":"\ud800"},)" + src + "}",  // lone surrogate
      R"({"op":"c","after":{"a":"\u0000"},)" + src + "}",
      R"({"op":"c","after":{"a":1,"a":2},)" + src + "}",       // duplicate column: the last
      R"({"op":"c","after":{"a":1},"x":[1,,2],)" + src + "}",  // a bad field nobody reads
      R"({"op":"c","after":{"a":1},)" + src +
          R"(,"source":{"commit_lsn":"0/20","ordinal":3,"table":"public.t"}})",
      R"({"op":"c","after":{"a":1},"source":{"commit_lsn":"0/10","ordinal":2,"table":"public.t","commit_ts":7}})",
      R"({"op":"c","after":{"a":1},"source":{"commit_lsn":"0/10","ordinal":-1,"table":"public.t"}})",
      R"({"op":"c","after":{"a":1},"source":{"commit_lsn":"0/10","ordinal":1.0,"table":"public.t"}})",
      R"({"op":"c","after":{"a":1},"source":{"commit_lsn":"zz","ordinal":1,"table":"public.t"}})",
      R"({"op":"c","after":{"a":1},"source":{"ordinal":1,"table":"public.t"}})",
      R"({"op":"c","after":{"a":1},"source":{"commit_lsn":"0/1","ordinal":1,"table":7}})",
      R"({"op":"x","after":{"a":1},)" + src + "}",
      R"({"op":"cc","after":{"a":1},)" + src + "}",
      R"({"op":"c","op":"u","after":{"a":1},)" + src + "}",
      R"({"op":"c","after":null,)" + src + "}",
      R"({"op":"c","after":[1],)" + src + "}",
      R"({"op":"d","after":5,)" + src + "}",
      R"({"op":"c","after":{"a":1},"unchanged":"a",)" + src + "}",
      R"({"op":"c","after":{"a":1},"unchanged":[1],)" + src + "}",
      R"({"op":"c","after":{"a":1},"unchanged":["a"],"unchanged":["b"],)" + src + "}",
      R"({"op":"c","types":{"a":1},"after":{"a":1},)" + src + "}",
      R"({"op":"c","types":null,"after":{"a":1},)" + src + "}",
      R"({"op":"c","types":{"a":"int"},"after":{"a":1},"types":{"a":"text"},)" + src + "}",
      R"({"op":"c","after":{"a":1},)" + src,  // unterminated
      R"(["op","c"])",
      "not json",
      "",
  };
  const std::vector<std::string> keys = {R"({"id":7})", "", " [1]", R"(  {"a":1})"};
  for (const auto& value : values) {
    for (const auto& key : keys) {
      for (const bool cached : {false, true}) {
        SCOPED_TRACE(value + " key " + key + (cached ? " cached" : ""));
        TypesCache fast_cache, reference_cache;
        const auto fast = parse_change(delivery(value, key), cached ? &fast_cache : nullptr);
        const auto reference =
            parse_change_reference(delivery(value, key), cached ? &reference_cache : nullptr);
        ASSERT_EQ(fast.ok(), reference.ok()) << (fast.ok() ? reference : fast).error().message;
        if (!fast.ok()) {
          EXPECT_EQ(fast.error().message, reference.error().message);
          continue;
        }
        EXPECT_EQ(fast->op, reference->op);
        EXPECT_EQ(fast->table, reference->table);
        EXPECT_EQ(fast->version, reference->version);
        EXPECT_EQ(fast->id, reference->id);
        EXPECT_EQ(fast->commit_unix_us, reference->commit_unix_us);
        EXPECT_EQ(fast->key_text, reference->key_text);
        EXPECT_TRUE(test::same_json(fast->after, reference->after))
            << fast->after << " vs " << reference->after;
        EXPECT_TRUE(test::same_json(fast->before, reference->before));
        EXPECT_EQ(fast->unchanged, reference->unchanged);
        ASSERT_EQ(fast->types == nullptr, reference->types == nullptr);
        if (fast->types) EXPECT_TRUE(test::same_json(*fast->types, *reference->types));
      }
    }
  }
}

}  // namespace
}  // namespace hi::sinks
