#include "http/client.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
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
Result<bhttp::request<bhttp::string_body>> build_request(const ClientRequest& request,
                                                         const std::string& where,
                                                         bool keep_alive) {
  if (!token(request.method)) return invalid_argument(where + ": bad method");
  if (request.url.target.empty() || request.url.target[0] != '/' ||
      !field_value(request.url.target) || request.url.target.find(' ') != std::string::npos) {
    return invalid_argument(where + ": bad target '" + request.url.target + "'");
  }
  bhttp::request<bhttp::string_body> req;
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
  req.body() = request.body;
  req.prepare_payload();
  return req;
}

}  // namespace

struct Session::Impl {
  net::io_context ioc{1};
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  std::string connected_to;  // authority of the open connection; "" = none

  void close() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
    buffer.clear();
    connected_to.clear();
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
  const std::string where = "http " + request.method + " " + request.url.authority();
  auto req = build_request(request, where, keep_alive);
  if (!req) return req.error();
  if (connected_to != request.url.authority()) close();
  reused = !connected_to.empty();
  answered = false;

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

  const auto fail = [&](std::string_view stage, const beast::error_code& ec) {
    if (!failure) failure = unavailable(where + ": " + std::string(stage) + ": " + ec.message());
    deadline.cancel();
  };
  deadline.expires_after(request.timeout);
  deadline.async_wait([&](const beast::error_code& ec) {
    if (ec || done) return;
    timed_out = true;
    resolver.cancel();
    beast::error_code ignored;
    stream.socket().close(ignored);
  });
  const auto send = [&] {
    bhttp::async_write(stream, *req, [&](const beast::error_code& ec, std::size_t) {
      if (ec) return fail("send", ec);
      bhttp::async_read(stream, buffer, parser, [&](const beast::error_code& ec, std::size_t) {
        answered = parser.got_some();
        if (ec) return fail("receive", ec);
        done = true;
        deadline.cancel();
      });
    });
  };
  if (reused) {
    send();
  } else {
    resolver.async_resolve(
        request.url.host, std::to_string(request.url.port),
        [&](const beast::error_code& ec, const tcp::resolver::results_type& endpoints) {
          if (ec) return fail("resolve", ec);
          stream.async_connect(endpoints, [&](const beast::error_code& ec, const tcp::endpoint&) {
            if (ec) return fail("connect", ec);
            send();
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
    connected_to = request.url.authority();
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
