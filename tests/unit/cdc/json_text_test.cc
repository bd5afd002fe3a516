#include "cdc/internal/json_text.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace hi::cdc {
namespace {

using nlohmann::json;

TEST(JsonText, EscapesControlCharactersAndQuotes) {
  std::string out;
  internal::append_json_string(out, std::string("a\"b\\c\n\x01", 7));
  EXPECT_EQ(out, R"("a\"b\\c\n\u0001")");
  EXPECT_EQ(json::parse(out).get<std::string>(), std::string("a\"b\\c\n\x01", 7));
  EXPECT_EQ(internal::pg_timestamp_to_rfc3339("2026-11-22 10:00:00+00"),
            "2026-11-22T10:00:00.000000Z");
  EXPECT_EQ(internal::pg_timestamp_to_rfc3339("2026-11-22 10:00:00.123+02"),
            "2026-11-22T10:00:00.123000+02:00");
}

}  // namespace
}  // namespace hi::cdc
