#include "pg/replication_stream.h"

#include <libpq-fe.h>

#include <cstring>

#include "core/time.h"

namespace hi::pg {
namespace {

constexpr std::int64_t kPgEpochOffsetUs = 946'684'800'000'000;  // 2000-01-01 - 1970-01-01

std::uint64_t read_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void write_u64(char* p, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xFF);
    v >>= 8;
  }
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::int64_t pg_now_us() { return unix_now_us() - kPgEpochOffsetUs; }

Result<SlotInfo> read_slot(Connection& conn, const std::string& slot) {
  auto r = conn.exec(
      "SELECT plugin, confirmed_flush_lsn::text, restart_lsn::text, wal_status, safe_wal_size, "
      "active FROM pg_replication_slots WHERE slot_name = $1",
      {slot});
  if (!r) return r.error().wrap("read slot " + slot);
  SlotInfo info;
  if (r->empty()) return info;
  info.exists = true;
  info.plugin = std::string(r->text(0, 0));
  if (!r->is_null(0, 1)) {
    if (auto l = Lsn::parse(r->text(0, 1))) info.confirmed_flush = *l;
  }
  if (!r->is_null(0, 2)) {
    if (auto l = Lsn::parse(r->text(0, 2))) info.restart_lsn = *l;
  }
  info.wal_status = r->is_null(0, 3) ? "" : std::string(r->text(0, 3));
  if (!r->is_null(0, 4)) info.safe_wal_size = r->int64(0, 4);
  info.active = r->boolean(0, 5);
  return info;
}

Result<ReplicationStream> ReplicationStream::connect(Options options) {
  const char* keys[] = {"dbname", "replication", "options", "application_name", nullptr};
  // Timestamps in UTC so outbox created_at renders as "+00".
  const char* values[] = {options.conninfo.c_str(), "database", "-c timezone=UTC",
                          "hashinsight-relay", nullptr};
  PgConnPtr raw(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
  if (!raw) return unavailable("replication connect: out of memory");
  if (PQstatus(raw.get()) != CONNECTION_OK) {
    return unavailable("replication connect: " + trim(PQerrorMessage(raw.get())));
  }
  const int version = PQserverVersion(raw.get());
  Connection conn = Connection::adopt(std::move(raw));
  ReplicationStream s(std::move(conn), std::move(options));
  s.server_version_ = version;
  return s;
}

Result<bool> ReplicationStream::create_slot_if_missing() {
  auto existing = conn_.exec("SELECT plugin FROM pg_replication_slots WHERE slot_name = " +
                             conn_.quote_literal(options_.slot));
  if (!existing) return existing.error().wrap("check slot");
  if (!existing->empty()) {
    if (existing->text(0, 0) != "pgoutput") {
      return failed_precondition("slot " + options_.slot + " uses plugin '" +
                                 std::string(existing->text(0, 0)) + "', not pgoutput");
    }
    return false;
  }
  auto r = conn_.exec("CREATE_REPLICATION_SLOT " + conn_.quote_ident(options_.slot) +
                      " LOGICAL pgoutput NOEXPORT_SNAPSHOT");
  if (!r) {
    // Two relays racing to create it: the loser finds it afterwards.
    if (r.error().message.find("already exists") != std::string::npos) return false;
    return r.error().wrap("create slot " + options_.slot);
  }
  return true;
}

Status ReplicationStream::start() {
  std::string pubs;
  for (const auto& p : options_.publications) {
    if (!pubs.empty()) pubs += ",";
    pubs += "\"" + p + "\"";
  }
  std::string cmd = "START_REPLICATION SLOT " + conn_.quote_ident(options_.slot) +
                    " LOGICAL 0/0 (proto_version '" + std::to_string(options_.proto_version) +
                    "', publication_names " + conn_.quote_literal(pubs);
  if (options_.messages) cmd += ", messages 'true'";
  if (options_.streaming) cmd += ", streaming 'on'";
  cmd += ")";
  PgResultPtr res(PQexec(conn_.native(), cmd.c_str()));
  if (!res || PQresultStatus(res.get()) != PGRES_COPY_BOTH) {
    if (res) return error_from_result(res.get(), "start replication slot " + options_.slot);
    return unavailable("start replication: " + conn_.error_message());
  }
  if (PQsetnonblocking(conn_.native(), 1) != 0) {
    return internal_error("replication: cannot set non-blocking mode");
  }
  return {};
}

Status ReplicationStream::consume_input() {
  if (PQconsumeInput(conn_.native()) != 1) {
    return unavailable("replication stream: " + conn_.error_message());
  }
  return {};
}

Result<std::optional<StreamEvent>> ReplicationStream::read() {
  char* buf = nullptr;
  const int n = PQgetCopyData(conn_.native(), &buf, /*async=*/1);
  if (n == 0) return std::optional<StreamEvent>{};
  if (n == -1) {
    PgResultPtr res(PQgetResult(conn_.native()));
    if (res && PQresultStatus(res.get()) == PGRES_FATAL_ERROR) {
      return error_from_result(res.get(), "replication stream ended");
    }
    return unavailable("replication stream ended by the server");
  }
  if (n == -2) return unavailable("replication stream: " + conn_.error_message());
  struct Free {
    void operator()(char* p) const { PQfreemem(p); }
  };
  std::unique_ptr<char, Free> owned(buf);
  StreamEvent ev;
  if (buf[0] == 'w') {
    if (n < 25) return data_loss("replication stream: short XLogData message");
    ev.kind = StreamEvent::Kind::kData;
    ev.wal_start = Lsn{read_u64(buf + 1)};
    ev.wal_end = Lsn{read_u64(buf + 9)};
    ev.payload.assign(buf + 25, static_cast<std::size_t>(n - 25));
  } else if (buf[0] == 'k') {
    if (n < 18) return data_loss("replication stream: short keepalive message");
    ev.kind = StreamEvent::Kind::kKeepalive;
    ev.wal_end = Lsn{read_u64(buf + 1)};
    ev.reply_requested = buf[17] != 0;
  } else {
    return data_loss(std::string("replication stream: unknown message type '") + buf[0] + "'");
  }
  return std::optional<StreamEvent>(std::move(ev));
}

Status ReplicationStream::send_status(bool reply_requested) {
  char msg[34];
  msg[0] = 'r';
  write_u64(msg + 1, confirmed_.value);   // written
  write_u64(msg + 9, confirmed_.value);   // flushed
  write_u64(msg + 17, confirmed_.value);  // applied
  write_u64(msg + 25, static_cast<std::uint64_t>(pg_now_us()));
  msg[33] = reply_requested ? 1 : 0;
  if (PQputCopyData(conn_.native(), msg, sizeof msg) != 1 || PQflush(conn_.native()) < 0) {
    return unavailable("replication status update: " + conn_.error_message());
  }
  status_sent_ = confirmed_;
  return {};
}

}  // namespace hi::pg
