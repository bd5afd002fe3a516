// Ordered, plain-SQL schema migrations.
//
// Each migration runs in its own transaction together with its row in `schema_migrations`
// (version, name, checksum, applied_at), so a failed migration leaves nothing behind and a
// second run applies nothing. Concurrent runs serialize on an advisory lock. A migration that
// was applied with a different checksum is reported (the file changed after it shipped) but
// not re-run.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/log.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::pg {

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

struct MigrateReport {
  int applied = 0;
  int already = 0;
  int latest_version = 0;
};

Result<MigrateReport> migrate(Connection& conn, std::span<const Migration> migrations,
                              const Logger& log);

// FNV-1a 64 of the SQL text, hex.
std::string migration_checksum(std::string_view sql);

}  // namespace hi::pg
