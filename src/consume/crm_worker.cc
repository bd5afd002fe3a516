#include "consume/crm_worker.h"

namespace hi::consume {

Result<std::unique_ptr<CrmHandler>> CrmHandler::create(const CrmOptions& options) {
  auto url = internal::parse_http_url(options.webhook_url);
  if (!url) return url.error();
  return std::unique_ptr<CrmHandler>(new CrmHandler(std::move(*url), options.timeout));
}

Result<ApplyOutcome> CrmHandler::apply(pg::Connection&, const TenantBatch& batch) {
  for (const auto& u : batch.users) {
    for (const Event* e : u.events) {
      auto status = internal::http_post(
          url_, e->delivery->value,
          {{"Idempotency-Key", e->id}, {"X-Event-Kind", e->kind}, {"X-Tenant-Id", e->tenant_id}},
          timeout_);
      // A webhook failure is the event's (counted toward its attempts), not a database outage.
      if (!status) return Error{Code::kInternal, status.error().message};
      if (*status < 200 || *status >= 300) {
        return internal_error("webhook answered HTTP " + std::to_string(*status) + " to event " +
                              e->id);
      }
    }
  }
  return ApplyOutcome{};
}

}  // namespace hi::consume
