// A client of one server-sent-event stream (text/event-stream over chunked HTTP/1.1), for tests,
// `hashinsight bench sse` and tools: what a browser's EventSource does, without reconnecting.
//
//   auto s = http::EventStream::open(*url, {{"Authorization", "Bearer " + token}});
//   while (auto e = s->next(std::chrono::seconds(5)); e && *e) use((*e)->id, (*e)->data);
//
// Many streams on one thread: put each fd() in poll/epoll and call read_available() when it is
// readable. Numeric IPv4/IPv6 hosts only (tests and benchmarks speak to loopback). Not
// thread-safe: one owner.
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "http/message.h"
#include "http/uri.h"

namespace hi::http {

struct Event {
  std::string event = "message";  // the event: field
  std::string id;                 // the id: field (the last one seen, as the format says)
  std::string data;               // the data: lines joined with '\n'
};

class EventStream {
 public:
  // Connects, sends GET url.target with `headers`, and reads the response head (within
  // `timeout`). A status other than 200 is kFailedPrecondition carrying the status and body.
  static Result<EventStream> open(const Url& url, const Pairs& headers = {},
                                  std::chrono::milliseconds timeout = std::chrono::seconds(5));
  EventStream(EventStream&& other) noexcept;
  EventStream& operator=(EventStream&& other) noexcept;
  ~EventStream();

  int fd() const { return fd_; }

  // Reads whatever the socket has now (never blocks) and returns the events it completed, in
  // order. kUnavailable once the server ended the stream or the connection broke (events
  // completed before that were returned by earlier calls).
  Result<std::vector<Event>> read_available();

  // The next event, waiting up to `timeout` for it; none when nothing came in time.
  Result<std::optional<Event>> next(std::chrono::milliseconds timeout);

  // Comment lines seen (": heartbeat"), for tests of the keep-alive.
  std::size_t comments() const { return comments_; }

 private:
  explicit EventStream(int fd) : fd_(fd) {}
  // Takes what `raw_` holds: de-chunks it into text_, then parses text_ into ready_.
  Status consume();
  void parse_lines();

  int fd_ = -1;
  std::string raw_;   // bytes read and not yet de-chunked
  std::string text_;  // the event-stream text not yet parsed into lines
  bool ended_ = false;
  Event building_;
  bool has_data_ = false;
  std::string last_id_;
  std::deque<Event> ready_;
  std::size_t comments_ = 0;
};

}  // namespace hi::http
