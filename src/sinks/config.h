// The sinks' configuration: DIR/sinks.yaml (or `hashinsight sink --config FILE`).
//
//   destinations:
//     - name: warehouse                 # [a-z0-9_-]+, unique; the consumer group is sink-<name>
//       type: clickhouse                # postgres | clickhouse
//       url: http://127.0.0.1:8123/analytics          # postgresql://... for postgres
//       tls: {ca_file: /etc/ssl/ca.pem, sslmode: verify-full}   # optional
//       tables:
//         - source: public.customers    # a captured table, schema-qualified
//           target: customers           # optional; defaults to the source's table name
//           default: keep               # keep | drop: the rule of unlisted columns
//           columns:
//             email: {mask: email-domain, pii: true}
//             card:  {mask: partial, keep_last: 4, pii: true}
//             ssn:   {mask: hmac-sha256, pii: true}
//             notes: {mask: drop}
//
// Masks: keep, drop, redact, null, sha256, hmac-sha256, partial (keep_last, default 4),
// email-domain. A column marked `pii: true` may never be sent in clear: `keep` (explicit, or
// the table's default `keep` for a pii column listed without a mask) is refused.
//
// Errors name the file, the line (1-based, from yaml-cpp's marks) and the reason:
// "sinks.yaml:7: destination 'warehouse': unknown type 'mysql' (postgres or clickhouse)".
// Unknown keys are errors too (a misspelt `mask` must not silently keep a column in clear).
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace hi::sinks {

enum class Mask { kKeep, kDrop, kRedact, kNull, kSha256, kHmacSha256, kPartial, kEmailDomain };

// "keep", "hmac-sha256", ...
std::string_view to_string(Mask mask);

struct ColumnRule {
  Mask mask = Mask::kKeep;
  int keep_last = 4;  // kPartial only
  bool pii = false;
};

struct TableSpec {
  std::string source;               // "public.customers"
  std::string target;               // "customers"
  Mask default_mask = Mask::kKeep;  // kKeep or kDrop
  std::map<std::string, ColumnRule> columns;

  // The rule for `column`: its own, else the default.
  ColumnRule rule(std::string_view column) const;
};

enum class DestinationType { kPostgres, kClickHouse };
std::string_view to_string(DestinationType type);

// Changes per batch when none is given: 5,000 for PostgreSQL; 20,000 for ClickHouse, where each
// INSERT writes a part of every column (bench sink: ClickHouse's CPU per row fell by half and
// the rate rose 13 % from 5,000; PostgreSQL gained nothing).
std::size_t default_batch_size(DestinationType type);

struct TlsSpec {
  std::string sslmode;  // postgres: disable|allow|prefer|require|verify-ca|verify-full
  std::string ca_file;  // postgres: sslrootcert; clickhouse: the CA of an https:// URL
};

struct DestinationSpec {
  std::string name;
  DestinationType type = DestinationType::kPostgres;
  std::string url;
  TlsSpec tls;
  std::vector<TableSpec> tables;

  // The table whose source is `source` ("public.customers"), or nullptr.
  const TableSpec* table(std::string_view source) const;
};

struct SinksConfig {
  std::vector<DestinationSpec> destinations;

  const DestinationSpec* destination(std::string_view name) const;
  // Every source table of every destination, sorted, without repeats (the relay's capture list).
  std::vector<std::string> source_tables() const;
};

// `file_name` only labels errors. kInvalidArgument "file:line: reason" on any problem.
Result<SinksConfig> parse_sinks_config(std::string_view yaml, std::string_view file_name);
// Reads and parses a file (kNotFound when it does not exist).
Result<SinksConfig> load_sinks_config(const std::string& path);

}  // namespace hi::sinks
