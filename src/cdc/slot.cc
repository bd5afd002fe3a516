#include "cdc/slot.h"

#include "pg/connection.h"
#include "pg/replication_stream.h"

namespace hi::cdc {

Status SlotManager::ensure_publications() {
  auto have = conn_.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {options_.publication});
  if (!have) return have.error();
  if (have->empty()) {
    auto r = conn_.exec("CREATE PUBLICATION " + conn_.quote_ident(options_.publication) +
                        " FOR TABLE " + options_.outbox_table + " WITH (publish = 'insert')");
    if (!r) {
      return failed_precondition("publication " + options_.publication +
                                 " is missing and cannot be created (run `hashinsight migrate` "
                                 "as the owner): " +
                                 r.error().message);
    }
    log_.info("publication created", {{"publication", options_.publication}});
  }
  if (options_.capture_tables.empty()) return {};
  const std::string cap = options_.publication + "_capture";
  std::string tables;
  for (const auto& t : options_.capture_tables) {
    if (!tables.empty()) tables += ", ";
    const auto dot = t.find('.');
    tables += dot == std::string::npos ? conn_.quote_ident(t)
                                       : conn_.quote_ident(t.substr(0, dot)) + "." +
                                             conn_.quote_ident(t.substr(dot + 1));
  }
  auto exists = conn_.exec("SELECT 1 FROM pg_publication WHERE pubname = $1", {cap});
  if (!exists) return exists.error();
  auto r = exists->empty()
               ? conn_.exec("CREATE PUBLICATION " + conn_.quote_ident(cap) + " FOR TABLE " + tables)
               : conn_.exec("ALTER PUBLICATION " + conn_.quote_ident(cap) + " SET TABLE " + tables);
  if (!r) return failed_precondition("capture publication " + cap + ": " + r.error().message);
  return {};
}

Result<SlotManager::State> SlotManager::prepare() {
  if (auto s = ensure_publications(); !s) return s.error();
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
