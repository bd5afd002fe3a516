#include "pg/transaction.h"

namespace hi::pg {

Transaction::~Transaction() {
  if (active_) (void)rollback();
}

Status Transaction::begin(std::optional<std::string> tenant_id) {
  if (tenant_id) {
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
  auto r = conn_.exec("COMMIT");
  if (!r) return r.error();
  return {};
}

Status Transaction::rollback() {
  active_ = false;
  auto r = conn_.exec("ROLLBACK");
  if (!r) return r.error();
  return {};
}

}  // namespace hi::pg
