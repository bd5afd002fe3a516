// The HTTP endpoint of every long-running part (relay, workers, api): `/metrics` (the part's
// registry in the Prometheus text format) and `/alive` (200 {"status":"alive"} while the process
// runs), on the port the part is given (`METRICS_PORT`; 0 = off).
//
//   auto endpoint = http::start_part_endpoint(port, metrics, Logger("relay"));
//   if (!endpoint) fail(...);   // the port is taken
//   // *endpoint is null when port is 0; else it serves until destroyed
#pragma once

#include <memory>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "http/server.h"

namespace hi::http {

// GET /metrics and GET /alive, both inline (cheap, never blocking). `metrics` must outlive the
// server the routes are given to.
Router part_routes(const Metrics& metrics);

// Serves part_routes() on `address`:`port` with one I/O thread. `port` 0 means off: nothing
// listens and the result holds null. Loopback unless told otherwise, like the API's
// HTTP_ADDRESS: a scraper on another machine needs the part started with "0.0.0.0".
Result<std::unique_ptr<Server>> start_part_endpoint(int port, const Metrics& metrics, Logger log,
                                                    std::string address = "127.0.0.1");

}  // namespace hi::http
