// What the HTTP tests share: a client connection driven by hand, to see exactly what goes over
// one socket, and a handler that blocks until the test lets it go.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "http/client.h"
#include "http/message.h"
#include "http/server.h"

namespace hi::http::test {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Reply = bhttp::response<bhttp::string_body>;

inline beast::string_view bview(std::string_view s) { return {s.data(), s.size()}; }

inline std::string header(const Reply& r, std::string_view name) {
  const auto v = r[bview(name)];
  return std::string(v.data(), v.size());
}

inline ClientRequest client_request(std::string method, std::uint16_t port, std::string target,
                                    std::string body = {},
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  ClientRequest r;
  r.method = std::move(method);
  r.url = Url{"127.0.0.1", port, std::move(target)};
  r.body = std::move(body);
  r.timeout = timeout;
  return r;
}

inline std::unique_ptr<Server> serve(Router router, const ServerOptions& options = {}) {
  auto server = Server::start(options, std::move(router), Logger("http"));
  if (!server) throw std::runtime_error(server.error().to_string());
  return std::move(*server);
}

// Blocks a handler until released; each Gate lets one request through.
struct Gate {
  std::latch entered{1};
  std::latch release{1};
  Response pass() {
    entered.count_down();
    release.wait();
    return Response::json({{"passed", true}});
  }
};

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds within = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class Conn {
 public:
  // Throws boost::system::system_error when the connection is refused.
  explicit Conn(std::uint16_t port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  Reply request(std::string_view method, std::string_view target, std::string body = {},
                const Pairs& headers = {}) {
    bhttp::request<bhttp::string_body> req;
    req.method_string(bview(method));
    req.target(bview(target));
    req.version(11);
    req.set(bhttp::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(bview(k), bview(v));
    req.body() = std::move(body);
    req.prepare_payload();
    bhttp::write(socket_, req);
    return read();
  }
  Reply get(std::string_view target, const Pairs& headers = {}) {
    return request("GET", target, {}, headers);
  }
  Reply read() {
    Reply r;
    bhttp::read(socket_, buffer_, r);
    return r;
  }
  void send(std::string_view bytes) {
    net::write(socket_, net::buffer(bytes.data(), bytes.size()));
  }

  // Reads raw bytes until `needle` has arrived (true), or EOF or `wait` passes (false).
  // Everything read so far is raw().
  bool wait_for(std::string_view needle, std::chrono::milliseconds wait = std::chrono::seconds(3)) {
    const auto arrived = [&] { return raw_.find(needle) != std::string::npos; };
    return read_raw(wait, arrived) && arrived();
  }
  // True when the server closes the connection within `wait`; what it sends first goes to raw().
  bool closed_within(std::chrono::milliseconds wait) {
    return read_raw(wait, [] { return false; }) && eof_;
  }
  const std::string& raw() const { return raw_; }
  tcp::socket& socket() { return socket_; }

 private:
  template <typename Done>
  bool read_raw(std::chrono::milliseconds wait, Done done) {
    if (buffer_.size() > 0) {
      raw_ += beast::buffers_to_string(buffer_.data());
      buffer_.consume(buffer_.size());
    }
    const auto deadline = std::chrono::steady_clock::now() + wait;
    const int fd = socket_.native_handle();
    while (!done()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        return true;
      }
      raw_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }

  net::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::string raw_;
  bool eof_ = false;
};

}  // namespace hi::http::test
