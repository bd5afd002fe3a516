#include "http/server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/ids.h"
#include "http/internal/stream_port.h"
#include "http/worker_pool.h"

namespace hi::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using internal::StreamPort;

std::string_view view(beast::string_view s) { return {s.data(), s.size()}; }
beast::string_view bview(std::string_view s) { return {s.data(), s.size()}; }

// The method label of the metrics: a fixed set, so that junk methods cannot grow the registry.
std::string method_label(std::string_view method) {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (method == known) return std::string(known);
  }
  return "other";
}

// A header a handler set that would split the response if sent.
bool header_safe(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (const char c : name) {
    if (c <= 0x20 || c >= 0x7f || c == ':') return false;
  }
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool is_http_error(const beast::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

class Session;

}  // namespace

struct Server::Impl {
  Impl(const ServerOptions& o, Router r, Logger l)
      : options(o),
        router(std::move(r)),
        log(std::move(l)),
        pool(std::max<std::size_t>(1, o.workers), o.worker_queue),
        ioc(static_cast<int>(std::max<std::size_t>(1, o.io_threads))),
        work(ioc.get_executor()),
        acceptor(net::make_strand(ioc)),
        accept_timer(acceptor.get_executor()) {}

  void accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void record(const std::string& route, const std::string& method, int status, double seconds);

  struct RouteMetrics {
    prometheus::Counter* requests = nullptr;
    prometheus::Histogram* latency = nullptr;
  };

  const ServerOptions options;
  const Router router;
  const Logger log;
  WorkerPool pool;

  std::mutex mu;
  std::condition_variable cv;                                     // sessions emptied
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;  // guarded by mu
  std::atomic<bool> stopping{false};                              // written under mu, read anywhere

  std::mutex metrics_mu;
  std::map<std::string, RouteMetrics> route_metrics;  // guarded by metrics_mu

  std::mutex stop_mu;    // one stop() at a time
  bool stopped = false;  // guarded by stop_mu
  std::uint16_t port = 0;

  // Declared last, so destroyed first: the handlers it still holds own sessions, whose
  // destructors use the members above.
  net::io_context ioc;
  // Keeps the I/O threads running while no operation is pending (every connection waiting for a
  // worker, the acceptor closed by stop()) until stop() is done with them.
  net::executor_work_guard<net::io_context::executor_type> work;
  tcp::acceptor acceptor;
  net::steady_timer accept_timer;
  std::vector<std::thread> threads;
};

namespace {

// One connection. Every member is used on the connection's strand only, except executor_ and
// srv_ (immutable) and what begin_shutdown() / force_close() post there.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& srv, tcp::socket&& socket)
      : srv_(srv), executor_(socket.get_executor()), stream_(std::move(socket)) {
    beast::error_code ec;
    const auto peer = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = peer.address().to_string();
  }

  ~Session() {
    end_stream();
    std::lock_guard lock(srv_.mu);
    srv_.sessions.erase(this);
    if (srv_.sessions.empty()) srv_.cv.notify_all();
  }

  void start() {
    {
      std::lock_guard lock(srv_.mu);
      srv_.sessions.emplace(this, weak_from_this());
    }
    net::dispatch(executor_, [self = shared_from_this()] { self->do_wait(); });
  }

  // From any thread: finish what is in flight, then close.
  void begin_shutdown() {
    net::post(executor_, [self = shared_from_this()] { self->on_shutdown(); });
  }
  // From any thread: close now.
  void force_close() {
    net::post(executor_, [self = shared_from_this()] { self->do_close(); });
  }

 private:
  enum class State { kIdle, kReading, kBusy, kStreaming, kClosing };

  template <typename F>
  auto bind(F f) {
    return beast::bind_front_handler(f, shared_from_this());
  }

  // --- reading a request

  void do_wait() {
    if (state_ == State::kClosing) return;
    state_ = State::kIdle;
    if (shutting_down_ || srv_.stopping) return do_close();
    if (buffer_.size() > 0) return do_read_header();  // pipelined
    stream_.expires_after(srv_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), bind(&Session::on_first_bytes));
  }

  void on_first_bytes(beast::error_code ec, std::size_t n) {
    if (ec) return do_close();  // idle timeout, client gone, or shutdown
    buffer_.commit(n);
    do_read_header();
  }

  void do_read_header() {
    state_ = State::kReading;
    close_after_ = false;
    linger_ = false;
    keep_alive_ = false;
    version_ = 11;
    method_ = "other";
    route_ = "unmatched";
    request_id_.clear();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(srv_.options.header_limit));
    parser_->body_limit(static_cast<std::uint64_t>(srv_.options.body_limit));
    stream_.expires_after(srv_.options.header_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_, bind(&Session::on_header));
  }

  void on_header(beast::error_code ec, std::size_t) {
    started_ = Clock::now();
    if (ec == bhttp::error::header_limit) {
      return send_error(
          ErrorCode::kHeadersTooLarge,
          "request header over " + std::to_string(srv_.options.header_limit) + " bytes", true);
    }
    const auto& msg = parser_->get();
    if (ec == bhttp::error::body_limit) {  // Content-Length over the limit: the fields are read
      take_request_id(msg);
      return send_payload_too_large();
    }
    if (is_http_error(ec)) return send_error(ErrorCode::kBadRequest, "malformed request", true);
    if (ec) return do_close();  // timeout, or the client went away
    keep_alive_ = msg.keep_alive();
    version_ = msg.version();
    method_ = method_label(view(msg.method_string()));
    take_request_id(msg);
    if (parser_->is_done()) return on_request();
    if (beast::iequals(msg[bhttp::field::expect], "100-continue")) {
      out_ = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(srv_.options.write_timeout);
      return net::async_write(stream_, net::buffer(out_), bind(&Session::on_continue_sent));
    }
    do_read_body();
  }

  void take_request_id(const bhttp::request<bhttp::string_body>& msg) {
    const std::string_view id = view(msg["X-Request-Id"]);
    if (is_sane_request_id(id)) request_id_ = std::string(id);
  }

  void on_continue_sent(beast::error_code ec, std::size_t) {
    out_.clear();
    if (ec) return do_close();
    do_read_body();
  }

  void do_read_body() {
    stream_.expires_after(srv_.options.body_timeout);
    bhttp::async_read(stream_, buffer_, *parser_, bind(&Session::on_body));
  }

  void on_body(beast::error_code ec, std::size_t) {
    if (ec == bhttp::error::body_limit) return send_payload_too_large();
    if (is_http_error(ec)) return send_error(ErrorCode::kBadRequest, "malformed request", true);
    if (ec) return do_close();
    on_request();
  }

  void send_payload_too_large() {
    linger_ = true;  // the body was not read: drain it, or the client may see a reset instead
    send_error(ErrorCode::kPayloadTooLarge,
               "request body over " + std::to_string(srv_.options.body_limit) + " bytes", true);
  }

  // --- routing and handling

  void on_request() {
    state_ = State::kBusy;
    auto msg = parser_->release();
    parser_.reset();
    Request req;
    req.method = std::string(view(msg.method_string()));
    req.target = std::string(view(msg.target()));
    req.request_id = request_id();
    req.remote_address = remote_;
    for (const auto& field : msg) {
      std::string name(view(field.name_string()));
      for (char& c : name) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      req.headers.emplace_back(std::move(name), std::string(view(field.value())));
    }
    req.body = std::move(msg.body());
    auto target = parse_target(req.target);
    if (!target) return send_error(ErrorCode::kBadRequest, target.error().message, false);
    req.path = std::move(target->path);
    req.query = std::move(target->query);
    auto match = srv_.router.match(req.method, target->segments);
    if (match.route == nullptr) {
      if (match.allowed.empty()) {
        return send_error(ErrorCode::kNotFound, "no route for " + req.method + " " + req.path,
                          false);
      }
      return send_error(ErrorCode::kMethodNotAllowed,
                        req.method + " is not allowed on " + req.path +
                            " (allowed: " + join(match.allowed, ", ") + ")",
                        false, {{"Allow", join(match.allowed, ", ")}});
    }
    const Route* route = match.route;
    route_ = route->pattern;
    req.route = route->pattern;
    req.params = std::move(match.params);
    if (route->execution == Execution::kInline) return send(run_handler(*route, req));
    const bool accepted = srv_.pool.try_submit([self = shared_from_this(), route,
                                                req = std::move(req)]() mutable {
      Response r = self->run_handler(*route, req);
      net::post(self->executor_, [self, r = std::move(r)]() mutable { self->send(std::move(r)); });
    });
    if (!accepted) {
      send_error(ErrorCode::kOverloaded, "every worker is busy; retry later", false,
                 {{"Retry-After", std::to_string(srv_.options.retry_after_seconds)}});
    }
  }

  // Any thread (inline: the I/O thread; else a worker). Reads only immutable members.
  Response run_handler(const Route& route, Request& req) const {
    try {
      return route.handler(req);
    } catch (const std::exception& e) {
      srv_.log.error("handler failed", {{"route", route.pattern},
                                        {"method", req.method},
                                        {"request_id", req.request_id},
                                        {"error", e.what()}});
    } catch (...) {
      srv_.log.error("handler failed", {{"route", route.pattern},
                                        {"method", req.method},
                                        {"request_id", req.request_id},
                                        {"error", "not a std::exception"}});
    }
    return Response::fail(ErrorCode::kInternal, "internal error");
  }

  const std::string& request_id() {
    if (request_id_.empty()) request_id_ = uuid_v7();
    return request_id_;
  }

  // --- writing a response

  void send_error(ErrorCode code, std::string message, bool close, Pairs headers = {}) {
    close_after_ = close_after_ || close;
    Response r = Response::fail(code, std::move(message));
    r.headers = std::move(headers);
    send(std::move(r));
  }

  void send(Response r) {
    if (state_ == State::kClosing) return;  // closed while the handler ran
    state_ = State::kBusy;
    if (r.stream) return send_stream_head(std::move(r));
    int status = r.status;
    std::string body = std::move(r.body);
    if (r.error) {
      status = http_status(r.error->code);
      body = error_body(*r.error, request_id());
      r.content_type = "application/json";
    } else if (status < 100 || status > 599) {
      srv_.log.error("handler returned a bad status",
                     {{"route", route_}, {"status", status}, {"request_id", request_id()}});
      status = 500;
      body = error_body({ErrorCode::kInternal, "internal error", {}}, request_id());
      r.content_type = "application/json";
    }
    if (status < 200 || status == 204 || status == 304) body.clear();  // these have no body
    res_ = {};
    res_.version(version_);
    res_.result(static_cast<unsigned>(status));
    set_common_headers(res_, r);
    if (!body.empty()) res_.set(bhttp::field::content_type, bview(r.content_type));
    res_.keep_alive(keep_alive_ && !close_after_ && !shutting_down_ && !srv_.stopping);
    res_.body() = std::move(body);
    res_.prepare_payload();
    finished(status);
    stream_.expires_after(srv_.options.write_timeout);
    bhttp::async_write(stream_, res_, bind(&Session::on_write));
  }

  template <typename Message>
  void set_common_headers(Message& m, const Response& r) {
    m.set(bhttp::field::server, "hashinsight");
    m.set("X-Request-Id", bview(request_id()));
    for (const auto& [name, value] : r.headers) {
      if (header_safe(name, value)) {
        m.insert(bview(name), bview(value));
      } else {
        srv_.log.warn("handler set a header that cannot be sent", {{"route", route_}});
      }
    }
  }

  void finished(int status) {
    const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    srv_.record(route_, method_, status, seconds);
    if (srv_.log.enabled(LogLevel::kDebug)) {
      srv_.log.debug("request", {{"method", method_},
                                 {"route", route_},
                                 {"status", status},
                                 {"ms", seconds * 1000},
                                 {"request_id", request_id()}});
    }
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec) return do_close();
    if (!res_.keep_alive()) return linger_ ? linger() : do_close();
    res_ = {};
    do_wait();
  }

  // --- streamed responses (stream.h)

  void send_stream_head(Response r) {
    stream_body_ = std::move(r.stream);
    stream_head_ = {};
    stream_head_.version(version_);
    stream_head_.result(static_cast<unsigned>(r.status >= 100 && r.status <= 599 ? r.status : 200));
    set_common_headers(stream_head_, r);
    stream_head_.set(bhttp::field::content_type, bview(r.content_type));
    stream_head_.keep_alive(false);  // the stream ends with the connection
    stream_head_.chunked(true);
    finished(static_cast<int>(stream_head_.result_int()));
    stream_sr_.emplace(stream_head_);
    stream_.expires_after(srv_.options.write_timeout);
    bhttp::async_write_header(stream_, *stream_sr_, bind(&Session::on_stream_head));
  }

  void on_stream_head(beast::error_code ec, std::size_t) {
    if (ec || !stream_body_) return do_close();
    state_ = State::kStreaming;
    stream_.expires_never();
    watch_stream();
    std::weak_ptr<Session> weak = weak_from_this();
    auto wake = [weak, ex = executor_] {
      net::post(ex, [weak] {
        if (auto self = weak.lock()) self->flush_stream();
      });
    };
    if (StreamPort::attach(*stream_body_, std::move(wake))) flush_stream();
    if (shutting_down_) stream_body_->close();
  }

  // A read stays pending while streaming, so that a client that leaves is noticed at once (and
  // the stream's on_close runs) instead of at the next write.
  void watch_stream() {
    stream_.async_read_some(net::buffer(watch_buf_), bind(&Session::on_watch));
  }

  void on_watch(beast::error_code ec, std::size_t) {
    if (ec) return do_close();
    watch_stream();  // whatever a client sends during a stream is ignored
  }

  void flush_stream() {
    if (state_ != State::kStreaming || writing_ || !stream_body_) return;
    auto taken = StreamPort::take(*stream_body_);
    if (taken.overflow) {
      srv_.log.warn("stream client too slow; disconnected",
                    {{"route", route_}, {"request_id", request_id()}});
      return do_close();
    }
    out_ = std::move(taken.data);
    if (taken.closing) {
      out_ += "0\r\n\r\n";
      final_chunk_ = true;
    }
    if (out_.empty()) return;
    writing_ = true;
    stream_.expires_after(srv_.options.write_timeout);
    net::async_write(stream_, net::buffer(out_), bind(&Session::on_stream_write));
  }

  void on_stream_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    out_.clear();
    if (ec || final_chunk_) return do_close();
    flush_stream();
  }

  void end_stream() {
    if (!stream_body_) return;
    StreamPort::end(*stream_body_);
    stream_body_.reset();
  }

  // --- closing

  void on_shutdown() {
    shutting_down_ = true;
    if (state_ == State::kIdle) {
      stream_.cancel();  // the pending wait for a request ends, and with it the connection
    } else if (state_ == State::kStreaming && stream_body_) {
      stream_body_->close();
    }
    // kReading, kBusy: the response in preparation is the last (Connection: close).
  }

  void do_close() {
    if (state_ == State::kClosing) return;
    state_ = State::kClosing;
    end_stream();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  // After an early answer (413) the client may still be sending its body; closing with unread
  // data makes the kernel reset the connection, and the client may lose the answer. So: stop
  // sending, read and discard for a bounded time, then close.
  void linger() {
    state_ = State::kBusy;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    linger_deadline_ = Clock::now() + std::chrono::seconds(2);
    linger_buf_.resize(64 << 10);
    read_linger();
  }

  void read_linger() {
    stream_.expires_at(linger_deadline_);
    stream_.async_read_some(net::buffer(linger_buf_), bind(&Session::on_linger));
  }

  void on_linger(beast::error_code ec, std::size_t n) {
    lingered_ += n;
    if (ec || lingered_ > (std::size_t{64} << 20)) return do_close();
    read_linger();
  }

  Server::Impl& srv_;
  const net::any_io_executor executor_;  // the connection's strand
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  bhttp::response<bhttp::empty_body> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> stream_sr_;
  std::shared_ptr<Stream> stream_body_;
  std::string out_;
  std::array<char, 256> watch_buf_{};
  std::vector<char> linger_buf_;
  std::size_t lingered_ = 0;
  Clock::time_point linger_deadline_;
  State state_ = State::kIdle;
  bool shutting_down_ = false;
  bool close_after_ = false;  // this response is the connection's last
  bool linger_ = false;
  bool keep_alive_ = false;
  bool writing_ = false;
  bool final_chunk_ = false;
  unsigned version_ = 11;
  Clock::time_point started_;
  std::string request_id_;
  std::string method_;
  std::string route_;
  std::string remote_;
};

}  // namespace

void Server::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void Server::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
  if (ec) {
    // Out of descriptors, most likely: wait a little instead of spinning on the error.
    log.warn("accept failed", {{"error", ec.message()}});
    accept_timer.expires_after(std::chrono::milliseconds(50));
    accept_timer.async_wait([this](beast::error_code e) {
      if (!e && acceptor.is_open()) accept();
    });
    return;
  }
  if (!stopping) {
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<Session>(*this, std::move(socket))->start();
  }
  accept();
}

void Server::Impl::record(const std::string& route, const std::string& method, int status,
                          double seconds) {
  if (options.metrics == nullptr) return;
  const std::string status_text = std::to_string(status);
  const std::string key = route + '\n' + method + '\n' + status_text;
  RouteMetrics m;
  {
    std::lock_guard lock(metrics_mu);
    auto it = route_metrics.find(key);
    if (it == route_metrics.end()) {
      const MetricLabels labels = {{"route", route}, {"method", method}, {"status", status_text}};
      RouteMetrics fresh;
      fresh.requests = &options.metrics->counter("hashinsight_http_requests_total",
                                                 "HTTP requests answered", labels);
      fresh.latency =
          &options.metrics->histogram("hashinsight_http_request_duration_seconds",
                                      "HTTP request header read to response ready to send", labels);
      it = route_metrics.emplace(key, fresh).first;
    }
    m = it->second;
  }
  m.requests->Increment();
  m.latency->Observe(seconds);
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { stop(); }

std::uint16_t Server::port() const { return impl_->port; }

Result<std::unique_ptr<Server>> Server::start(const ServerOptions& options, Router router,
                                              Logger log) {
  beast::error_code ec;
  const auto address = net::ip::make_address(options.address, ec);
  if (ec) return invalid_argument("http listen address '" + options.address + "': " + ec.message());
  auto impl = std::make_unique<Impl>(options, std::move(router), std::move(log));
  const tcp::endpoint endpoint(address, options.port);
  const std::string where = options.address + ":" + std::to_string(options.port);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return unavailable("http listen " + where + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint(ec).port();
  impl->accept();
  const std::size_t threads = std::max<std::size_t>(1, options.io_threads);
  for (std::size_t i = 0; i < threads; ++i) {
    impl->threads.emplace_back([p = impl.get()] {
      for (;;) {
        try {
          p->ioc.run();
          return;
        } catch (const std::exception& e) {
          p->log.error("http i/o thread caught an exception", {{"error", e.what()}});
        }
      }
    });
  }
  impl->log.info("http listening", {{"address", options.address},
                                    {"port", impl->port},
                                    {"io_threads", threads},
                                    {"workers", options.workers}});
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  std::lock_guard stop_lock(s.stop_mu);
  if (s.stopped) return;
  s.stopped = true;
  const auto snapshot = [&s] {
    std::vector<std::shared_ptr<Session>> live;
    std::lock_guard lock(s.mu);
    s.stopping = true;
    for (auto& [ptr, weak] : s.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
    return live;
  };
  net::post(s.acceptor.get_executor(), [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_timer.cancel();
  });
  for (auto& session : snapshot()) session->begin_shutdown();
  const auto drained = [&s](std::chrono::milliseconds wait) {
    std::unique_lock lock(s.mu);
    return s.cv.wait_for(lock, wait, [&s] { return s.sessions.empty(); });
  };
  if (!drained(grace)) {
    s.log.warn("http connections still busy after the grace period; closing them", {});
    for (auto& session : snapshot()) session->force_close();
  }
  s.pool.stop();  // a handler still running is waited for
  if (!drained(std::chrono::seconds(2))) {
    s.log.warn("http connections left at stop", {});
  }
  s.work.reset();
  s.ioc.stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
  s.log.info("http stopped", {{"port", s.port}});
}

}  // namespace hi::http
