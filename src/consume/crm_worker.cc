#include "consume/crm_worker.h"

#include "http/client.h"

namespace hi::consume {

Result<std::unique_ptr<CrmHandler>> CrmHandler::create(const CrmOptions& options) {
  auto url = http::parse_url(options.webhook_url);
  if (!url) return url.error().wrap("webhook");
  return std::unique_ptr<CrmHandler>(new CrmHandler(std::move(*url), options.timeout));
}

Result<ApplyOutcome> CrmHandler::apply(pg::Connection&, const TenantBatch& batch) {
  for (const auto& u : batch.users) {
    for (const Event* e : u.events) {
      http::ClientRequest request;
      request.method = "POST";
      request.url = url_;
      request.body = e->delivery->value;
      request.headers = {
          {"Idempotency-Key", e->id}, {"X-Event-Kind", e->kind}, {"X-Tenant-Id", e->tenant_id}};
      request.timeout = timeout_;
      auto response = http::fetch(request);
      // A webhook failure is the event's (counted toward its attempts), not a database outage.
      if (!response) return Error{Code::kInternal, "webhook: " + response.error().message};
      if (response->status < 200 || response->status >= 300) {
        return internal_error("webhook answered HTTP " + std::to_string(response->status) +
                              " to event " + e->id);
      }
    }
  }
  return ApplyOutcome{};
}

}  // namespace hi::consume
