// The connection's side of a Stream (stream.h): what the server needs and handlers must not use.
#pragma once

#include <functional>
#include <string>

#include "http/stream.h"

namespace hi::http::internal {

struct StreamPort {
  struct Taken {
    std::string data;  // chunk-framed, ready for the socket
    bool closing = false;
    bool overflow = false;
  };

  // From now on every write calls `wake` (from the writer's thread; at most once until the next
  // take()). True when something is waiting already, so the caller should take() at once.
  static bool attach(Stream& stream, std::function<void()> wake);
  static Taken take(Stream& stream);
  // Marks the stream ended and runs its on_close callback (once).
  static void end(Stream& stream);
};

}  // namespace hi::http::internal
