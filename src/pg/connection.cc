#include "pg/connection.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cstdlib>
#include <cstring>

#include "core/log.h"

namespace hi::pg {

void PgConnCloser::operator()(pg_conn* c) const noexcept { PQfinish(c); }
void PgResultCloser::operator()(pg_result* r) const noexcept { PQclear(r); }

namespace {

// SQLSTATE classes worth a retry: connection exceptions, serialization failure, deadlock,
// admin shutdown, too many connections.
bool retryable_sqlstate(std::string_view state) {
  return state.starts_with("08") || state == "40001" || state == "40P01" ||
         state.starts_with("57P") || state == "53300";
}

std::vector<const char*> param_pointers(const Params& params) {
  std::vector<const char*> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back(p ? p->c_str() : nullptr);
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The server's notices and warnings as log lines of their own, not libpq's raw "NOTICE: ..."
// on stderr between the JSON lines. Notices (an IF NOT EXISTS that found the object) are debug;
// warnings stay visible.
void log_notice(void*, const PGresult* res) {
  static const Logger log("postgres");
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const bool warning = severity != nullptr && std::strcmp(severity, "WARNING") == 0;
  const LogLevel level = warning ? LogLevel::kWarn : LogLevel::kDebug;
  if (!log.enabled(level)) return;
  Logger::Fields fields = {{"severity", severity != nullptr ? severity : "NOTICE"}};
  const std::pair<const char*, int> extra[] = {{"sqlstate", PG_DIAG_SQLSTATE},
                                               {"detail", PG_DIAG_MESSAGE_DETAIL},
                                               {"hint", PG_DIAG_MESSAGE_HINT}};
  for (const auto& [name, code] : extra) {
    if (const char* v = PQresultErrorField(res, code)) fields[name] = v;
  }
  const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  log.log(level, primary != nullptr ? primary : "notice", fields);
}

}  // namespace

Error error_from_result(const pg_result* res, std::string_view context) {
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  std::string msg(context);
  msg += ": ";
  msg += trim(PQresultErrorMessage(res));
  Code code = Code::kInternal;
  if (state != nullptr) {
    msg += " (SQLSTATE ";
    msg += state;
    msg += ")";
    const std::string_view s(state);
    if (retryable_sqlstate(s)) {
      code = Code::kUnavailable;
    } else if (s.starts_with("22") || s.starts_with("23") || s.starts_with("42")) {
      code = Code::kInvalidArgument;
    } else if (s == "55000" || s.starts_with("55")) {
      code = Code::kFailedPrecondition;
    }
  } else {
    code = Code::kUnavailable;  // no SQLSTATE: the connection failed
  }
  return Error{code, std::move(msg)};
}

int QueryResult::rows() const { return res_ ? PQntuples(res_.get()) : 0; }
int QueryResult::columns() const { return res_ ? PQnfields(res_.get()) : 0; }
bool QueryResult::is_null(int row, int col) const { return PQgetisnull(res_.get(), row, col); }
std::string_view QueryResult::text(int row, int col) const {
  return {PQgetvalue(res_.get(), row, col),
          static_cast<std::size_t>(PQgetlength(res_.get(), row, col))};
}
std::optional<std::string> QueryResult::opt_text(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return std::string(text(row, col));
}
std::int64_t QueryResult::int64(int row, int col) const {
  return std::strtoll(PQgetvalue(res_.get(), row, col), nullptr, 10);
}
double QueryResult::float64(int row, int col) const {
  return std::strtod(PQgetvalue(res_.get(), row, col), nullptr);
}
bool QueryResult::boolean(int row, int col) const {
  return PQgetvalue(res_.get(), row, col)[0] == 't';
}
int QueryResult::column_index(const char* name) const { return PQfnumber(res_.get(), name); }
std::string_view QueryResult::column_name(int col) const { return PQfname(res_.get(), col); }
std::int64_t QueryResult::affected() const {
  const char* n = PQcmdTuples(res_.get());
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}

Result<Connection> Connection::connect(const std::string& conninfo, const std::string& role) {
  PgConnPtr conn(PQconnectdb(conninfo.c_str()));  // owned before checking: PQfinish always
  if (!conn) return unavailable("pg connect: out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    const char* host = PQhost(conn.get());
    const char* port = PQport(conn.get());
    return unavailable("pg connect host=" + std::string(host ? host : "?") + " port=" +
                       std::string(port ? port : "?") + ": " + trim(PQerrorMessage(conn.get())));
  }
  PQsetNoticeReceiver(conn.get(), log_notice, nullptr);
  Connection c(std::move(conn));
  if (!role.empty()) {
    auto r = c.exec("SET ROLE " + c.quote_ident(role));
    if (!r) return r.error().wrap("pg connect");
  }
  return c;
}

bool Connection::healthy() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }

bool Connection::in_transaction() const {
  if (!conn_) return false;
  const auto status = PQtransactionStatus(conn_.get());
  return status == PQTRANS_INTRANS || status == PQTRANS_INERROR;
}

Result<QueryResult> Connection::check(PgResultPtr res, std::string_view context) const {
  if (!res) return unavailable(std::string(context) + ": " + trim(PQerrorMessage(conn_.get())));
  const auto st = PQresultStatus(res.get());
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE ||
      st == PGRES_COPY_BOTH || st == PGRES_COPY_IN || st == PGRES_COPY_OUT ||
      st == PGRES_PIPELINE_SYNC) {
    return QueryResult(std::move(res));
  }
  return error_from_result(res.get(), context);
}

namespace {
std::string context_of(std::string_view sql) {
  std::string s(sql.substr(0, 60));
  for (auto& c : s) {
    if (c == '\n') c = ' ';
  }
  return "pg query '" + s + (sql.size() > 60 ? "...'" : "'");
}
}  // namespace

const std::string* Connection::cached(const std::string& sql) const {
  auto it = statements_.find(sql);
  return it == statements_.end() ? nullptr : &it->second;
}

const std::string* Connection::remember(const std::string& sql) {
  if (statements_.size() >= kMaxCachedStatements) return nullptr;
  return &statements_.emplace(sql, "hi_stmt_" + std::to_string(++next_statement_)).first->second;
}

namespace {
// A prepared statement whose result columns changed under it (DDL) must be prepared again.
bool stale_statement(const Error& e) {
  return e.message.find("cached plan must not change result type") != std::string::npos;
}
}  // namespace

Status Connection::send_deferred() {
  if (deferred_.empty()) return {};
  auto r = pipeline({});
  if (!r) return r.error();
  return {};
}

Result<QueryResult> Connection::exec(std::string_view sql, const Params& params) {
  if (!deferred_.empty()) {
    // With a single statement of the extended protocol. Parameterless texts may hold several
    // statements (exec_script), which only the simple protocol takes: those go after.
    if (params.empty()) {
      if (auto s = send_deferred(); !s) return s.error();
    } else {
      const Statement st[] = {{std::string(sql), params, false}};
      auto r = pipeline(st);
      if (!r) return r.error();
      return std::move(r->back());
    }
  }
  const std::string text(sql);
  PgResultPtr res;
  if (params.empty()) {
    res.reset(PQexec(conn_.get(), text.c_str()));
    return check(std::move(res), context_of(sql));
  }
  auto ptrs = param_pointers(params);
  const std::string* name = cached(text);
  if (name == nullptr && (name = remember(text)) != nullptr) {
    PgResultPtr prepared(PQprepare(conn_.get(), name->c_str(), text.c_str(), 0, nullptr));
    if (auto r = check(std::move(prepared), context_of(sql)); !r) {
      forget(text);  // a syntax error, a lost connection: reported as the statement's
      return r.error();
    }
  }
  if (name == nullptr) {
    res.reset(PQexecParams(conn_.get(), text.c_str(), static_cast<int>(ptrs.size()), nullptr,
                           ptrs.data(), nullptr, nullptr, 0));
    return check(std::move(res), context_of(sql));
  }
  res.reset(PQexecPrepared(conn_.get(), name->c_str(), static_cast<int>(ptrs.size()), ptrs.data(),
                           nullptr, nullptr, 0));
  auto r = check(std::move(res), context_of(sql));
  if (!r && stale_statement(r.error())) forget(text);
  return r;
}

Status Connection::exec_script(std::string_view sql) {
  auto r = exec(sql);
  if (!r) return r.error();
  return {};
}

Status Connection::prepare(const std::string& name, std::string_view sql) {
  if (auto s = send_deferred(); !s) return s;
  const std::string text(sql);
  PgResultPtr res(PQprepare(conn_.get(), name.c_str(), text.c_str(), 0, nullptr));
  auto r = check(std::move(res), "pg prepare " + name);
  if (!r) return r.error();
  return {};
}

Result<QueryResult> Connection::exec_prepared(const std::string& name, const Params& params) {
  if (!deferred_.empty()) {
    const Statement st[] = {{name, params, true}};
    auto r = pipeline(st);
    if (!r) return r.error();
    return std::move(r->back());
  }
  auto ptrs = param_pointers(params);
  PgResultPtr res(PQexecPrepared(conn_.get(), name.c_str(), static_cast<int>(ptrs.size()),
                                 ptrs.data(), nullptr, nullptr, 0));
  return check(std::move(res), "pg execute " + name);
}

Result<std::vector<QueryResult>> Connection::pipeline(std::span<const Statement> statements) {
  if (deferred_.empty()) return run_pipeline(statements);
  std::vector<Statement> all = std::move(deferred_);
  deferred_.clear();
  const auto held = static_cast<std::ptrdiff_t>(all.size());
  all.insert(all.end(), statements.begin(), statements.end());
  auto r = run_pipeline(all);
  if (!r) return r.error();
  r->erase(r->begin(), r->begin() + held);
  return r;
}

Result<std::vector<QueryResult>> Connection::run_pipeline(std::span<const Statement> statements) {
  pg_conn* c = conn_.get();
  if (PQenterPipelineMode(c) != 1) return internal_error("pg pipeline: cannot enter pipeline mode");
  struct Exit {
    pg_conn* c;
    ~Exit() { PQexitPipelineMode(c); }
  } exit_guard{c};
  // Every statement goes through the statement cache (a pipeline's statements are single ones,
  // with or without parameters): a new one is prepared in the same round trip, just before it
  // runs.
  std::vector<std::string> preparing;  // SQL texts prepared by this pipeline, in order
  for (const auto& st : statements) {
    auto ptrs = param_pointers(st.params);
    const std::string* name = nullptr;
    if (!st.prepared) {
      name = cached(st.sql_or_name);
      if (name == nullptr && (name = remember(st.sql_or_name)) != nullptr) {
        if (PQsendPrepare(c, name->c_str(), st.sql_or_name.c_str(), 0, nullptr) != 1) {
          forget(st.sql_or_name);
          return unavailable("pg pipeline send: " + trim(PQerrorMessage(c)));
        }
        preparing.push_back(st.sql_or_name);
      }
    }
    if (st.prepared) name = &st.sql_or_name;
    const int ok = name != nullptr
                       ? PQsendQueryPrepared(c, name->c_str(), static_cast<int>(ptrs.size()),
                                             ptrs.data(), nullptr, nullptr, 0)
                       : PQsendQueryParams(c, st.sql_or_name.c_str(), static_cast<int>(ptrs.size()),
                                           nullptr, ptrs.data(), nullptr, nullptr, 0);
    if (ok != 1) return unavailable("pg pipeline send: " + trim(PQerrorMessage(c)));
  }
  if (PQpipelineSync(c) != 1) return unavailable("pg pipeline sync: " + trim(PQerrorMessage(c)));
  std::vector<QueryResult> out;
  out.reserve(statements.size());
  std::optional<Error> first_error;
  std::size_t prepares_seen = 0;
  // Each command yields its result followed by a NULL; the sync yields PGRES_PIPELINE_SYNC.
  for (std::size_t i = 0; i < statements.size(); ++i) {
    const Statement& st = statements[i];
    if (prepares_seen < preparing.size() && preparing[prepares_seen] == st.sql_or_name &&
        !st.prepared) {
      PgResultPtr res(PQgetResult(c));
      if (!res) return unavailable("pg pipeline: connection lost: " + trim(PQerrorMessage(c)));
      const auto status = PQresultStatus(res.get());
      if (status != PGRES_COMMAND_OK) {
        forget(st.sql_or_name);
        if (!first_error && status != PGRES_PIPELINE_ABORTED)
          first_error = error_from_result(res.get(), context_of(st.sql_or_name));
      }
      PgResultPtr end(PQgetResult(c));
      ++prepares_seen;
    }
    PgResultPtr res(PQgetResult(c));
    if (!res) return unavailable("pg pipeline: connection lost: " + trim(PQerrorMessage(c)));
    const auto status = PQresultStatus(res.get());
    if (status == PGRES_PIPELINE_ABORTED) {
      if (!first_error) first_error = internal_error("pg pipeline: aborted");
    } else if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      Error e = error_from_result(res.get(), context_of(st.sql_or_name));
      if (stale_statement(e) && !st.prepared) forget(st.sql_or_name);
      if (!first_error) first_error = std::move(e);
    } else {
      out.emplace_back(std::move(res));
    }
    PgResultPtr end(PQgetResult(c));  // NULL terminator of this statement
  }
  for (;;) {
    PgResultPtr res(PQgetResult(c));
    if (!res) break;
    if (PQresultStatus(res.get()) == PGRES_PIPELINE_SYNC) break;
  }
  if (first_error) return *first_error;
  return out;
}

Status Connection::listen(const std::string& channel) {
  auto r = exec("LISTEN " + quote_ident(channel));
  if (!r) return r.error();
  return {};
}

Result<std::optional<Connection::Notification>> Connection::wait_notification(
    std::chrono::milliseconds timeout) {
  pg_conn* c = conn_.get();
  auto take = [&]() -> std::optional<Notification> {
    PGnotify* n = PQnotifies(c);
    if (n == nullptr) return std::nullopt;
    Notification out{n->relname, n->extra ? n->extra : ""};
    PQfreemem(n);
    return out;
  };
  if (PQconsumeInput(c) != 1) return unavailable("pg notify: " + trim(PQerrorMessage(c)));
  if (auto n = take()) return n;
  pollfd pfd{PQsocket(c), POLLIN, 0};
  const int r = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (r < 0) return unavailable("pg notify: poll failed");
  if (r == 0) return std::optional<Notification>{};
  if (PQconsumeInput(c) != 1) return unavailable("pg notify: " + trim(PQerrorMessage(c)));
  return take();
}

int Connection::socket() const { return PQsocket(conn_.get()); }
std::string Connection::error_message() const { return trim(PQerrorMessage(conn_.get())); }

std::string Connection::quote_ident(std::string_view ident) const {
  char* q = PQescapeIdentifier(conn_.get(), ident.data(), ident.size());
  if (q == nullptr) return "\"\"";
  std::string out(q);
  PQfreemem(q);
  return out;
}

std::string Connection::quote_literal(std::string_view text) const {
  char* q = PQescapeLiteral(conn_.get(), text.data(), text.size());
  if (q == nullptr) return "''";
  std::string out(q);
  PQfreemem(q);
  return out;
}

}  // namespace hi::pg
