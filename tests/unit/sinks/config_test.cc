// The sinks' YAML configuration: a full example read back field by field, defaults, and the
// errors a user sees (file, 1-based line, reason) for each kind of mistake.
#include "sinks/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "scratch_dir.h"

namespace hi::sinks {
namespace {

namespace fs = std::filesystem;

// The test's own directory.
class TempDir : public test::ScratchDir {
 public:
  TempDir() : ScratchDir("hi-sinks-config") {}
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// The message of a config that must be refused (kInvalidArgument), or a note that it was not.
std::string error_of(const std::string& yaml) {
  auto r = parse_sinks_config(yaml, "sinks.yaml");
  if (r.ok()) return "<accepted>";
  EXPECT_EQ(r.error().code, Code::kInvalidArgument) << r.error().to_string();
  return r.error().message;
}

// A valid destination to which each error test adds one mistake (line 1 is `destinations:`).
constexpr const char* kHead = R"(destinations:
  - name: warehouse
    type: clickhouse
    url: http://127.0.0.1:8123/analytics
    tables:
      - source: public.customers
)";

TEST(SinksConfig, ReadsAFullExample) {
  TempDir dir;
  const std::string ca = dir.path() + "/ca.pem";
  write_file(ca, "-----BEGIN CERTIFICATE-----\n");
  const std::string yaml = R"(# sinks
destinations:
  - name: warehouse
    type: clickhouse
    url: http://127.0.0.1:8123/analytics
    tables:
      - source: public.customers
        target: customers
        default: keep
        columns:
          email: {mask: email-domain, pii: true}
          card:  {mask: partial, keep_last: 4, pii: true}
          ssn:   {mask: hmac-sha256, pii: true}
          notes: {mask: drop}
          phone: {mask: partial}
      - source: sales.orders
        target: orders_v2
        default: drop
        columns:
          id: {mask: keep}
          customer_email: {pii: true}
          total: {mask: sha256}
  - name: replica-2
    type: postgres
    url: postgresql://sink@db2:5432/replica
    tls: {ca_file: )" + ca +
                           R"(, sslmode: verify-full}
    tables:
      - source: public.customers
        columns:
          email: {mask: redact, pii: yes}
          age: {mask: null, pii: false}
)";
  auto r = parse_sinks_config(yaml, "sinks.yaml");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  const SinksConfig& config = *r;
  ASSERT_EQ(config.destinations.size(), 2u);

  const DestinationSpec* warehouse = config.destination("warehouse");
  ASSERT_NE(warehouse, nullptr);
  EXPECT_EQ(warehouse->type, DestinationType::kClickHouse);
  EXPECT_EQ(warehouse->url, "http://127.0.0.1:8123/analytics");
  EXPECT_EQ(warehouse->tls.sslmode, "");
  EXPECT_EQ(warehouse->tls.ca_file, "");
  ASSERT_EQ(warehouse->tables.size(), 2u);

  const TableSpec* customers = warehouse->table("public.customers");
  ASSERT_NE(customers, nullptr);
  EXPECT_EQ(customers->target, "customers");
  EXPECT_EQ(customers->default_mask, Mask::kKeep);
  EXPECT_EQ(customers->columns.size(), 5u);
  EXPECT_EQ(customers->rule("email").mask, Mask::kEmailDomain);
  EXPECT_TRUE(customers->rule("email").pii);
  EXPECT_EQ(customers->rule("card").mask, Mask::kPartial);
  EXPECT_EQ(customers->rule("card").keep_last, 4);
  EXPECT_EQ(customers->rule("ssn").mask, Mask::kHmacSha256);
  EXPECT_EQ(customers->rule("notes").mask, Mask::kDrop);
  EXPECT_FALSE(customers->rule("notes").pii);
  EXPECT_EQ(customers->rule("phone").keep_last, 4);      // the default
  EXPECT_EQ(customers->rule("name").mask, Mask::kKeep);  // unlisted: the table's default
  EXPECT_FALSE(customers->rule("name").pii);

  const TableSpec* orders = warehouse->table("sales.orders");
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ(orders->target, "orders_v2");
  EXPECT_EQ(orders->default_mask, Mask::kDrop);
  EXPECT_EQ(orders->rule("id").mask, Mask::kKeep);
  // pii without a mask under `default: drop` is dropped, which is allowed.
  EXPECT_EQ(orders->rule("customer_email").mask, Mask::kDrop);
  EXPECT_TRUE(orders->rule("customer_email").pii);
  EXPECT_EQ(orders->rule("total").mask, Mask::kSha256);
  EXPECT_EQ(orders->rule("anything_else").mask, Mask::kDrop);
  EXPECT_EQ(warehouse->table("public.missing"), nullptr);

  const DestinationSpec* replica = config.destination("replica-2");
  ASSERT_NE(replica, nullptr);
  EXPECT_EQ(replica->type, DestinationType::kPostgres);
  EXPECT_EQ(replica->url, "postgresql://sink@db2:5432/replica");
  EXPECT_EQ(replica->tls.sslmode, "verify-full");
  EXPECT_EQ(replica->tls.ca_file, ca);
  ASSERT_EQ(replica->tables.size(), 1u);
  EXPECT_EQ(replica->tables[0].target, "customers");  // defaulted from the source
  EXPECT_EQ(replica->tables[0].rule("email").mask, Mask::kRedact);
  EXPECT_TRUE(replica->tables[0].rule("email").pii);
  EXPECT_EQ(replica->tables[0].rule("age").mask, Mask::kNull);
  EXPECT_FALSE(replica->tables[0].rule("age").pii);

  EXPECT_EQ(config.destination("nope"), nullptr);
  EXPECT_EQ(config.source_tables(), (std::vector<std::string>{"public.customers", "sales.orders"}));
}

TEST(SinksConfig, NamesMasksAndTypes) {
  for (Mask m : {Mask::kKeep, Mask::kDrop, Mask::kRedact, Mask::kNull, Mask::kSha256,
                 Mask::kHmacSha256, Mask::kPartial, Mask::kEmailDomain}) {
    const std::string yaml = std::string(kHead) + "        default: drop\n" +
                             "        columns:\n          c: {mask: " + std::string(to_string(m)) +
                             "}\n";
    auto r = parse_sinks_config(yaml, "sinks.yaml");
    ASSERT_TRUE(r.ok()) << to_string(m) << ": " << r.error().to_string();
    EXPECT_EQ(r->destinations[0].tables[0].rule("c").mask, m);
  }
  // YAML reads `null` and `~` as a null rather than text: both still mean the mask null.
  for (const char* spelling : {"~", "\"null\""}) {
    auto r = parse_sinks_config(
        std::string(kHead) + "        columns:\n          c: {mask: " + spelling + ", pii: true}\n",
        "sinks.yaml");
    ASSERT_TRUE(r.ok()) << spelling << ": " << r.error().to_string();
    EXPECT_EQ(r->destinations[0].tables[0].rule("c").mask, Mask::kNull);
  }
  EXPECT_EQ(to_string(Mask::kHmacSha256), "hmac-sha256");
  EXPECT_EQ(to_string(Mask::kEmailDomain), "email-domain");
  EXPECT_EQ(to_string(DestinationType::kPostgres), "postgres");
  EXPECT_EQ(to_string(DestinationType::kClickHouse), "clickhouse");
}

TEST(SinksConfig, AcceptsBothPostgresSchemesAndHttps) {
  for (const char* url : {"postgresql://h/db", "postgres://h/db"}) {
    auto r = parse_sinks_config(std::string("destinations:\n  - name: a\n    type: postgres\n") +
                                    "    url: " + url + "\n    tables: [{source: s.t}]\n",
                                "sinks.yaml");
    EXPECT_TRUE(r.ok()) << url << ": " << r.error().to_string();
  }
  auto r = parse_sinks_config(
      "destinations:\n  - name: a\n    type: clickhouse\n    url: https://ch:8443/db\n"
      "    tables: [{source: s.t}]\n",
      "sinks.yaml");
  EXPECT_TRUE(r.ok()) << r.error().to_string();
}

TEST(SinksConfigErrors, UnknownTypeNamesTheLine) {
  EXPECT_EQ(error_of(R"(destinations:
  - name: warehouse
    type: mysql
    url: http://x
    tables: [{source: public.t}]
)"),
            "sinks.yaml:3: destination 'warehouse': unknown type 'mysql' (postgres or clickhouse)");
}

TEST(SinksConfigErrors, PiiColumnThatWouldBeKeptIsRefused) {
  EXPECT_EQ(error_of(std::string(kHead) + R"(        columns:
          name: {mask: redact}
          email: {mask: keep, pii: true}
)"),
            "sinks.yaml:9: destination 'warehouse': column 'email' of public.customers is pii "
            "and would be sent in clear (mask: keep)");
}

TEST(SinksConfigErrors, PiiColumnWithoutMaskUnderDefaultKeepIsRefused) {
  EXPECT_EQ(error_of(std::string(kHead) + R"(        default: keep
        columns:
          email: {pii: true}
)"),
            "sinks.yaml:9: destination 'warehouse': column 'email' of public.customers is pii "
            "and would be sent in clear (mask: keep)");
  // Without `default`, the default is keep too.
  EXPECT_EQ(error_of(std::string(kHead) + "        columns:\n          email: {pii: true}\n"),
            "sinks.yaml:8: destination 'warehouse': column 'email' of public.customers is pii "
            "and would be sent in clear (mask: keep)");
}

TEST(SinksConfigErrors, MisspeltMaskIsAnUnknownKey) {
  const std::string message = error_of(std::string(kHead) + R"(        columns:
          email: {mask: redact}
          ssn: {maks: hmac-sha256}
)");
  EXPECT_EQ(message.rfind("sinks.yaml:9: ", 0), 0u) << message;
  EXPECT_NE(message.find("unknown key 'maks'"), std::string::npos) << message;
}

TEST(SinksConfigErrors, UnknownKeysAtEveryLevel) {
  EXPECT_EQ(error_of("destinations: []\nsinks: 1\n").rfind("sinks.yaml:2: unknown key 'sinks'", 0),
            0u);
  std::string m = error_of(R"(destinations:
  - name: a
    type: postgres
    url: postgres://h/db
    port: 5432
    tables: [{source: s.t}]
)");
  EXPECT_EQ(m.rfind("sinks.yaml:5: destination 'a': unknown key 'port'", 0), 0u) << m;
  m = error_of(std::string(kHead) + "        tagret: c\n");
  EXPECT_EQ(m.rfind("sinks.yaml:7: destination 'warehouse': unknown key 'tagret'", 0), 0u) << m;
  m = error_of(R"(destinations:
  - name: a
    type: postgres
    url: postgres://h/db
    tls:
      sslmod: require
    tables: [{source: s.t}]
)");
  EXPECT_EQ(m.rfind("sinks.yaml:6: destination 'a': unknown key 'sslmod'", 0), 0u) << m;
}

TEST(SinksConfigErrors, DuplicateDestinationName) {
  EXPECT_EQ(error_of(R"(destinations:
  - name: a
    type: postgres
    url: postgres://h/db
    tables: [{source: s.t}]
  - name: a
    type: clickhouse
    url: http://h
    tables: [{source: s.t}]
)"),
            "sinks.yaml:6: duplicate destination name 'a'");
}

TEST(SinksConfigErrors, BadNamesAndUrls) {
  std::string m = error_of(
      "destinations:\n  - name: Ware house\n    type: postgres\n    url: postgres://h\n"
      "    tables: [{source: s.t}]\n");
  EXPECT_EQ(m, "sinks.yaml:2: destination 1: name 'Ware house' must match [a-z0-9_-]+");
  m = error_of(
      "destinations:\n  - name: a\n    type: postgres\n    url: http://h/db\n"
      "    tables: [{source: s.t}]\n");
  EXPECT_EQ(m, "sinks.yaml:4: destination 'a': url must start with postgresql:// or postgres://");
  m = error_of(
      "destinations:\n  - name: a\n    type: clickhouse\n    url: postgres://u:secret@h/db\n"
      "    tables: [{source: s.t}]\n");
  EXPECT_EQ(m, "sinks.yaml:4: destination 'a': url must start with http:// or https://");
  EXPECT_EQ(m.find("secret"), std::string::npos);
  m = error_of("destinations:\n  - name: a\n    type: clickhouse\n    tables: [{source: s.t}]\n");
  EXPECT_EQ(m, "sinks.yaml:2: destination 'a': missing 'url'");
}

TEST(SinksConfigErrors, DestinationsAndTablesMustBeNonEmptyLists) {
  EXPECT_EQ(error_of("destinations: []\n"),
            "sinks.yaml:1: 'destinations' must be a non-empty list");
  EXPECT_EQ(error_of(""), "sinks.yaml:1: missing 'destinations'");
  EXPECT_EQ(error_of("destinations:\n  - name: a\n    type: clickhouse\n    url: http://h\n"
                     "    tables: []\n"),
            "sinks.yaml:5: destination 'a': 'tables' must be a non-empty list");
  EXPECT_EQ(error_of("destinations:\n  - name: a\n    type: clickhouse\n    url: http://h\n"),
            "sinks.yaml:2: destination 'a': missing 'tables'");
}

TEST(SinksConfigErrors, SourcesAndTargets) {
  for (const char* source : {"customers", "a.b.c", ".t", "s.", "pub-lic.t"}) {
    const std::string m =
        error_of(std::string("destinations:\n  - name: a\n    type: clickhouse\n") +
                 "    url: http://h\n    tables:\n      - source: " + source + "\n");
    EXPECT_EQ(m.rfind("sinks.yaml:6: destination 'a': source '" + std::string(source) +
                          "' must be schema.table",
                      0),
              0u)
        << m;
  }
  std::string m = error_of(std::string(kHead) + "        target: 9lives\n");
  EXPECT_EQ(m,
            "sinks.yaml:7: destination 'warehouse': table public.customers: target '9lives' must "
            "match [A-Za-z_][A-Za-z0-9_]*");
  m = error_of(std::string(kHead) + "      - source: public.customers\n");
  EXPECT_EQ(m, "sinks.yaml:7: destination 'warehouse': table public.customers is listed twice");
  m = error_of(std::string(kHead) + "      - source: crm.customers\n");
  EXPECT_EQ(m.rfind("sinks.yaml:7: destination 'warehouse': tables public.customers and "
                    "crm.customers share the target 'customers'",
                    0),
            0u)
      << m;
  m = error_of(std::string(kHead) +
               "      - source: crm.customers\n        target: crm_customers\n");
  EXPECT_EQ(m, "<accepted>");
}

TEST(SinksConfigErrors, ColumnRules) {
  const auto column = [](const std::string& rule) {
    return error_of(std::string(kHead) + "        columns:\n          c: " + rule + "\n");
  };
  const std::string at = "sinks.yaml:8: destination 'warehouse': column 'c' of public.customers: ";
  EXPECT_EQ(column("{mask: scramble}").rfind(at + "unknown mask 'scramble'", 0), 0u);
  EXPECT_EQ(column("{mask: redact, keep_last: 4}"), at + "keep_last applies to mask partial only");
  EXPECT_EQ(column("{keep_last: 4}"), at + "keep_last applies to mask partial only");
  EXPECT_EQ(column("{mask: partial, keep_last: 0}"),
            at + "keep_last must be a whole number from 1 to 64");
  EXPECT_EQ(column("{mask: partial, keep_last: 65}"),
            at + "keep_last must be a whole number from 1 to 64");
  EXPECT_EQ(column("{mask: partial, keep_last: four}"),
            at + "keep_last must be a whole number from 1 to 64");
  EXPECT_EQ(column("{mask: redact, pii: maybe}"), at + "pii must be true or false");
  EXPECT_EQ(column("redact"), at + "expected a map such as {mask: redact}");
  EXPECT_EQ(column("{mask: partial, keep_last: 64}"), "<accepted>");
  EXPECT_EQ(column("{}"), "<accepted>");
  EXPECT_EQ(error_of(std::string(kHead) + "        default: hide\n"),
            "sinks.yaml:7: destination 'warehouse': table public.customers: unknown default "
            "'hide' (keep or drop)");
}

TEST(SinksConfigErrors, Tls) {
  const auto tls = [](const std::string& spec) {
    return error_of("destinations:\n  - name: a\n    type: postgres\n    url: postgres://h\n" +
                    ("    tls: " + spec + "\n") + "    tables: [{source: s.t}]\n");
  };
  EXPECT_EQ(tls("{sslmode: sometimes}"),
            "sinks.yaml:5: destination 'a': unknown sslmode 'sometimes' (disable, allow, prefer, "
            "require, verify-ca or verify-full)");
  EXPECT_EQ(tls("{ca_file: /nonexistent/ca.pem}"),
            "sinks.yaml:5: destination 'a': ca_file /nonexistent/ca.pem is not a file");
  EXPECT_EQ(tls("{ca_file: /tmp}"), "sinks.yaml:5: destination 'a': ca_file /tmp is not a file");
  EXPECT_EQ(tls("require"), "sinks.yaml:5: destination 'a': 'tls' must be a map");
  for (const char* mode : {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}) {
    EXPECT_EQ(tls(std::string("{sslmode: ") + mode + "}"), "<accepted>") << mode;
  }
}

TEST(SinksConfigErrors, ClickHouseTlsIsItsHttpsUrl) {
  const auto ch = [](const std::string& url, const std::string& spec) {
    return error_of("destinations:\n  - name: a\n    type: clickhouse\n    url: " + url +
                    "\n    tls: " + spec + "\n    tables: [{source: s.t}]\n");
  };
  EXPECT_EQ(ch("https://ch:8443", "{sslmode: verify-full}"),
            "sinks.yaml:5: destination 'a': sslmode is PostgreSQL's; ClickHouse is reached over "
            "TLS by an https:// url");
  EXPECT_EQ(ch("http://ch:8123", "{ca_file: /etc/hostname}"),
            "sinks.yaml:5: destination 'a': ca_file needs an https:// url");
  EXPECT_EQ(ch("https://ch:8443", "{ca_file: /etc/hostname}"), "<accepted>");
}

TEST(SinksConfigErrors, DuplicateKeys) {
  const std::string m = error_of(std::string(kHead) + R"(        columns:
          email: {mask: redact}
          email: {mask: keep}
)");
  EXPECT_EQ(m.rfind("sinks.yaml:9: ", 0), 0u) << m;
  EXPECT_NE(m.find("'email'"), std::string::npos) << m;
}

TEST(SinksConfigErrors, YamlSyntaxErrorNamesTheLine) {
  const std::string m = error_of(R"(destinations:
  - name: a
    type: postgres
    url: postgres://h: x
    tables: [{source: s.t}]
)");
  EXPECT_EQ(m, "sinks.yaml:4: illegal map value");
  const std::string m2 = error_of("destinations:\n  - name: a\n    tables: [{source: s.t}\n");
  EXPECT_EQ(m2, "sinks.yaml:4: end of sequence flow not found");
}

TEST(SinksConfigFile, LoadsAFileAndLabelsErrorsWithItsPath) {
  TempDir dir;
  const std::string path = dir.path() + "/sinks.yaml";
  auto missing = load_sinks_config(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Code::kNotFound);

  write_file(path, kHead);
  auto r = load_sinks_config(path);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->destinations[0].tables[0].source, "public.customers");

  write_file(path, std::string(kHead) + "        default: hide\n");
  auto bad = load_sinks_config(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Code::kInvalidArgument);
  EXPECT_EQ(bad.error().message.rfind(path + ":7: ", 0), 0u) << bad.error().message;
}

}  // namespace
}  // namespace hi::sinks
