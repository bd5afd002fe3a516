// A response body written after the handler returned, from any thread, for as long as the client
// stays: server-sent events, long downloads. The server sends it with chunked transfer encoding
// and closes the connection when the stream ends.
//
//   auto stream = std::make_shared<http::Stream>();
//   stream->on_close([hub, stream] { hub->unsubscribe(stream); });  // client gone, or shutdown
//   hub->subscribe(stream);                  // later, any thread: stream->write("data: ...\n\n")
//   return http::Response::streaming(stream);
//
// Thread-safe. write() never blocks and never waits for the client: bytes are queued (at most
// `max_buffered_bytes`) and flushed by the connection's I/O thread. A client that falls further
// behind than that is disconnected, so a slow reader costs bounded memory. Shared ownership is the
// point here: the writer (a hub) and the connection both hold the stream, and either may go first.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace hi::http {

namespace internal {
struct StreamPort;
}

class Stream {
 public:
  explicit Stream(std::size_t max_buffered_bytes = std::size_t{1} << 20)
      : max_buffered_(max_buffered_bytes) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Queues `data` as one chunk. False once the stream has ended or is closing (the client left,
  // the server is stopping, close() was called, or the client fell too far behind); the data is
  // then dropped. An empty write sends nothing.
  bool write(std::string_view data);

  // Ends the response once what is queued has been sent. Idempotent.
  void close();

  // True once nothing more will be sent.
  bool ended() const;

  // `callback` runs once when the stream has ended, whatever the reason (close() included), on
  // an I/O thread: it must be quick and must not block. Runs at once, on the calling thread, when
  // the stream has already ended. A later call replaces an earlier callback.
  void on_close(std::function<void()> callback);

 private:
  friend struct internal::StreamPort;

  mutable std::mutex mu_;
  std::string pending_;             // chunk-framed bytes for the socket; guarded by mu_
  bool closing_ = false;            // guarded by mu_
  bool ended_ = false;              // guarded by mu_
  bool overflow_ = false;           // guarded by mu_
  bool wake_scheduled_ = false;     // guarded by mu_
  std::function<void()> wake_;      // set by the connection; guarded by mu_
  std::function<void()> on_close_;  // guarded by mu_
  const std::size_t max_buffered_;
};

}  // namespace hi::http
