#include "http/event_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

#include "core/time.h"

namespace hi::http {
namespace {

// Waits until `fd` is readable or `deadline_ns` (monotonic) passes; false on timeout.
bool wait_readable(int fd, std::int64_t deadline_ns) {
  while (true) {
    const std::int64_t left_ms = (deadline_ns - mono_now_ns()) / 1'000'000;
    if (left_ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left_ms));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return true;  // the read reports the error
  }
}

}  // namespace

Result<EventStream> EventStream::open(const Url& url, const Pairs& headers,
                                      std::chrono::milliseconds timeout) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (::inet_pton(AF_INET, url.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(url.port));
    len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, url.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(url.port));
    len = sizeof *v6;
  } else {
    return invalid_argument("event stream: not a numeric address: " + url.host);
  }
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return unavailable(std::string("event stream: socket: ") + std::strerror(errno));
  EventStream s(fd);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return unavailable("event stream: connect " + url.authority() + ": " + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string request = "GET " + url.target + " HTTP/1.1\r\nHost: " + url.authority() +
                        "\r\nAccept: text/event-stream\r\n";
  for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
  request += "\r\n";
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return unavailable(std::string("event stream: send: ") + std::strerror(errno));
    sent += static_cast<std::size_t>(n);
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  // The head.
  const std::int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  std::size_t end = std::string::npos;
  while ((end = s.raw_.find("\r\n\r\n")) == std::string::npos) {
    if (!wait_readable(fd, deadline))
      return Error{Code::kDeadlineExceeded, "event stream: no response head"};
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return unavailable("event stream: closed before the response head");
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return unavailable(std::string("event stream: recv: ") + std::strerror(errno));
    }
    if (n > 0) s.raw_.append(buf, static_cast<std::size_t>(n));
  }
  const std::string head = s.raw_.substr(0, end);
  s.raw_.erase(0, end + 4);
  int status = 0;
  if (head.size() < 12 ||
      std::from_chars(head.data() + 9, head.data() + 12, status).ec != std::errc()) {
    return unavailable("event stream: not an HTTP response");
  }
  if (status != 200) {
    // The error body is short and usually already here.
    return failed_precondition("event stream: status " + std::to_string(status) + ": " + s.raw_);
  }
  if (auto c = s.consume(); !c) return c.error();
  return s;
}

EventStream::EventStream(EventStream&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      raw_(std::move(other.raw_)),
      text_(std::move(other.text_)),
      ended_(other.ended_),
      building_(std::move(other.building_)),
      has_data_(other.has_data_),
      last_id_(std::move(other.last_id_)),
      ready_(std::move(other.ready_)),
      comments_(other.comments_) {}

EventStream& EventStream::operator=(EventStream&& other) noexcept {
  if (this != &other) {
    this->~EventStream();
    new (this) EventStream(std::move(other));
  }
  return *this;
}

EventStream::~EventStream() {
  if (fd_ >= 0) ::close(fd_);
}

Status EventStream::consume() {
  // Chunked transfer coding: "<hex size>\r\n<data>\r\n" ... "0\r\n\r\n".
  while (!ended_) {
    const auto line = raw_.find("\r\n");
    if (line == std::string::npos) break;
    std::size_t size = 0;
    const auto [p, ec] = std::from_chars(raw_.data(), raw_.data() + line, size, 16);
    if (ec != std::errc()) return unavailable("event stream: bad chunk size");
    if (size == 0) {
      ended_ = true;
      break;
    }
    if (raw_.size() < line + 2 + size + 2) break;  // the rest of the chunk is on its way
    text_.append(raw_, line + 2, size);
    raw_.erase(0, line + 2 + size + 2);
  }
  parse_lines();
  return {};
}

void EventStream::parse_lines() {
  std::size_t start = 0;
  while (true) {
    const auto nl = text_.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(text_.data() + start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    start = nl + 1;
    if (line.empty()) {  // dispatch
      if (has_data_) {
        building_.id = last_id_;
        ready_.push_back(std::move(building_));
      }
      building_ = Event{};
      has_data_ = false;
      continue;
    }
    if (line.front() == ':') {
      ++comments_;
      continue;
    }
    const auto colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field == "event") {
      building_.event = std::string(value);
    } else if (field == "data") {
      if (has_data_) building_.data += '\n';
      building_.data += value;
      has_data_ = true;
    } else if (field == "id") {
      last_id_ = std::string(value);
    }
  }
  text_.erase(0, start);
}

Result<std::vector<Event>> EventStream::read_available() {
  while (!ended_) {
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      raw_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    ended_ = true;  // closed or broken
  }
  if (auto c = consume(); !c) return c.error();
  std::vector<Event> out(std::make_move_iterator(ready_.begin()),
                         std::make_move_iterator(ready_.end()));
  ready_.clear();
  if (out.empty() && ended_) return unavailable("event stream: ended");
  return out;
}

Result<std::optional<Event>> EventStream::next(std::chrono::milliseconds timeout) {
  const std::int64_t deadline = mono_now_ns() + timeout.count() * 1'000'000;
  while (ready_.empty()) {
    if (ended_) return unavailable("event stream: ended");
    if (!wait_readable(fd_, deadline)) return std::optional<Event>();
    auto events = read_available();
    if (!events) return events.error();
    ready_.insert(ready_.end(), std::make_move_iterator(events->begin()),
                  std::make_move_iterator(events->end()));
  }
  Event e = std::move(ready_.front());
  ready_.pop_front();
  return std::optional<Event>(std::move(e));
}

}  // namespace hi::http
