// libpq, owned: a connection, its results, prepared statements and pipelined batches.
//
// A Connection belongs to one thread at a time (libpq connections are not thread-safe); share
// them through a Pool. Every call returns a Result: a server error becomes an Error whose
// message carries the SQLSTATE and the statement's context, and whose code is kUnavailable when
// the failure is worth retrying (connection lost, serialization failure, deadlock) and
// kInvalidArgument / kFailedPrecondition / kInternal otherwise.
//
//   auto conn = pg::Connection::connect(url);
//   if (!conn) return conn.error();
//   auto rows = conn->exec("SELECT id, kind FROM event_outbox WHERE user_id = $1", {uid});
//   for (int r = 0; r < rows->rows(); ++r) use(rows->text(r, 0));
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/result.h"

struct pg_conn;
struct pg_result;

namespace hi::pg {

struct PgConnCloser {
  void operator()(pg_conn* c) const noexcept;
};
struct PgResultCloser {
  void operator()(pg_result* r) const noexcept;
};
using PgConnPtr = std::unique_ptr<pg_conn, PgConnCloser>;
using PgResultPtr = std::unique_ptr<pg_result, PgResultCloser>;

// A text-format parameter; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;

// The rows of one statement. Values are text (libpq's text format).
class QueryResult {
 public:
  QueryResult() = default;
  explicit QueryResult(PgResultPtr res) : res_(std::move(res)) {}

  int rows() const;
  int columns() const;
  bool empty() const { return rows() == 0; }
  bool is_null(int row, int col) const;
  std::string_view text(int row, int col) const;  // "" for NULL
  std::optional<std::string> opt_text(int row, int col) const;
  std::int64_t int64(int row, int col) const;
  double float64(int row, int col) const;
  bool boolean(int row, int col) const;      // 't' / 'f'
  int column_index(const char* name) const;  // -1 when absent
  std::string_view column_name(int col) const;
  // Rows affected by INSERT/UPDATE/DELETE.
  std::int64_t affected() const;

 private:
  PgResultPtr res_;
};

// One statement of a pipeline: either SQL text or the name of a prepared statement.
struct Statement {
  std::string sql_or_name;
  Params params;
  bool prepared = false;
};

class Connection {
 public:
  // conninfo: a postgresql:// URL or key=value string. `role`, when non-empty, is SET ROLE'd
  // right after connecting (the platform connects as the owner and acts as hashinsight_app).
  static Result<Connection> connect(const std::string& conninfo, const std::string& role = "");

  Connection() = default;
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  bool valid() const { return conn_ != nullptr; }
  // False after the server went away; a Pool drops such connections.
  bool healthy() const;
  // Inside a transaction block, failed or not (the server's last ReadyForQuery said so).
  bool in_transaction() const;

  // A statement with parameters (and any statement of a pipeline()) is prepared on this
  // connection on first use and executed by name afterwards (up to kMaxCachedStatements texts
  // per connection): for the short statements of this platform, parsing and planning cost more than
  // running them. Behind a pooler in transaction mode use one that keeps protocol-level
  // prepared statements per client (PgBouncer 1.21+ with max_prepared_statements).
  Result<QueryResult> exec(std::string_view sql, const Params& params = {});
  // Several statements separated by ';' without parameters (migrations).
  Status exec_script(std::string_view sql);
  Status prepare(const std::string& name, std::string_view sql);
  Result<QueryResult> exec_prepared(const std::string& name, const Params& params);
  // Sends every statement in pipeline mode (one round trip) inside the current transaction
  // state; returns one result per statement, or the first error.
  Result<std::vector<QueryResult>> pipeline(std::span<const Statement> statements);

  // Statements held back to ride with the next call's round trip (a transaction's BEGIN and
  // its settings, Transaction::begin()): the next exec(), exec_prepared() or pipeline() sends
  // them in one pipeline ahead of its own statements and drops their results; an error among
  // them is that call's. Any other call that talks to the server sends them first on their own.
  void defer(Statement statement) { deferred_.push_back(std::move(statement)); }
  bool has_deferred() const { return !deferred_.empty(); }
  void drop_deferred() { deferred_.clear(); }

  // The server's reply to LISTEN-ed channels: waits up to timeout for one notification.
  struct Notification {
    std::string channel;
    std::string payload;
  };
  Status listen(const std::string& channel);
  Result<std::optional<Notification>> wait_notification(std::chrono::milliseconds timeout);

  // The socket, for waiting on readiness (replication stream, notifications).
  int socket() const;
  std::string error_message() const;
  // Escapes an identifier ("schema"."table" parts) for SQL text.
  std::string quote_ident(std::string_view ident) const;
  std::string quote_literal(std::string_view text) const;

  // The raw handle, for the replication stream in this component. Ownership stays here.
  pg_conn* native() const { return conn_.get(); }
  // Takes ownership of a connected handle (the replication stream connects by itself).
  static Connection adopt(PgConnPtr conn) { return Connection(std::move(conn)); }

 private:
  static constexpr std::size_t kMaxCachedStatements = 256;

  explicit Connection(PgConnPtr conn) : conn_(std::move(conn)) {}
  Result<QueryResult> check(PgResultPtr res, std::string_view context) const;
  // The prepared statement for `sql`, or nullptr when it is not cached.
  const std::string* cached(const std::string& sql) const;
  // Caches a name for `sql` (nullptr when the cache is full); the caller prepares it and
  // forgets it on failure.
  const std::string* remember(const std::string& sql);
  void forget(const std::string& sql) { statements_.erase(sql); }
  // Sends the deferred statements in their own round trip (before a call that cannot carry
  // them: a script, a PREPARE, LISTEN).
  Status send_deferred();
  Result<std::vector<QueryResult>> run_pipeline(std::span<const Statement> statements);

  PgConnPtr conn_;
  std::unordered_map<std::string, std::string> statements_;  // SQL text -> prepared name
  std::uint64_t next_statement_ = 0;
  std::vector<Statement> deferred_;
};

// Errors from a result: classifies the SQLSTATE into a Code.
Error error_from_result(const pg_result* res, std::string_view context);

}  // namespace hi::pg
