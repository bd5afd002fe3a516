// Transactions, scoped to one tenant for row-level security.
//
// Every tenant-owned table has a policy `tenant_id = current_setting('app.tenant_id', true)`;
// a Transaction opened for a tenant sets that setting LOCAL to the transaction, so nothing of
// another tenant is visible or writable inside it, and nothing leaks to the next user of the
// pooled connection.
//
//   pg::Transaction tx(conn);
//   if (auto s = tx.begin(tenant_id); !s) return s.error();
//   ... conn.exec(...) ...
//   return tx.commit();            // not committed -> rolled back when tx is destroyed
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "pg/connection.h"

namespace hi::pg {

class Transaction {
 public:
  explicit Transaction(Connection& conn) : conn_(conn) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // BEGIN, then set app.tenant_id locally when a tenant is given. kWithFirstStatement holds
  // both back to ride in the first statement's round trip (Connection::defer): a failure to
  // begin is then that statement's, and a transaction that runs nothing costs nothing. Only
  // for callers that talk to the server through exec(), exec_prepared() and pipeline().
  enum class Start { kNow, kWithFirstStatement };
  Status begin(std::optional<std::string> tenant_id = std::nullopt, Start start = Start::kNow);
  Status commit();
  // Runs `last` and COMMIT in one pipeline: the transaction ends with its last writes' round
  // trip. On an error nothing is committed (the destructor or rollback() ends what is left);
  // the results are last's.
  Result<std::vector<QueryResult>> commit_with(std::span<const Statement> last);
  Status rollback();
  bool active() const { return active_; }

 private:
  Connection& conn_;
  bool active_ = false;
};

// Runs fn(conn) in a transaction for `tenant_id`; commits on success, rolls back on error.
template <typename Fn>
auto in_transaction(Connection& conn, std::optional<std::string> tenant_id, Fn&& fn)
    -> decltype(fn(conn)) {
  Transaction tx(conn);
  if (auto s = tx.begin(std::move(tenant_id)); !s) return s.error();
  auto result = fn(conn);
  if (!result) return result;
  if (auto s = tx.commit(); !s) return s.error();
  return result;
}

}  // namespace hi::pg
