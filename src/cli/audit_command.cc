// `hashinsight audit query [--table T] [--key JSON] [--since TIME] [--until TIME]
// [--tenant N] [--limit M]`: the change_audit_log rows the audit worker wrote, one JSON object
// per line, oldest first.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "consume/audit_worker.h"
#include "pg/connection.h"

namespace hi::cli {
namespace {

struct AuditFlags {
  std::string table, key, since, until, tenant;
  std::int64_t limit = 1000;
};

}  // namespace

void add_audit_command(CLI::App& app, Flags& flags) {
  auto* audit = app.add_subcommand("audit", "the change audit log (table capture)");
  audit->require_subcommand(1);
  auto* query = audit->add_subcommand("query", "changes by table, key and time range (JSON lines)");
  auto af = std::make_shared<AuditFlags>();
  query->add_option("--table", af->table, "schema.table (public. by default)");
  query->add_option("--key", af->key, "JSON object the row key contains, e.g. '{\"id\":42}'");
  query->add_option("--since", af->since, "commit time >= (RFC 3339)");
  query->add_option("--until", af->until, "commit time < (RFC 3339)");
  query->add_option("--tenant", af->tenant, "one tenant (default: all; 0 = global tables)");
  query->add_option("--limit", af->limit, "at most M rows")->check(CLI::PositiveNumber);
  query->callback([&flags, af] {
    const Config cfg = load_config(flags);
    const StackUrls urls = stack_urls(cfg);
    if (urls.database_url.empty()) {
      fail(kExitUsage, "DATABASE_URL is not set and no running stack was found");
    }
    if (!af->key.empty() && !nlohmann::json::parse(af->key, nullptr, false).is_object()) {
      fail(kExitUsage, "--key must be a JSON object, e.g. '{\"id\":42}'");
    }
    auto conn = pg::Connection::connect(urls.database_url, cfg.str("DB_APP_ROLE"));
    if (!conn) fail(kExitFailure, conn.error().message);
    consume::AuditQuery q;
    q.table = af->table;
    q.key = af->key;
    if (!af->since.empty()) q.since = af->since;
    if (!af->until.empty()) q.until = af->until;
    if (!af->tenant.empty()) q.tenant = af->tenant;
    q.limit = af->limit;
    auto rows = consume::audit_query(*conn, q);
    if (!rows) fail(kExitFailure, "audit query: " + rows.error().message);
    for (const auto& r : *rows) std::printf("%s\n", r.c_str());
  });
}

}  // namespace hi::cli
