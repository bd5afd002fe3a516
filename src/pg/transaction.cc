#include "pg/transaction.h"

namespace hi::pg {

Transaction::~Transaction() {
  if (active_) (void)rollback();
}

Status Transaction::begin(std::optional<std::string> tenant_id, Start start) {
  if (start == Start::kWithFirstStatement) {
    conn_.defer({"BEGIN", {}, false});
    if (tenant_id) {
      conn_.defer({"SELECT set_config('app.tenant_id', $1, true)", {*tenant_id}, false});
    }
  } else if (tenant_id) {
    // One round trip: BEGIN and the tenant setting in a pipeline.
    const Statement st[] = {{"BEGIN", {}, false},
                            {"SELECT set_config('app.tenant_id', $1, true)", {*tenant_id}, false}};
    auto r = conn_.pipeline(st);
    if (!r) return r.error().wrap("begin tenant=" + *tenant_id);
  } else {
    auto r = conn_.exec("BEGIN");
    if (!r) return r.error();
  }
  active_ = true;
  return {};
}

Status Transaction::commit() {
  active_ = false;
  if (conn_.has_deferred()) {  // nothing ran: the transaction never reached the server
    conn_.drop_deferred();
    return {};
  }
  auto r = conn_.exec("COMMIT");
  if (!r) return r.error();
  return {};
}

Result<std::vector<QueryResult>> Transaction::commit_with(std::span<const Statement> last) {
  std::vector<Statement> all(last.begin(), last.end());
  all.push_back({"COMMIT", {}, false});
  auto r = conn_.pipeline(all);
  if (!r) return r.error();
  active_ = false;
  r->pop_back();
  return r;
}

Status Transaction::rollback() {
  active_ = false;
  if (conn_.has_deferred()) {
    conn_.drop_deferred();
    return {};
  }
  auto r = conn_.exec("ROLLBACK");
  if (!r) return r.error();
  return {};
}

}  // namespace hi::pg
