#include "http/stream.h"

#include <cstdio>
#include <utility>

#include "http/internal/stream_port.h"

namespace hi::http {

bool Stream::write(std::string_view data) {
  std::function<void()> wake;
  bool accepted = true;
  {
    std::lock_guard lock(mu_);
    if (ended_ || closing_ || overflow_) return false;
    if (data.empty()) return true;
    if (pending_.size() + data.size() > max_buffered_) {
      overflow_ = true;
      accepted = false;
    } else {
      char size[20];
      const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
      pending_.append(size, static_cast<std::size_t>(n));
      pending_.append(data);
      pending_.append("\r\n");
    }
    if (wake_ && !wake_scheduled_) {
      wake_scheduled_ = true;
      wake = wake_;
    }
  }
  if (wake) wake();
  return accepted;
}

void Stream::close() {
  std::function<void()> wake;
  {
    std::lock_guard lock(mu_);
    if (ended_ || closing_) return;
    closing_ = true;
    if (wake_ && !wake_scheduled_) {
      wake_scheduled_ = true;
      wake = wake_;
    }
  }
  if (wake) wake();
}

bool Stream::ended() const {
  std::lock_guard lock(mu_);
  return ended_;
}

void Stream::on_close(std::function<void()> callback) {
  {
    std::lock_guard lock(mu_);
    if (!ended_) {
      on_close_ = std::move(callback);
      return;
    }
  }
  if (callback) callback();
}

namespace internal {

bool StreamPort::attach(Stream& stream, std::function<void()> wake) {
  std::lock_guard lock(stream.mu_);
  stream.wake_ = std::move(wake);
  const bool waiting = !stream.pending_.empty() || stream.closing_ || stream.overflow_;
  stream.wake_scheduled_ = waiting;  // the caller takes at once
  return waiting;
}

StreamPort::Taken StreamPort::take(Stream& stream) {
  std::lock_guard lock(stream.mu_);
  stream.wake_scheduled_ = false;
  Taken out;
  out.data.swap(stream.pending_);
  out.closing = stream.closing_;
  out.overflow = stream.overflow_;
  return out;
}

void StreamPort::end(Stream& stream) {
  std::function<void()> callback;
  {
    std::lock_guard lock(stream.mu_);
    if (stream.ended_) return;
    stream.ended_ = true;
    stream.wake_ = nullptr;
    stream.pending_.clear();
    callback = std::move(stream.on_close_);
    stream.on_close_ = nullptr;
  }
  if (callback) callback();
}

}  // namespace internal
}  // namespace hi::http
