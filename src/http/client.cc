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

Result<ClientResponse> fetch(const ClientRequest& request) {
  const std::string where = "http " + request.method + " " + request.url.authority();
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
  req.keep_alive(false);
  req.body() = request.body;
  req.prepare_payload();

  // Asynchronous operations on a private context, so that one timer bounds the whole exchange
  // (Beast's synchronous calls have no timeouts).
  net::io_context ioc(1);
  tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  net::steady_timer deadline(ioc);
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(request.max_response_bytes));
  parser.header_limit(64 << 10);
  beast::flat_buffer buffer;
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
  resolver.async_resolve(
      request.url.host, std::to_string(request.url.port),
      [&](const beast::error_code& ec, const tcp::resolver::results_type& endpoints) {
        if (ec) return fail("resolve", ec);
        stream.async_connect(endpoints, [&](const beast::error_code& ec, const tcp::endpoint&) {
          if (ec) return fail("connect", ec);
          bhttp::async_write(stream, req, [&](const beast::error_code& ec, std::size_t) {
            if (ec) return fail("send", ec);
            bhttp::async_read(stream, buffer, parser,
                              [&](const beast::error_code& ec, std::size_t) {
                                if (ec) return fail("receive", ec);
                                done = true;
                                deadline.cancel();
                              });
          });
        });
      });
  ioc.run();

  if (!done && timed_out) {
    return Error{Code::kDeadlineExceeded,
                 where + ": no response within " + std::to_string(request.timeout.count()) + " ms"};
  }
  if (!done) return failure.value_or(unavailable(where + ": no response"));
  auto msg = parser.release();
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

}  // namespace hi::http
