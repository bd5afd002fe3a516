#include "cdc/slot.h"

#include <algorithm>

#include "pg/connection.h"
#include "pg/replication_stream.h"

namespace hi::cdc {

namespace {

std::string quoted_table(pg::Connection& conn, const std::string& table) {
  const auto dot = table.find('.');
  return dot == std::string::npos ? conn.quote_ident(table)
                                  : conn.quote_ident(table.substr(0, dot)) + "." +
                                        conn.quote_ident(table.substr(dot + 1));
}

}  // namespace

Status set_capture_tables(pg::Connection& owner, const std::string& publication,
                          const std::vector<std::string>& tables) {
  const std::string cap = owner.quote_ident(publication + "_capture");
  auto exists =
      owner.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {publication + "_capture"});
  if (!exists) return exists.error();
  if (exists->empty()) {
    if (auto r = owner.exec("CREATE PUBLICATION " + cap); !r) return r.error();
  }
  if (!tables.empty()) {
    std::string list;
    for (const auto& t : tables) list += (list.empty() ? "" : ", ") + quoted_table(owner, t);
    auto r = owner.exec("ALTER PUBLICATION " + cap + " SET TABLE " + list);
    if (!r) return r.error().wrap("capture publication " + publication + "_capture");
    // The relay reads captured tables for their snapshots (`hashinsight snapshot`).
    if (auto g = owner.exec("GRANT SELECT ON " + list + " TO hashinsight_relay"); !g) {
      return g.error().wrap("grant SELECT on captured tables to hashinsight_relay");
    }
    return {};
  }
  // No table: empty the publication (SET TABLE needs at least one).
  auto current = owner.exec(
      "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
      {publication + "_capture"});
  if (!current) return current.error();
  for (int i = 0; i < current->rows(); ++i) {
    auto d = owner.exec("ALTER PUBLICATION " + cap + " DROP TABLE " +
                        quoted_table(owner, std::string(current->text(i, 0))));
    if (!d) return d.error();
  }
  return {};
}

Status SlotManager::check_publications() {
  auto have = conn_.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {options_.publication});
  if (!have) return have.error();
  if (have->empty()) {
    return failed_precondition("publication " + options_.publication +
                               " is missing: run `hashinsight migrate` as the database owner "
                               "(the relay does not own the tables and creates no publication)");
  }
  if (options_.capture_tables.empty()) return {};
  const std::string cap = options_.publication + "_capture";
  auto published = conn_.exec(
      "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 "
      "ORDER BY 1",
      {cap});
  if (!published) return published.error();
  std::vector<std::string> have_tables, want(options_.capture_tables);
  for (int i = 0; i < published->rows(); ++i) have_tables.emplace_back(published->text(i, 0));
  std::sort(want.begin(), want.end());
  if (have_tables != want) {
    std::string w;
    for (const auto& t : want) w += (w.empty() ? "" : ",") + t;
    return failed_precondition("publication " + cap +
                               " does not publish RELAY_CAPTURE_TABLES=" + w +
                               ": run `hashinsight migrate` as the database owner with the "
                               "same RELAY_CAPTURE_TABLES (`up` does it)");
  }
  return {};
}

Result<SlotManager::State> SlotManager::prepare() {
  if (auto s = check_publications(); !s) return s.error();
  auto slot = pg::read_slot(conn_, options_.slot);
  if (!slot) return slot.error();
  if (!slot->exists) return State::kMissing;
  if (slot->wal_status == "lost" || slot->restart_lsn.value == 0) {
    if (!options_.recreate_slot) {
      return failed_precondition(
          "replication slot " + options_.slot + " is invalidated (wal_status=" + slot->wal_status +
          "): the WAL it needed was removed (max_slot_wal_keep_size), so changes since " +
          slot->confirmed_flush.to_string() +
          " cannot be streamed. Nothing was recreated. Run `hashinsight relay --recreate-slot` "
          "to recreate it and republish the outbox rows from a snapshot");
    }
    log_.warn("dropping invalidated slot as requested", {{"slot", options_.slot}});
    if (auto d = conn_.exec("SELECT pg_drop_replication_slot($1)", {options_.slot}); !d) {
      return d.error();
    }
    return State::kMissing;
  }
  auto pending = conn_.exec("SELECT value FROM relay_settings WHERE name = $1", {marker()});
  if (!pending) return pending.error();
  if (!pending->empty() && pending->text(0, 0) == "pending") {
    log_.warn("previous slot creation did not finish its backfill; redoing it",
              {{"slot", options_.slot}});
    if (auto d = conn_.exec("SELECT pg_drop_replication_slot($1)", {options_.slot}); !d) {
      return d.error();
    }
    return State::kMissing;
  }
  return State::kReady;
}

Result<pg::Lsn> SlotManager::create(pg::ReplicationStream& stream) {
  auto m = conn_.exec(
      "INSERT INTO relay_settings (name, value) VALUES ($1, 'pending') "
      "ON CONFLICT (name) DO UPDATE SET value = 'pending'",
      {marker()});
  if (!m) return m.error().wrap("relay_settings");
  auto& rc = stream.connection();
  if (auto b = rc.exec("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"); !b) return b.error();
  auto created = rc.exec("CREATE_REPLICATION_SLOT " + rc.quote_ident(options_.slot) +
                         " LOGICAL pgoutput USE_SNAPSHOT");
  if (!created) return created.error().wrap("create slot " + options_.slot);
  auto point = pg::Lsn::parse(created->text(0, 1));
  if (!point) return point.error();
  log_.info("slot created", {{"slot", options_.slot}, {"consistent_point", point->to_string()}});
  return *point;
}

Status SlotManager::finish_create(pg::ReplicationStream& stream) {
  if (auto c = stream.connection().exec("COMMIT"); !c) return c.error();
  auto done = conn_.exec("UPDATE relay_settings SET value = 'done' WHERE name = $1", {marker()});
  if (!done) return done.error();
  return {};
}

std::string SlotManager::confirmed_position() {
  auto info = pg::read_slot(conn_, options_.slot);
  return info ? info->confirmed_flush.to_string() : "?";
}

}  // namespace hi::cdc
