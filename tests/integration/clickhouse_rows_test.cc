// The ClickHouse destination's two ways of sending rows (sinks/clickhouse_rows.h) against a real
// clickhouse-server: the same rows sent as JSONEachRow to one table and as RowBinary to a twin
// must read back the same. ClickHouse's own reading of the JSON text is the reference.
#include "sinks/clickhouse_rows.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "http/client.h"
#include "sinks/local_clickhouse.h"
#include "support/servers.h"

namespace hi {
namespace {

using nlohmann::json;

class ClickHouseRowsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    sinks::LocalClickHouseOptions o;
    o.data_dir = dir_->path() + "/clickhouse";
    auto s = sinks::LocalClickHouse::start(o, Logger("test"));
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  // `sql` with `body` as its data; the answer's body.
  static std::string ch(const std::string& sql, const std::string& body = "") {
    http::ClientRequest req;
    req.method = "POST";
    req.url = *http::parse_url(server_->url() + "/");
    req.url.target = "/?query=" + http::percent_encode(sql);
    req.body = body;
    req.timeout = std::chrono::seconds(30);
    auto r = http::fetch(req);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return "";
    EXPECT_EQ(r->status, 200) << sql << ": " << r->body;
    return r->body;
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline sinks::LocalClickHouse* server_ = nullptr;
};

sinks::RowImage row(const std::string& values, std::uint64_t lsn, std::uint32_t ordinal,
                    bool deleted = false) {
  sinks::RowImage r;
  r.values = json::parse(values);  // numbers typed as a change's are: parsed from JSON text
  r.version = {lsn, ordinal};
  r.deleted = deleted;
  return r;
}

// Every type the source's columns map to (clickhouse_column_type()), nullable and not.
const sinks::ClickHouseTypes kTypes = {{"k", "Int64"},
                                       {"s", "Nullable(String)"},
                                       {"key_s", "String"},
                                       {"b", "Nullable(UInt8)"},
                                       {"i16", "Nullable(Int16)"},
                                       {"i32", "Nullable(Int32)"},
                                       {"i64", "Nullable(Int64)"},
                                       {"f32", "Nullable(Float32)"},
                                       {"f64", "Nullable(Float64)"},
                                       {"u", "Nullable(UUID)"},
                                       {"we`ird", "Nullable(String)"}};

std::string create(const std::string& table) {
  std::string sql = "CREATE TABLE " + table + " (";
  for (const auto& [name, type] : kTypes)
    sql += sinks::quote_clickhouse_name(name) + " " + type + ", ";
  return sql + "_version UInt64, _ordinal UInt32, _is_deleted UInt8) ENGINE = MergeTree ORDER BY k";
}

TEST_F(ClickHouseRowsTest, RowBinaryReadsBackAsTheJsonText) {
  ch("DROP TABLE IF EXISTS by_json");
  ch("DROP TABLE IF EXISTS by_binary");
  ch(create("by_json"));
  ch(create("by_binary"));
  const std::vector<sinks::RowImage> rows = {
      row(R"({"k":1,"key_s":"plain","s":"quote \" backslash \\ newline \n tab \t bell \u0007",
              "b":true,"i16":-32768,"i32":2147483647,"i64":-9223372036854775808,"f32":0.1,
              "f64":0.1,"u":"61f0c404-5cb3-11e7-907b-a6006ad3dba0","we`ird":"x"})",
          1, 0),
      row(R"({"k":2,"key_s":"ünïcødé ✓ 𝄞","s":{"nested":[1,2.5,"three",null,true]},"b":false,
              "i16":32767,"i32":-2147483648,"i64":9223372036854775807,"f32":3.14159,
              "f64":-0.0,"u":"FFFFFFFF-0000-1111-2222-ABCDEFabcdef"})",
          9223372036854775813ULL, 4294967295U, true),
      row(R"({"k":-3,"key_s":"","s":12.5,"b":1,"i16":0,"i32":true,"i64":9007199254740993,
              "f32":16777216,"f64":1.7976931348623157e308,"u":null,"extra":"not in the table"})",
          7, 3),
      row(R"({"k":4,"key_s":"only the keys"})", 8, 0),
      row(R"({"k":5,"key_s":"x","s":true,"b":255,"f32":1e-7,"f64":9007199254740992,"i64":0,
              "s2":null})",
          9, 1),
      row(R"({"k":6,"key_s":"y","s":[],"f32":-123456.789,"f64":2.2250738585072014e-308,"i32":-1})",
          10, 2),
  };

  auto binary = sinks::row_binary(rows, kTypes);
  ASSERT_TRUE(binary.has_value()) << "every value here is one RowBinary writes exactly";
  ch("INSERT INTO by_json FORMAT JSONEachRow", sinks::json_each_row(rows, kTypes));
  ch("INSERT INTO by_binary " + sinks::row_binary_columns(kTypes) + " FORMAT RowBinary", *binary);

  const std::string select = " ORDER BY k FORMAT TSVWithNames";
  const std::string by_json = ch("SELECT * FROM by_json" + select);
  EXPECT_EQ(ch("SELECT * FROM by_binary" + select), by_json);
  // Six rows, and the JSON side read what it was meant to (not two empty tables alike).
  EXPECT_EQ(std::count(by_json.begin(), by_json.end(), '\n'), 7);
  EXPECT_NE(by_json.find("61f0c404-5cb3-11e7-907b-a6006ad3dba0"), std::string::npos);
  EXPECT_NE(by_json.find("ffffffff-0000-1111-2222-abcdefabcdef"), std::string::npos);
  EXPECT_NE(by_json.find("9223372036854775813\t4294967295\t1"), std::string::npos);
  // Floats print as the shortest text that reads back the same, so equal text is equal bits.

  // One place where the two differ: ClickHouse's reading of text turns a subnormal double into
  // 0. RowBinary keeps the source's value.
  ch("TRUNCATE TABLE by_binary");
  const std::vector<sinks::RowImage> tiny = {row(R"({"k":7,"key_s":"","f64":5e-324})", 11, 0)};
  binary = sinks::row_binary(tiny, kTypes);
  ASSERT_TRUE(binary.has_value());
  ch("INSERT INTO by_binary " + sinks::row_binary_columns(kTypes) + " FORMAT RowBinary", *binary);
  // The smallest double (denorm_min), as the shortest text that reads back as it.
  EXPECT_EQ(ch("SELECT f64 FROM by_binary"), "5e-324\n");
}

TEST(ClickHouseRows, ValuesRowBinaryWouldNotWriteAsJsonReadsThemGoAsJson) {
  const sinks::ClickHouseTypes types = {{"k", "Int64"}, {"v", "Nullable(Int32)"}};
  const auto one = [&](const std::string& v) {
    return sinks::row_binary({row(R"({"k":1,"v":)" + v + "}", 1, 0)}, types);
  };
  EXPECT_TRUE(one("7").has_value());
  EXPECT_TRUE(one("null").has_value());
  EXPECT_FALSE(one("\"7\"").has_value()) << "a string in a numeric column";
  EXPECT_FALSE(one("2147483648").has_value()) << "out of Int32's range";
  EXPECT_FALSE(one("1.5").has_value()) << "a fraction in an integer column";
  EXPECT_FALSE(one("{}").has_value());

  const auto typed = [](const std::string& type, const std::string& v) {
    return sinks::row_binary({row(R"({"k":1,"v":)" + v + "}", 1, 0)},
                             {{"k", "Int64"}, {"v", type}});
  };
  EXPECT_FALSE(typed("Nullable(UInt8)", "256").has_value());
  EXPECT_FALSE(typed("Nullable(UInt8)", "-1").has_value());
  EXPECT_FALSE(typed("Int64", "9223372036854775808").has_value());
  EXPECT_FALSE(typed("Nullable(Float64)", "9007199254740993").has_value())
      << "an integer a double does not hold exactly";
  EXPECT_FALSE(typed("Nullable(Float32)", "1e39").has_value());
  EXPECT_FALSE(typed("Nullable(UUID)", "\"61f0c404-5cb3-11e7-907b-a6006ad3dba\"").has_value());
  EXPECT_FALSE(typed("Nullable(UUID)", "\"61f0c404x5cb3-11e7-907b-a6006ad3dba0\"").has_value());
  EXPECT_FALSE(typed("Nullable(UUID)", "\"g1f0c404-5cb3-11e7-907b-a6006ad3dba0\"").has_value());
  EXPECT_FALSE(typed("Nullable(UUID)", "\"61f0c404-5cb3-11e7-907b-a6006ad3d-a-\"").has_value())
      << "hyphens in place of digits";
  EXPECT_FALSE(typed("Nullable(Date)", "\"2026-11-29\"").has_value()) << "a type not written";
  EXPECT_FALSE(typed("Int32", "null").has_value()) << "NULL in a column without it";
  EXPECT_FALSE(sinks::row_binary({row(R"({"v":1})", 1, 0)}, types).has_value())
      << "a row without its key";
  EXPECT_FALSE(sinks::row_binary({row(R"({"k":1})", 1, 0)}, {}).has_value());
}

}  // namespace
}  // namespace hi
