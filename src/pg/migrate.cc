#include "pg/migrate.h"

#include <cstdio>

#include "pg/transaction.h"

namespace hi::pg {

std::string migration_checksum(std::string_view sql) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : sql) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

Result<MigrateReport> migrate(Connection& conn, std::span<const Migration> migrations,
                              const Logger& log) {
  auto created = conn.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      "  version integer PRIMARY KEY,"
      "  name text NOT NULL,"
      "  checksum text NOT NULL,"
      "  applied_at timestamptz NOT NULL DEFAULT now())");
  if (!created) return created.error().wrap("migrate");
  MigrateReport report;
  for (const auto& m : migrations) {
    Transaction tx(conn);
    if (auto s = tx.begin(); !s) return s.error().wrap("migrate");
    // Serializes concurrent `migrate` runs; released at commit.
    if (auto r = conn.exec("SELECT pg_advisory_xact_lock(7243001)"); !r) return r.error();
    const std::string version = std::to_string(m.version);
    auto seen = conn.exec("SELECT checksum FROM schema_migrations WHERE version = $1", {version});
    if (!seen) return seen.error().wrap("migrate");
    const std::string sum = migration_checksum(m.sql);
    if (!seen->empty()) {
      if (seen->text(0, 0) != sum) {
        log.warn("migration changed after it was applied",
                 {{"version", m.version}, {"name", m.name}});
      }
      ++report.already;
      report.latest_version = m.version;
      continue;  // rolled back: nothing to do
    }
    if (auto s = conn.exec_script(m.sql); !s) {
      return s.error().wrap("migration " + version + " (" + std::string(m.name) + ")");
    }
    auto rec =
        conn.exec("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1,$2,$3)",
                  {version, std::string(m.name), sum});
    if (!rec) return rec.error().wrap("migrate");
    if (auto s = tx.commit(); !s) return s.error().wrap("migration " + version);
    log.info("migration applied", {{"version", m.version}, {"name", m.name}});
    ++report.applied;
    report.latest_version = m.version;
  }
  return report;
}

}  // namespace hi::pg
