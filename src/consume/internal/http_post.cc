#include "consume/internal/http_post.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "core/unique_fd.h"

namespace hi::consume::internal {
namespace {

struct AddrInfoFree {
  void operator()(addrinfo* a) const noexcept { ::freeaddrinfo(a); }
};

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::int64_t>(0, left.count()));
}

// Waits for `events` on fd until the deadline; false on timeout.
bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

Result<HttpUrl> parse_http_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return invalid_argument("webhook url '" + url + "': only http:// is supported");
  }
  HttpUrl out;
  std::string rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) out.path = rest.substr(slash);
  const auto colon = hostport.rfind(':');
  if (colon != std::string::npos) {
    try {
      out.port = std::stoi(hostport.substr(colon + 1));
    } catch (...) {
      return invalid_argument("webhook url '" + url + "': bad port");
    }
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return invalid_argument("webhook url '" + url + "': no host");
  out.host = hostport;
  return out;
}

Result<int> http_post(const HttpUrl& url, const std::string& body,
                      const std::vector<std::pair<std::string, std::string>>& headers,
                      std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string where = url.host + ":" + std::to_string(url.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* raw = nullptr;
  if (int rc = ::getaddrinfo(url.host.c_str(), std::to_string(url.port).c_str(), &hints, &raw);
      rc != 0) {
    return unavailable("webhook " + where + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, AddrInfoFree> addrs(raw);
  UniqueFd sock;
  std::string last_error = "no address";
  for (addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    UniqueFd s(
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!s) continue;
    if (::connect(s.get(), a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        last_error = std::strerror(errno);
        continue;
      }
      if (!wait_fd(s.get(), POLLOUT, deadline)) {
        return Error{Code::kDeadlineExceeded, "webhook " + where + ": connect timed out"};
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last_error = std::strerror(err);
        continue;
      }
    }
    sock = std::move(s);
    break;
  }
  if (!sock) return unavailable("webhook " + where + ": connect: " + last_error);

  std::string req = "POST " + url.path + " HTTP/1.1\r\nHost: " + where +
                    "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  req += body;
  std::size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = ::send(sock.get(), req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_fd(sock.get(), POLLOUT, deadline)) {
        return Error{Code::kDeadlineExceeded, "webhook " + where + ": send timed out"};
      }
      continue;
    }
    return unavailable("webhook " + where + ": send: " + std::strerror(errno));
  }
  std::string resp;
  char buf[4096];
  while (resp.find("\r\n") == std::string::npos) {
    if (!wait_fd(sock.get(), POLLIN, deadline)) {
      return Error{Code::kDeadlineExceeded, "webhook " + where + ": no response in time"};
    }
    const ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n > 0) {
      resp.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    return unavailable("webhook " + where + ": connection closed before a response");
  }
  // "HTTP/1.1 204 No Content"
  const auto sp = resp.find(' ');
  if (resp.rfind("HTTP/", 0) != 0 || sp == std::string::npos || resp.size() < sp + 4) {
    return unavailable("webhook " + where + ": not an HTTP response");
  }
  return std::atoi(resp.c_str() + sp + 1);
}

}  // namespace hi::consume::internal
