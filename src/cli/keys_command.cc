// `hashinsight keys rotate [--no-new-version] [--batch N]` and `hashinsight keys status [--json]`:
// the master keys of the envelope encryption (vault/vault.h, docs/secrets.md).
//
// rotate adds a master key version, then re-wraps the data key of every sealed column whose row
// is below it, while the API keeps running: per tenant, in short transactions of `--batch` rows
// locked with SELECT ... FOR UPDATE in id order (SKIP LOCKED would skip a row a writer holds; a
// plain lock waits for it, then reads the writer's committed blob). Only the 60 bytes of the
// wrapped key change; the data ciphertext is copied as it is, and no plaintext is decrypted.
// A writer still sealing under the previous version (it read the ring before the new file
// appeared) can land a row behind the cursor, so rotate passes over the tables again until a
// pass finds nothing to do. Interrupted, it is finished by `keys rotate --no-new-version`
// (rows already on the newest version are skipped), or by a plain re-run, which adds one more
// version and re-wraps everything.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli/common.h"
#include "core/strings.h"
#include "pg/array.h"
#include "pg/connection.h"
#include "pg/transaction.h"
#include "vault/vault.h"

namespace hi::cli {
namespace {

struct SealedColumn {
  const char* name;
  std::string (*record_id)(std::int64_t id);
};

// A tenant table with sealed columns and one key_version for the whole row.
struct SealedTable {
  const char* name;
  std::vector<SealedColumn> columns;
};

const std::vector<SealedTable>& sealed_tables() {
  static const std::vector<SealedTable> tables = {
      {"miners", {{"credentials_enc", vault::miner_credentials_id}}},
      {"exchange_keys",
       {{"key_enc", vault::exchange_key_id}, {"secret_enc", vault::exchange_secret_id}}},
  };
  return tables;
}

// The sealed rows of a table: key_version is set exactly when the row holds a sealed value.
constexpr const char* kSealedRows = "key_version IS NOT NULL";

struct RotateFlags {
  bool no_new_version = false;
  int batch = 500;
};

struct StatusFlags {
  bool json = false;
};

void bind_data_dir(CLI::App* cmd, Flags& flags) {
  cmd->add_option_function<std::string>(
      "--data-dir", [&flags](const std::string& v) { flags.overrides["HI_DATA_DIR"] = v; },
      "the data directory (its secrets/master_keys holds the master keys)");
}

std::string secrets_dir(const Config& cfg) { return data_dir(cfg) + "/secrets"; }

// Every tenant id. Tenant tables are read per tenant, in a transaction scoped to it, so that an
// owner without BYPASSRLS sees them too (the tables FORCE row-level security).
std::vector<std::string> tenants(pg::Connection& conn) {
  auto r = conn.exec("SELECT id::text FROM tenants ORDER BY id");
  if (!r) fail(kExitFailure, "list tenants: " + r.error().message);
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i) out.emplace_back(r->text(i, 0));
  return out;
}

// Rows of `table` below `version`, over every tenant.
std::int64_t count_below(pg::Connection& conn, const SealedTable& table,
                         const std::vector<std::string>& tenant_ids, std::uint32_t version) {
  std::int64_t total = 0;
  for (const auto& tenant : tenant_ids) {
    auto n = pg::in_transaction(conn, tenant, [&](pg::Connection& c) {
      return c.exec(std::string("SELECT count(*) FROM ") + table.name +
                        " WHERE tenant_id = $1 AND " + kSealedRows + " AND key_version < $2",
                    {tenant, std::to_string(version)});
    });
    if (!n) fail(kExitFailure, std::string("count ") + table.name + ": " + n.error().message);
    total += n->int64(0, 0);
  }
  return total;
}

class Rotation {
 public:
  // Passes over a table before giving up on rows that keep appearing below the target (a
  // process that never re-reads the key ring).
  static constexpr int kMaxPasses = 10;

  Rotation(pg::Connection& conn, const vault::KeyRing& ring, std::uint32_t target, int batch)
      : conn_(conn), ring_(ring), target_(target), batch_(batch), tty_(::isatty(STDERR_FILENO)) {}

  struct TableReport {
    std::int64_t rewrapped = 0;
    std::set<std::int64_t> failed;  // ids whose blobs would not re-wrap
    std::int64_t remaining = 0;     // rows still below the target, the failed ones included
  };

  // Re-wraps every row of `table` below the target version, pass after pass until a pass
  // re-wraps nothing (a late writer on the previous version leaves rows behind the cursor).
  TableReport run(const SealedTable& table) {
    TableReport report;
    const auto tenant_ids = tenants(conn_);
    total_ = count_below(conn_, table, tenant_ids, target_);
    done_ = 0;
    for (int pass = 0; pass < kMaxPasses; ++pass) {
      std::int64_t in_pass = 0;
      for (const auto& tenant : (pass == 0 ? tenant_ids : tenants(conn_))) {
        std::int64_t after_id = 0;
        while (true) {
          auto r = pg::in_transaction(conn_, tenant, [&](pg::Connection&) {
            return batch_of(table, tenant, after_id, report);
          });
          if (!r) {
            fail(kExitFailure, std::string("keys rotate: ") + table.name + " tenant " + tenant +
                                   ": " + r.error().message);
          }
          in_pass += r->rewrapped;
          done_ += r->rewrapped;
          progress(table);
          if (r->selected < batch_) break;
          after_id = r->last_id;
        }
      }
      report.rewrapped += in_pass;
      if (in_pass == 0) break;
    }
    if (tty_ && total_ > 0) std::fprintf(stderr, "\n");
    report.remaining = count_below(conn_, table, tenants(conn_), target_);
    return report;
  }

 private:
  struct Batch {
    int selected = 0;
    std::int64_t rewrapped = 0;
    std::int64_t last_id = 0;
  };

  // One transaction: lock the next rows in id order, re-wrap them, write them back.
  Result<Batch> batch_of(const SealedTable& table, const std::string& tenant, std::int64_t after_id,
                         TableReport& report) {
    std::string select = "SELECT id";
    for (const auto& c : table.columns) select += std::string(", encode(") + c.name + ", 'hex')";
    select += std::string(" FROM ") + table.name + " WHERE tenant_id = $1 AND id > $2 AND " +
              kSealedRows + " AND key_version < $3 ORDER BY id LIMIT $4 FOR UPDATE";
    auto rows = conn_.exec(select, {tenant, std::to_string(after_id), std::to_string(target_),
                                    std::to_string(batch_)});
    if (!rows) return rows.error();

    Batch b;
    b.selected = rows->rows();
    pg::ArrayLiteral ids, versions;
    std::vector<pg::ArrayLiteral> blobs(table.columns.size());
    for (int r = 0; r < rows->rows(); ++r) {
      const std::int64_t id = rows->int64(r, 0);
      b.last_id = id;
      std::vector<std::string> rewrapped;
      std::uint32_t row_version = 0;
      bool ok = true;
      for (std::size_t c = 0; c < table.columns.size() && ok; ++c) {
        const std::string record = table.columns[c].record_id(id);
        // encode(..., 'hex') always decodes; an empty blob would be refused as truncated.
        const std::string blob = hex_decode(rows->text(r, static_cast<int>(c) + 1)).value_or("");
        auto next = vault::rewrap(ring_, blob, record);
        if (!next) {
          // The message names the record and the version, never the secret.
          if (report.failed.insert(id).second) {
            std::fprintf(stderr, "%skeys rotate: cannot re-wrap %s: %s\n", tty_ ? "\n" : "",
                         record.c_str(), next.error().message.c_str());
          }
          ok = false;
          break;
        }
        // rewrap() uses the ring's current version, which another rotate may have raised
        // meanwhile: the row records the lowest of its blobs' versions.
        const std::uint32_t v = *vault::blob_version(*next);
        row_version = row_version == 0 ? v : std::min(row_version, v);
        rewrapped.push_back(hex_encode(*next));
      }
      if (!ok) continue;
      ids.add(id);
      versions.add(static_cast<std::int64_t>(row_version));
      for (std::size_t c = 0; c < rewrapped.size(); ++c) blobs[c].add(rewrapped[c]);
      ++b.rewrapped;
    }
    if (b.rewrapped == 0) return b;

    std::string update = std::string("UPDATE ") + table.name + " t SET key_version = u.v";
    std::string names = "id, v";
    std::string args = "unnest($1::bigint[], $2::int[]";
    pg::Params params = {ids.str(), versions.str()};
    for (std::size_t c = 0; c < table.columns.size(); ++c) {
      const std::string col = table.columns[c].name;
      update += ", " + col + " = decode(u.c" + std::to_string(c) + ", 'hex')";
      names += ", c" + std::to_string(c);
      args += ", $" + std::to_string(c + 3) + "::text[]";
      params.push_back(blobs[c].str());
    }
    update += " FROM " + args + ") AS u(" + names + ") WHERE t.id = u.id AND t.tenant_id = $" +
              std::to_string(table.columns.size() + 3);
    params.push_back(tenant);
    auto updated = conn_.exec(update, params);
    if (!updated) return updated.error();
    return b;
  }

  void progress(const SealedTable& table) {
    if (!tty_ || total_ == 0) return;
    std::fprintf(stderr, "\rkeys rotate: %s %lld/%lld", table.name, static_cast<long long>(done_),
                 static_cast<long long>(total_));
    std::fflush(stderr);
  }

  pg::Connection& conn_;
  const vault::KeyRing& ring_;
  std::uint32_t target_;
  int batch_;
  bool tty_;
  std::int64_t total_ = 0;
  std::int64_t done_ = 0;
};

void run_rotate(const Config& cfg, const RotateFlags& rf) {
  // Connect before adding a version: a rotate that cannot reach the database changes nothing.
  auto conn = connect_owner(cfg);
  auto ring = vault::KeyRing::open(secrets_dir(cfg), /*create_if_missing=*/true);
  if (!ring) fail(kExitFailure, "keys rotate: " + ring.error().message);
  std::uint32_t target = ring->current_version();
  if (!rf.no_new_version) {
    auto added = ring->add_version();
    if (!added)
      fail(kExitFailure, "keys rotate: add a master key version: " + added.error().message);
    target = *added;
  }

  const auto started = std::chrono::steady_clock::now();
  Rotation rotation(conn, *ring, target, rf.batch);
  std::map<std::string, Rotation::TableReport> reports;
  for (const auto& table : sealed_tables()) reports[table.name] = rotation.run(table);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::size_t failed = 0;
  std::int64_t remaining = 0;
  std::string parts;
  for (const auto& table : sealed_tables()) {
    const auto& r = reports[table.name];
    failed += r.failed.size();
    remaining += r.remaining;
    parts += (parts.empty() ? "" : ", ") + std::to_string(r.rewrapped) + " " + table.name;
  }
  std::printf(
      "keys rotate: master key version %u (%s); re-wrapped %s rows in %.1f s; %zu failed; "
      "%lld below version %u remain\n",
      target, rf.no_new_version ? "existing" : "added", parts.c_str(), seconds, failed,
      static_cast<long long>(remaining), target);
  if (failed > 0 || remaining > 0) throw Exit{kExitFailure};
}

void run_status(const Config& cfg, const StatusFlags& sf) {
  auto conn = connect_owner(cfg);
  auto ring = vault::KeyRing::open(secrets_dir(cfg), /*create_if_missing=*/false);
  if (!ring && ring.error().code != Code::kNotFound) {
    fail(kExitFailure, "keys status: " + ring.error().message);
  }
  const std::vector<std::uint32_t> on_disk = ring ? ring->versions() : std::vector<std::uint32_t>{};
  const std::uint32_t current = ring ? ring->current_version() : 0;

  // version -> table -> rows
  std::map<std::uint32_t, std::map<std::string, std::int64_t>> rows;
  for (std::uint32_t v : on_disk) {
    for (const auto& t : sealed_tables()) rows[v][t.name] = 0;
  }
  const auto tenant_ids = tenants(conn);
  for (const auto& t : sealed_tables()) {
    for (const auto& tenant : tenant_ids) {
      auto r = pg::in_transaction(conn, tenant, [&](pg::Connection& c) {
        return c.exec(std::string("SELECT key_version, count(*) FROM ") + t.name +
                          " WHERE tenant_id = $1 AND " + kSealedRows + " GROUP BY 1",
                      {tenant});
      });
      if (!r) fail(kExitFailure, std::string("keys status: ") + t.name + ": " + r.error().message);
      for (int i = 0; i < r->rows(); ++i) {
        const auto v = static_cast<std::uint32_t>(r->int64(i, 0));
        for (const auto& u : sealed_tables()) rows[v].try_emplace(u.name, 0);
        rows[v][t.name] += r->int64(i, 1);
      }
    }
  }

  std::int64_t below = 0;
  std::int64_t missing_rows = 0;
  nlohmann::json versions = nlohmann::json::array();
  for (const auto& [v, per_table] : rows) {
    const bool present = std::find(on_disk.begin(), on_disk.end(), v) != on_disk.end();
    nlohmann::json entry = {{"version", v}, {"on_disk", present}, {"current", v == current}};
    for (const auto& [table, n] : per_table) {
      entry[table] = n;
      if (v < current) below += n;
      if (!present) missing_rows += n;
    }
    versions.push_back(entry);
  }

  if (sf.json) {
    nlohmann::json out = {
        {"directory", ring ? ring->directory() : secrets_dir(cfg) + "/master_keys"},
        {"current_version", current},
        {"versions", versions},
        {"rows_below_current", below},
        {"rows_without_key", missing_rows}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("master keys in %s: %s\n",
                (ring ? ring->directory() : secrets_dir(cfg) + "/master_keys").c_str(),
                on_disk.empty() ? "none" : ("current version " + std::to_string(current)).c_str());
    std::printf("%-9s %-8s", "version", "on disk");
    for (const auto& t : sealed_tables()) std::printf(" %14s", t.name);
    std::printf("\n");
    for (const auto& entry : versions) {
      std::printf("%-9u %-8s", entry["version"].get<std::uint32_t>(),
                  entry["on_disk"].get<bool>() ? "yes" : "MISSING");
      for (const auto& t : sealed_tables()) {
        std::printf(" %14lld", static_cast<long long>(entry[t.name].get<std::int64_t>()));
      }
      std::printf("\n");
    }
    if (below > 0) {
      std::printf(
          "%lld row(s) below the current version: run `hashinsight keys rotate "
          "--no-new-version`\n",
          static_cast<long long>(below));
    }
  }
  // Rows whose master key is gone cannot be opened: that is a failure an operator must see.
  if (missing_rows > 0) throw Exit{kExitFailure};
}

}  // namespace

void add_keys_command(CLI::App& app, Flags& flags) {
  auto* keys = app.add_subcommand("keys", "master keys of the stored secrets: rotate, status");
  keys->require_subcommand(1);

  auto* rotate = keys->add_subcommand(
      "rotate", "add a master key version and re-wrap every stored secret's data key under it");
  auto rf = std::make_shared<RotateFlags>();
  bind_data_dir(rotate, flags);
  rotate->add_flag("--no-new-version", rf->no_new_version,
                   "re-wrap what is below the current version without adding one (finishes an "
                   "interrupted rotate)");
  rotate->add_option("--batch", rf->batch, "rows per transaction")->check(CLI::Range(1, 10000));
  rotate->callback([&flags, rf] { run_rotate(load_config(flags), *rf); });

  auto* status = keys->add_subcommand("status", "master key versions and rows on each");
  auto sf = std::make_shared<StatusFlags>();
  bind_data_dir(status, flags);
  status->add_flag("--json", sf->json, "one JSON object");
  status->callback([&flags, sf] { run_status(load_config(flags), *sf); });
}

}  // namespace hi::cli
