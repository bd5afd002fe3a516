#include "redis/client.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <new>
#include <utility>

#include "core/strings.h"

namespace hi::redis {

void ContextCloser::operator()(redisContext* c) const noexcept { redisFree(c); }

namespace {

// hiredis builds each reply straight into a Reply through these functions, instead of its own
// redisReply tree that was then copied: a stream read of 20,000 entries is 80,000 strings.
// hiredis hands the root object back (and frees only the root); an element is a slot of its
// parent's `elements`, sized by createArray and never resized after, so its address holds.
void* place(const redisReadTask* task, Reply&& value) {
  if (task->parent != nullptr) {
    auto* parent = static_cast<Reply*>(task->parent->obj);
    Reply& slot = parent->elements[static_cast<std::size_t>(task->idx)];
    slot = std::move(value);
    return &slot;
  }
  return new (std::nothrow) Reply(std::move(value));
}

void* create_string(const redisReadTask* task, char* str, std::size_t len) {
  Reply r;
  r.type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::kError
           : task->type == REDIS_REPLY_STATUS ? Reply::Type::kStatus
                                              : Reply::Type::kString;
  r.str.assign(str, len);
  return place(task, std::move(r));
}

void* create_array(const redisReadTask* task, int elements) {
  Reply r;
  r.type = Reply::Type::kArray;
  r.elements.resize(static_cast<std::size_t>(std::max(elements, 0)));
  return place(task, std::move(r));
}

void* create_integer(const redisReadTask* task, long long value) {
  Reply r;
  r.type = Reply::Type::kInteger;
  r.integer = value;
  return place(task, std::move(r));
}

void* create_nil(const redisReadTask* task) { return place(task, Reply{}); }

void free_reply(void* reply) { delete static_cast<Reply*>(reply); }

redisReplyObjectFunctions kReplyFunctions = {create_string, create_array, create_integer,
                                             create_nil, free_reply};

// A reply of this client's context (kReplyFunctions).
using ReplyPtr = std::unique_ptr<Reply>;

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000),
                 static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

}  // namespace

Result<Endpoint> parse_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (!url.starts_with(kScheme)) return invalid_argument("not a redis:// URL: " + std::string(url));
  std::string_view rest = url.substr(kScheme.size());
  Endpoint ep;
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view auth = rest.substr(0, at);
    if (const auto colon = auth.find(':'); colon != std::string_view::npos) {
      ep.user = std::string(auth.substr(0, colon));  // empty: the default user
      auth = auth.substr(colon + 1);
    }
    ep.password = std::string(auth);
    rest = rest.substr(at + 1);
  }
  std::string_view hostport = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [p, ec] = std::from_chars(db.data(), db.data() + db.size(), ep.db);
      if (ec != std::errc() || p != db.data() + db.size()) {
        return invalid_argument("bad database number in redis URL: " + std::string(url));
      }
    }
  }
  if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    const auto port = hostport.substr(colon + 1);
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), ep.port);
    if (ec != std::errc() || p != port.data() + port.size() || ep.port < 1 || ep.port > 65535) {
      return invalid_argument("bad port in redis URL: " + std::string(url));
    }
    hostport = hostport.substr(0, colon);
  }
  if (!hostport.empty()) ep.host = std::string(hostport);
  return ep;
}

Result<Client> Client::connect(const std::string& url, std::chrono::milliseconds timeout) {
  auto ep = parse_url(url);
  if (!ep) return ep.error();
  Client c;
  c.url_ = url;
  c.endpoint_ = *ep;
  c.timeout_ = timeout;
  if (auto s = c.ensure_connected(); !s) return s.error();
  return c;
}

Status Client::ensure_connected() {
  if (ctx_ && ctx_->err == 0) return {};
  pending_ = 0;
  const timeval tv = to_timeval(timeout_);
  ctx_.reset(redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv));
  if (!ctx_) return unavailable("redis connect " + url_ + ": out of memory");
  if (ctx_->err != 0) {
    std::string msg = "redis connect " + endpoint_.host + ":" + std::to_string(endpoint_.port) +
                      ": " + ctx_->errstr;
    ctx_.reset();
    return unavailable(std::move(msg));
  }
  ++connections_;
  ctx_->reader->fn = &kReplyFunctions;
  redisSetTimeout(ctx_.get(), tv);
  redisEnableKeepAlive(ctx_.get());
  auto select = [&](std::initializer_list<std::string_view> argv) -> Status {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (auto a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    ReplyPtr r(static_cast<Reply*>(
        redisCommandArgv(ctx_.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data())));
    if (!r) return fail("redis setup");
    if (r->is_error()) return unavailable("redis setup: " + r->str);
    return {};
  };
  if (!endpoint_.password.empty()) {
    if (auto s = endpoint_.user.empty() ? select({"AUTH", endpoint_.password})
                                        : select({"AUTH", endpoint_.user, endpoint_.password});
        !s) {
      return s;
    }
  }
  if (endpoint_.db != 0) {
    const std::string db = std::to_string(endpoint_.db);
    if (auto s = select({"SELECT", db}); !s) return s;
  }
  return {};
}

Status Client::fail(std::string_view what) {
  std::string msg = std::string(what) + " " + endpoint_.host + ":" +
                    std::to_string(endpoint_.port) + ": " +
                    (ctx_ && ctx_->err ? ctx_->errstr : "connection lost");
  ctx_.reset();  // reconnect on the next call
  pending_ = 0;
  pipeline_failed_ = false;
  return unavailable(std::move(msg));
}

Result<Reply> Client::command(std::span<const std::string_view> argv) {
  if (auto s = ensure_connected(); !s) return s.error();
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  ReplyPtr r(static_cast<Reply*>(
      redisCommandArgv(ctx_.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data())));
  if (!r) {
    auto s = fail("redis " + std::string(argv.empty() ? "" : argv[0]));
    return s.error();
  }
  return std::move(*r);
}

Result<Reply> Client::command(const std::vector<std::string>& argv) {
  std::vector<std::string_view> views(argv.begin(), argv.end());
  return command(std::span<const std::string_view>(views));
}

Script::Script(std::string source) : source_(std::move(source)) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  ::SHA1(reinterpret_cast<const unsigned char*>(source_.data()), source_.size(), digest);
  sha1_ = hex_encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

Result<Reply> Client::eval(const Script& script, std::span<const std::string_view> keys,
                           std::span<const std::string_view> args) {
  const std::string count = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.insert(argv.end(), {"EVALSHA", script.sha1(), count});
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = command(std::span<const std::string_view>(argv));
  if (!r || !r->is_error() || !r->str.starts_with("NOSCRIPT")) return r;
  argv[0] = "EVAL";
  argv[1] = script.source();
  return command(std::span<const std::string_view>(argv));
}

void Client::append(std::span<const std::string_view> argv) {
  if (pipeline_failed_) return;  // flush() reports it; the rest of the batch is not queued
  // Only the first command of a pipeline may (re)connect: reconnecting midway would send the
  // later commands alone, and flush() would credit their replies to the earlier ones.
  if (pending_ == 0 && !ensure_connected()) {
    pipeline_failed_ = true;
    return;
  }
  if (!ctx_ || ctx_->err != 0) {
    pipeline_failed_ = true;
    return;
  }
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data()) !=
      REDIS_OK) {
    pipeline_failed_ = true;
    return;
  }
  ++pending_;
}

void Client::append(const std::vector<std::string>& argv) {
  std::vector<std::string_view> views(argv.begin(), argv.end());
  append(std::span<const std::string_view>(views));
}

Result<std::vector<Reply>> Client::flush() {
  const std::size_t expected = pending_;
  if (std::exchange(pipeline_failed_, false) || !ctx_) {
    // Drop the connection with whatever part of the batch it buffered: none of it is sent, so
    // the caller can resend the whole batch.
    auto s = fail("redis pipeline (not sent)");
    return s.error();
  }
  std::vector<Reply> out;
  out.reserve(expected);
  while (pending_ > 0) {
    void* raw = nullptr;
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
      auto s = fail("redis pipeline");
      return s.error();
    }
    ReplyPtr r(static_cast<Reply*>(raw));
    out.push_back(std::move(*r));
    --pending_;
  }
  if (out.size() != expected) return internal_error("redis pipeline: reply count mismatch");
  return out;
}

Result<std::optional<Reply>> Client::receive(std::chrono::milliseconds wait) {
  if (!ctx_) return unavailable("redis receive: not connected");
  void* raw = nullptr;
  // A reply already read into hiredis's buffer comes first; otherwise wait for the socket, so
  // that a quiet channel costs no read timeout (which would end the connection).
  if (redisGetReplyFromReader(ctx_.get(), &raw) != REDIS_OK) {
    auto s = fail("redis receive");
    return s.error();
  }
  if (raw == nullptr) {
    pollfd p{ctx_->fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(wait.count()));
    if (ready == 0) return std::optional<Reply>();
    if (ready < 0 && errno == EINTR) return std::optional<Reply>();
    if (ready < 0 || redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
      auto s = fail("redis receive");
      return s.error();
    }
  }
  ReplyPtr r(static_cast<Reply*>(raw));
  return std::optional<Reply>(std::move(*r));
}

void Client::set_timeout(std::chrono::milliseconds timeout) {
  timeout_ = timeout;
  if (ctx_) redisSetTimeout(ctx_.get(), to_timeval(timeout));
}

}  // namespace hi::redis
