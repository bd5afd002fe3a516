// hiredis, owned: a synchronous Redis connection with pipelining.
//
// A Client belongs to one thread at a time. Replies are converted to an owned Reply tree, so
// nothing of hiredis leaks out of this file. A Redis error reply is returned as a Reply of type
// kError by command() (the caller decides); a broken connection is an Error (kUnavailable) and
// the Client reconnects on the next call.
//
//   auto redis = redis::Client::connect("redis://127.0.0.1:6379/0");
//   auto r = redis->command({"SET", "k", "v", "PX", "1000", "NX"});
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

struct redisContext;

namespace hi::redis {

struct Reply {
  enum class Type { kNil, kString, kStatus, kError, kInteger, kArray };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  std::int64_t integer = 0;
  std::vector<Reply> elements;

  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
};

struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user;  // ACL user; empty = the default user
  std::string password;
};
// redis://[[user]:password@]host[:port][/db]
Result<Endpoint> parse_url(std::string_view url);

struct ContextCloser {
  void operator()(redisContext* c) const noexcept;
};

// A Lua script, run by its SHA1 (EVALSHA) so the body crosses the wire and is hashed by the
// server only once per connection's server (Client::eval sends it in full when the server
// answers NOSCRIPT: after a restart, or the first time).
//
//   static const redis::Script kLimit(R"lua(return redis.call('INCR', KEYS[1]))lua");
//   auto r = client.eval(kLimit, {key}, {});
class Script {
 public:
  explicit Script(std::string source);
  const std::string& source() const { return source_; }
  const std::string& sha1() const { return sha1_; }  // lowercase hex, as SCRIPT LOAD prints

 private:
  std::string source_;
  std::string sha1_;
};

class Client {
 public:
  static Result<Client> connect(const std::string& url,
                                std::chrono::milliseconds timeout = std::chrono::seconds(5));

  Client() = default;
  Client(Client&&) noexcept = default;
  Client& operator=(Client&&) noexcept = default;

  // One command; argv elements are binary-safe.
  Result<Reply> command(std::span<const std::string_view> argv);
  Result<Reply> command(std::initializer_list<std::string_view> argv) {
    return command(std::span<const std::string_view>(argv.begin(), argv.size()));
  }
  Result<Reply> command(const std::vector<std::string>& argv);

  // Runs `script` with `keys` and `args`: EVALSHA, then EVAL when the server lacks the script.
  Result<Reply> eval(const Script& script, std::span<const std::string_view> keys,
                     std::span<const std::string_view> args);
  Result<Reply> eval(const Script& script, std::initializer_list<std::string_view> keys,
                     std::initializer_list<std::string_view> args) {
    return eval(script, std::span<const std::string_view>(keys.begin(), keys.size()),
                std::span<const std::string_view>(args.begin(), args.size()));
  }

  // Pipelining: append() buffers commands, flush() sends them all and reads every reply, one
  // per appended command, in order. A pipeline never reconnects midway: when the connection
  // is (or becomes) unusable while appending, flush() fails the whole batch and sends none of
  // it, so the caller resends all of it. Only the first append() of a batch may reconnect,
  // once (a host that drops packets costs one connect timeout per batch, not one per command).
  void append(std::span<const std::string_view> argv);
  void append(const std::vector<std::string>& argv);
  std::size_t pending() const { return pending_; }
  Result<std::vector<Reply>> flush();

  // Pub/sub: the next message pushed on this connection (after SUBSCRIBE or PSUBSCRIBE sent with
  // command()), waiting up to `wait`; none when nothing came in time. An Error when the
  // connection broke (the caller subscribes again on a new connection).
  Result<std::optional<Reply>> receive(std::chrono::milliseconds wait);

  // Connections made so far. A change between two calls means the server saw them on different
  // connections: what the first set up on its connection (a WATCH) is gone.
  std::uint64_t connections() const { return connections_; }

  // Blocking read timeout for subsequent commands (XREADGROUP BLOCK needs a longer one).
  void set_timeout(std::chrono::milliseconds timeout);
  const std::string& url() const { return url_; }

 private:
  Status ensure_connected();
  Status fail(std::string_view what);

  std::string url_;
  Endpoint endpoint_;
  std::chrono::milliseconds timeout_{5000};
  std::unique_ptr<redisContext, ContextCloser> ctx_;
  std::size_t pending_ = 0;
  std::uint64_t connections_ = 0;
  bool pipeline_failed_ = false;  // an append() of the current batch could not be queued
};

}  // namespace hi::redis
