// Deterministic reference data: the miner model catalogue, two tenants with a user holding each
// role, subscription plans and 90 days of daily network snapshots ending today (UTC).
//
// Safe to run again: rows are keyed by fixed ids and inserted with ON CONFLICT, so a second run
// adds nothing (model rows are updated to the current catalogue). The fixed ids are documented
// in docs/seed.md so curl examples work.
#pragma once

#include "core/log.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::schema {

struct SeedReport {
  int models = 0;
  int users = 0;
  int snapshots_inserted = 0;
};

Result<SeedReport> seed(pg::Connection& owner, const Logger& log);

// The seeded tenants and users (for tests and docs).
struct SeedUser {
  long id;
  long tenant_id;
  const char* email;
  const char* name;
  const char* role;
};
std::span<const SeedUser> seed_users();

}  // namespace hi::schema
