#include "http/part_endpoint.h"

namespace hi::http {

Router part_routes(const Metrics& metrics) {
  Router router;
  router.add(
      "GET", "/metrics",
      [&metrics](Request&) {
        return Response::text(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
      },
      Execution::kInline);
  router.add(
      "GET", "/alive",
      [](Request&) {
        return Response::json({{"status", "alive"}});
      },
      Execution::kInline);
  return router;
}

Result<std::unique_ptr<Server>> start_part_endpoint(int port, const Metrics& metrics, Logger log,
                                                    std::string address) {
  if (port == 0) return std::unique_ptr<Server>();
  if (port < 0 || port > 65535) {
    return invalid_argument("metrics port " + std::to_string(port) + " is out of range");
  }
  ServerOptions o;
  o.address = std::move(address);
  o.port = static_cast<std::uint16_t>(port);
  o.io_threads = 1;
  o.workers = 1;  // every route is inline; the pool stays idle
  o.worker_queue = 0;
  auto server = Server::start(o, part_routes(metrics), std::move(log));
  if (!server) return server.error().wrap("metrics endpoint");
  return std::move(*server);
}

}  // namespace hi::http
