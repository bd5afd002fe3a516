// The audit worker (group audit-group, topics cdc.<schema>.<table> from the relay's table
// capture): one change_audit_log row per captured change, exactly once.
//
// A row holds the table, the operation (insert/update/delete/truncate), the row's key (the
// message key: replica identity columns), before and after images, the changed columns, the
// columns an update left as unchanged TOAST, the commit LSN, xid and commit time, and a
// correlation id shared by every change of one transaction (its commit LSN). Changed columns:
// insert -> the columns of `after`; delete -> those of `before`; update -> the columns whose
// value differs between the images (without an old image, i.e. without REPLICA IDENTITY FULL,
// every column of `after`). Rows of global tables (no tenant_id column) go to tenant 0; a
// delete carries the tenant only with REPLICA IDENTITY FULL, else it is looked up (resolve()).
//
// `audit_query` serves `hashinsight audit query`: by table, key (a JSON object the row key
// must contain) and commit time range, across tenants or for one.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "consume/runtime.h"
#include "pg/connection.h"

namespace hi::consume {

inline constexpr const char* kAuditGroup = "audit-group";

// The topics of the captured tables ("public.user_miners" -> "cdc.public.user_miners"). With
// no tables: on Kafka the pattern ^cdc\..*, on Redis the cdc.* streams that exist now.
std::vector<std::string> audit_topics(const std::vector<std::string>& tables,
                                      const bus::BusOptions& bus);

class AuditHandler final : public Handler {
 public:
  // Deletes whose old image has no tenant_id get the tenant of an earlier change of the same
  // row: in the batch, else recorded (hi_audit_tenant_of()).
  Status resolve(pg::Connection& conn, std::vector<Event>& events) override;
  Result<ApplyOutcome> apply(pg::Connection& conn, const TenantBatch& batch) override;
};

struct AuditQuery {
  std::string table;  // "public.user_miners" or "user_miners"; empty = all
  std::string key;    // JSON object contained in row_key, e.g. {"id":42}; empty = any
  std::optional<std::string> since;  // commit_ts >= (RFC 3339 or PostgreSQL text)
  std::optional<std::string> until;  // commit_ts <
  std::optional<std::string> tenant;
  std::int64_t limit = 1000;
};

// Matching rows, oldest first, as JSON objects.
Result<std::vector<std::string>> audit_query(pg::Connection& app, const AuditQuery& query);

}  // namespace hi::consume
