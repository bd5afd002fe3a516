// A blocking HTTP/1.1 client for webhooks and sinks: one request, one connection, a deadline on
// the whole exchange (name resolution, connect, send, receive).
//
//   auto url = http::parse_url("http://crm.internal:8099/hooks");       // once, at start-up
//   http::ClientRequest req;
//   req.method = "POST";
//   req.url = *url;
//   req.body = json;
//   req.headers = {{"Idempotency-Key", id}};
//   auto r = http::fetch(req);
//   if (!r) ...            // kDeadlineExceeded: no answer in time; kUnavailable: no connection
//   if (r->status / 100 != 2) ...
//
// https:// URLs go over TLS (1.2 or later, OpenSSL): the server's certificate must chain to
// `ca_file` (PEM), or to the system's trust store when it is empty, and name the URL's host (a
// DNS name or an IP address in its subjectAltName). There is no way to turn the check off.
//
// Thread-safe: each call has its own I/O context and connection. Name resolution runs in the
// system resolver, whose own timeout bounds a hung DNS server.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "http/uri.h"

namespace hi::http {

struct ClientRequest {
  std::string method = "GET";
  Url url;
  std::string body;
  // Sent as given, after Host and User-Agent; Content-Type defaults to application/json when
  // there is a body and no Content-Type here. A name or value holding CR, LF or NUL is refused
  // (kInvalidArgument): values often come from data, and must not add headers.
  Pairs headers;
  std::chrono::milliseconds timeout{5000};
  std::size_t max_response_bytes = std::size_t{16} << 20;
  // https: the CA certificates (PEM) the server's chain must end in; "" = the system's.
  std::string ca_file;
};

struct ClientResponse {
  int status = 0;
  std::string body;
  Pairs headers;  // names in lower case

  std::optional<std::string_view> header(std::string_view name) const;  // any case
};

// Any status is a response (a 500 is not an Error). kDeadlineExceeded when `timeout` passes
// first; kUnavailable when the host does not resolve, the connection fails, the TLS handshake
// fails (the message says why: "certificate verify failed") or the peer does not answer with
// HTTP; kInvalidArgument for a request that cannot be sent or a `ca_file` that cannot be read.
Result<ClientResponse> fetch(const ClientRequest& request);

// A connection kept open from one request to the next (HTTP/1.1 keep-alive), as a browser keeps
// one to its origin: for a client that sends many requests (the load generators). A request to
// another host or port, or after the server closed the connection, connects anew. When a reused
// connection turns out closed before any byte of the answer arrived, the request is sent once
// more on a new connection (the server never read it; as browsers do). Errors as fetch().
// Not thread-safe: one per thread.
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Result<ClientResponse> fetch(const ClientRequest& request);

 private:
  friend Result<ClientResponse> fetch(const ClientRequest& request);  // a session of one
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hi::http
