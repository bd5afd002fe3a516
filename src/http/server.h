// The asynchronous HTTP/1.1 server (Boost.Beast) every HTTP-speaking part uses.
//
//   http::Router router;
//   router.add("GET", "/api/portfolio", get_portfolio);      // runs on the worker pool
//   http::ServerOptions o;
//   o.port = 8080;
//   o.metrics = &metrics;
//   auto server = http::Server::start(o, std::move(router), Logger("http"));
//   if (!server) return server.error();                     // e.g. the port is taken
//   ...
//   (*server)->stop();                                      // graceful; also in the destructor
//
// Threads: `io_threads` run every connection (no thread per connection, so thousands of open
// streams cost sockets, not threads); each connection is served by one thread at a time.
// Handlers run where their route says (router.h): on the bounded worker pool, or inline on the
// I/O thread. When the pool's queue is full the server answers 503 `overloaded` with
// Retry-After at once instead of queueing.
//
// Per connection: keep-alive; requests are read one at a time (a pipelined request waits for the
// previous response). Timeouts: `idle_timeout` for the first byte of a request, `header_timeout`
// for the rest of its header, `body_timeout` for its body, `write_timeout` for each write; a
// connection that misses one is closed. A body over `body_limit` is 413 (the connection closes
// after it). Every response carries X-Request-Id: the client's when sane (message.h), else a new
// UUIDv7. Every error, the server's own (400, 404, 405, 413, 431, 500, 503) and the handlers'
// (Response::fail), has the shape of error.h.
//
// Metrics (when `metrics` is set): hashinsight_http_requests_total and
// hashinsight_http_request_duration_seconds (header read -> response ready to send, the stream
// head for a stream), labelled route (the pattern; "unmatched" for 404s), method, status. They
// are recorded before the write, so a client that has its answer sees it counted.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "http/router.h"

namespace hi::http {

struct ServerOptions {
  std::string address = "127.0.0.1";  // "0.0.0.0" for every interface
  std::uint16_t port = 0;             // 0: the kernel picks (see Server::port())
  std::size_t io_threads = 2;
  std::size_t workers = 4;
  std::size_t worker_queue = 64;  // requests that may wait for a busy worker
  std::size_t body_limit = std::size_t{1} << 20;
  std::size_t header_limit = std::size_t{16} << 10;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  int retry_after_seconds = 1;  // Retry-After of a 503 overloaded
  Metrics* metrics = nullptr;   // not owned; must outlive the server
};

class Server {
 public:
  // Binds, listens and starts serving. kInvalidArgument for a bad address, kUnavailable when
  // the port cannot be bound.
  static Result<std::unique_ptr<Server>> start(const ServerOptions& options, Router router,
                                               Logger log);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound port (the kernel's choice when the options said 0).
  std::uint16_t port() const;

  // Graceful shutdown: stops accepting; closes idle connections; lets every request in flight
  // finish and be answered (with Connection: close); ends open streams. Connections still busy
  // after `grace` are closed. Returns once the I/O threads are joined and no handler runs (a
  // running handler is waited for, never abandoned). Idempotent; not from a handler.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hi::http
