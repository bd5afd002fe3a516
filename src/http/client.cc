#include "http/client.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

namespace hi::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

beast::string_view bview(std::string_view s) { return {s.data(), s.size()}; }

bool token(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (c <= 0x20 || c >= 0x7f || c == ':' || c == '(' || c == ')' || c == ',' || c == '"') {
      return false;
    }
  }
  return true;
}

bool field_value(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

}  // namespace

std::optional<std::string_view> ClientResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (beast::iequals(bview(k), bview(name))) return std::string_view(v);
  }
  return std::nullopt;
}

namespace {

// The request as Beast sends it, or why it cannot be sent.
// The body is sent from the caller's string, not copied (a sink's insert is megabytes).
using OutRequest = bhttp::request<bhttp::span_body<char>>;

Result<OutRequest> build_request(const ClientRequest& request, const std::string& where,
                                 bool keep_alive) {
  if (!token(request.method)) return invalid_argument(where + ": bad method");
  if (request.url.target.empty() || request.url.target[0] != '/' ||
      !field_value(request.url.target) || request.url.target.find(' ') != std::string::npos) {
    return invalid_argument(where + ": bad target '" + request.url.target + "'");
  }
  OutRequest req;
  req.method_string(bview(request.method));
  req.target(bview(request.url.target));
  req.version(11);
  req.set(bhttp::field::host, bview(request.url.authority()));
  req.set(bhttp::field::user_agent, "hashinsight");
  bool has_content_type = false;
  for (const auto& [name, value] : request.headers) {
    if (!token(name) || !field_value(value)) {
      return invalid_argument(where + ": header '" + name + "' cannot be sent as given");
    }
    has_content_type = has_content_type || beast::iequals(bview(name), "content-type");
    req.insert(bview(name), bview(value));
  }
  if (!request.body.empty() && !has_content_type) {
    req.set(bhttp::field::content_type, "application/json");
  }
  req.keep_alive(keep_alive);
  // span_body's writer only reads the span.
  req.body() =
      boost::beast::span<char>(const_cast<char*>(request.body.data()), request.body.size());
  req.prepare_payload();
  return req;
}

}  // namespace

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

struct Session::Impl {
  net::io_context ioc{1};
  beast::tcp_stream stream{ioc};   // http
  std::unique_ptr<TlsStream> tls;  // https: the open connection, or the one being opened
  std::optional<net::ssl::context> tls_context;
  std::string tls_context_ca;  // the ca_file tls_context trusts
  beast::flat_buffer buffer;
  std::string connected_to;  // scheme, authority and CA of the open connection; "" = none

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : stream; }

  void close() {
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().socket().close(ignored);
    tls.reset();
    buffer.clear();
    connected_to.clear();
  }

  // A TLS client context trusting `ca_file` (the system's store when empty), kept while the
  // requests name the same file.
  Result<net::ssl::context*> context_for(const std::string& ca_file) {
    if (tls_context && tls_context_ca == ca_file) return &*tls_context;
    net::ssl::context ctx(net::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    beast::error_code ec;
    if (ca_file.empty()) {
      ctx.set_default_verify_paths(ec);
    } else {
      ctx.load_verify_file(ca_file, ec);
    }
    if (ec) {
      return invalid_argument("https: cannot load the CA certificates '" + ca_file +
                              "': " + ec.message());
    }
    ctx.set_verify_mode(net::ssl::verify_peer);
    tls_context.emplace(std::move(ctx));
    tls_context_ca = ca_file;
    return &*tls_context;
  }

  // A new TLS stream for `url`: the certificate must chain to the context's CAs and name the
  // host (X509_check_host / X509_check_ip); SNI carries a DNS name (never an address, RFC 6066).
  Status open_tls(const Url& url, const std::string& ca_file) {
    auto ctx = context_for(ca_file);
    if (!ctx) return ctx.error();
    tls = std::make_unique<TlsStream>(ioc, **ctx);
    beast::error_code ec;
    (void)net::ip::make_address(url.host, ec);
    if (ec && SSL_set_tlsext_host_name(tls->native_handle(), url.host.c_str()) != 1) {
      return invalid_argument("https: bad host name for SNI '" + url.host + "'");
    }
    tls->set_verify_mode(net::ssl::verify_peer);
    tls->set_verify_callback(net::ssl::host_name_verification(url.host));
    return {};
  }

  // Why a handshake failed, with OpenSSL's verdict on the certificate when it was refused.
  std::string handshake_failure(const beast::error_code& ec) {
    std::string out = ec.message();
    if (tls) {
      const long v = SSL_get_verify_result(tls->native_handle());
      if (v != X509_V_OK) out += std::string(": ") + X509_verify_cert_error_string(v);
    }
    return out;
  }

  // One exchange; `reused` is set when it went over a connection opened before, and
  // `answered` when any byte of a response arrived.
  Result<ClientResponse> exchange(const ClientRequest& request, bool keep_alive, bool& reused,
                                  bool& answered);
};

Session::Session() : impl_(std::make_unique<Impl>()) {}
Session::~Session() = default;

Result<ClientResponse> Session::Impl::exchange(const ClientRequest& request, bool keep_alive,
                                               bool& reused, bool& answered) {
  const std::string where =
      (request.url.tls ? "https " : "http ") + request.method + " " + request.url.authority();
  auto req = build_request(request, where, keep_alive);
  if (!req) return req.error();
  const std::string connection = (request.url.tls ? "https://" : "http://") +
                                 request.url.authority() + " " +
                                 (request.url.tls ? request.ca_file : "");
  if (connected_to != connection) close();
  reused = !connected_to.empty();
  answered = false;
  if (request.url.tls && !reused) {
    if (Status s = open_tls(request.url, request.ca_file); !s) {
      tls.reset();
      return s.error();
    }
  }

  // Asynchronous operations on the session's context, so that one timer bounds the whole
  // exchange (Beast's synchronous calls have no timeouts).
  ioc.restart();
  tcp::resolver resolver(ioc);
  net::steady_timer deadline(ioc);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(request.max_response_bytes));
  parser.header_limit(64 << 10);
  bool timed_out = false;
  bool done = false;
  std::optional<Error> failure;

  const auto fail = [&](std::string_view stage, const std::string& why) {
    if (!failure) failure = unavailable(where + ": " + std::string(stage) + ": " + why);
    deadline.cancel();
  };
  deadline.expires_after(request.timeout);
  deadline.async_wait([&](const beast::error_code& ec) {
    if (ec || done) return;
    timed_out = true;
    resolver.cancel();
    beast::error_code ignored;
    lowest().socket().close(ignored);
  });
  const auto send_on = [&](auto& s) {
    auto* on = &s;
    bhttp::async_write(*on, *req, [&, on](const beast::error_code& ec, std::size_t) {
      if (ec) return fail("send", ec.message());
      bhttp::async_read(*on, buffer, parser, [&](const beast::error_code& ec, std::size_t) {
        answered = parser.got_some();
        if (ec) return fail("receive", ec.message());
        done = true;
        deadline.cancel();
      });
    });
  };
  const auto send = [&] {
    if (tls) {
      send_on(*tls);
    } else {
      send_on(stream);
    }
  };
  if (reused) {
    send();
  } else {
    resolver.async_resolve(
        request.url.host, std::to_string(request.url.port),
        [&](const beast::error_code& ec, const tcp::resolver::results_type& endpoints) {
          if (ec) return fail("resolve", ec.message());
          lowest().async_connect(endpoints, [&](const beast::error_code& ec, const tcp::endpoint&) {
            if (ec) return fail("connect", ec.message());
            if (!tls) return send();
            tls->async_handshake(net::ssl::stream_base::client, [&](const beast::error_code& ec) {
              if (ec) return fail("tls handshake", handshake_failure(ec));
              send();
            });
          });
        });
  }
  ioc.run();

  if (!done) {
    close();
    if (timed_out) {
      return Error{Code::kDeadlineExceeded, where + ": no response within " +
                                                std::to_string(request.timeout.count()) + " ms"};
    }
    return failure.value_or(unavailable(where + ": no response"));
  }
  auto msg = parser.release();
  if (keep_alive && msg.keep_alive()) {
    connected_to = connection;
  } else {
    close();
  }
  ClientResponse out;
  out.status = static_cast<int>(msg.result_int());
  for (const auto& field : msg) {
    std::string name(field.name_string().data(), field.name_string().size());
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    out.headers.emplace_back(std::move(name),
                             std::string(field.value().data(), field.value().size()));
  }
  out.body = std::move(msg.body());
  return out;
}

Result<ClientResponse> Session::fetch(const ClientRequest& request) {
  bool reused = false, answered = false;
  auto r = impl_->exchange(request, true, reused, answered);
  if (r || !reused || answered || r.error().code != Code::kUnavailable) return r;
  // The server closed the idle connection before it read the request: a new one.
  return impl_->exchange(request, true, reused, answered);
}

Result<ClientResponse> fetch(const ClientRequest& request) {
  Session once;
  bool reused = false, answered = false;
  return once.impl_->exchange(request, false, reused, answered);
}

}  // namespace hi::http
