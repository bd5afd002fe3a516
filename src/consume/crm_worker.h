// The crm worker (group crm-sync-group, topic events.crm): delivers each event to a webhook.
//
// POST <CRM_WEBHOOK_URL> with the event's value (the envelope) as the body and headers
// Idempotency-Key = event id, X-Event-Kind, X-Tenant-Id; any 2xx is success. The delivery
// happens inside the tenant transaction that inserts the event's inbox row, and the
// transaction commits only after the receiver answered 2xx: an event is never recorded as
// delivered when it was not. The converse cannot be made atomic with a remote HTTP server (a
// crash between the 2xx and the commit delivers again), so receivers deduplicate by the
// Idempotency-Key. A failed delivery (timeout, connection refused, non-2xx) is retried by the
// runtime with backoff and dead-lettered after the configured attempts.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "consume/runtime.h"
#include "http/uri.h"

namespace hi::consume {

inline constexpr const char* kCrmGroup = "crm-sync-group";

struct CrmOptions {
  std::string webhook_url;
  std::chrono::milliseconds timeout{5000};
};

class CrmHandler final : public Handler {
 public:
  static Result<std::unique_ptr<CrmHandler>> create(const CrmOptions& options);
  Result<ApplyOutcome> apply(pg::Connection& conn, const TenantBatch& batch) override;

 private:
  CrmHandler(http::Url url, std::chrono::milliseconds timeout)
      : url_(std::move(url)), timeout_(timeout) {}
  http::Url url_;
  std::chrono::milliseconds timeout_;
};

}  // namespace hi::consume
