// The HTTP server on real loopback sockets: what a client sees.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "http/client.h"
#include "http/server.h"
#include "http_support.h"

namespace hi::http {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Conn;
using test::Gate;
using test::header;
using test::serve;

json body_json(const test::Reply& r) { return json::parse(r.body()); }

// A small API: an inline route, worker routes, a route with a parameter, one that throws, and
// (with a gate) one that blocks.
Router demo_routes(Gate* gate = nullptr) {
  Router r;
  r.add(
      "GET", "/hello",
      [](Request& q) {
        return Response::json({{"hello", "world"}, {"request_id", q.request_id}});
      },
      Execution::kInline);
  r.add("POST", "/echo", [](Request& q) {
    Response res = Response::text(q.body, "application/octet-stream");
    res.headers.emplace_back("X-Length", std::to_string(q.body.size()));
    return res;
  });
  r.add("PATCH", "/api/miners/:id/status", [](Request& q) {
    json query = json::array();
    for (const auto& [k, v] : q.query) query.push_back({k, v});
    return Response::json({{"id", std::string(q.param("id"))},
                           {"route", q.route},
                           {"path", q.path},
                           {"query", query}});
  });
  r.add("GET", "/boom", [](Request&) -> Response { throw std::runtime_error("boom"); });
  if (gate != nullptr) r.add("GET", "/slow", [gate](Request&) { return gate->pass(); });
  return r;
}

TEST(HttpServer, KeepsOneConnectionAliveAcrossRequests) {
  auto server = serve(demo_routes());
  Conn c(server->port());
  for (int i = 0; i < 3; ++i) {
    const auto r = c.get("/hello");
    EXPECT_EQ(r.result_int(), 200u);
    EXPECT_TRUE(r.keep_alive());
    EXPECT_EQ(body_json(r)["hello"], "world");
  }
  const auto echo = c.request("POST", "/echo", "abc");  // a worker route, same connection
  EXPECT_EQ(echo.body(), "abc");
  EXPECT_TRUE(echo.keep_alive());
  const auto last = c.get("/hello", {{"Connection", "close"}});
  EXPECT_EQ(last.result_int(), 200u);
  EXPECT_FALSE(last.keep_alive());
  EXPECT_TRUE(c.closed_within(3s));
}

TEST(HttpServer, EchoesASaneRequestIdAndGeneratesOneOtherwise) {
  auto server = serve(demo_routes());
  Conn c(server->port());
  const auto given = c.get("/hello", {{"X-Request-Id", "trace-42"}});
  EXPECT_EQ(header(given, "X-Request-Id"), "trace-42");
  EXPECT_EQ(body_json(given)["request_id"], "trace-42");  // the handler sees the same

  const auto generated = c.get("/hello");
  const std::string id = header(generated, "X-Request-Id");
  EXPECT_EQ(id.size(), 36u) << id;  // a UUIDv7
  EXPECT_EQ(body_json(generated)["request_id"], id);
  EXPECT_NE(header(c.get("/hello"), "X-Request-Id"), id);
  for (const std::string& bad : {std::string(129, 'a'), std::string("a b")}) {
    const auto r = c.get("/hello", {{"X-Request-Id", bad}});
    EXPECT_NE(header(r, "X-Request-Id"), bad);
    EXPECT_EQ(header(r, "X-Request-Id").size(), 36u);
  }
  // Errors carry it too, in the header and in the body.
  const auto missing = c.get("/nope", {{"X-Request-Id", "trace-43"}});
  EXPECT_EQ(missing.result_int(), 404u);
  EXPECT_EQ(header(missing, "X-Request-Id"), "trace-43");
  EXPECT_EQ(body_json(missing)["error"]["request_id"], "trace-43");
}

TEST(HttpServer, RefusesABodyOverTheLimitWith413) {
  auto server = serve(demo_routes());
  const auto port = server->port();
  {
    Conn c(port);  // sends all 2 MiB without asking
    const auto r = c.request("POST", "/echo", std::string(2 << 20, 'x'));
    EXPECT_EQ(r.result_int(), 413u);
    const auto error = body_json(r)["error"];
    EXPECT_EQ(error["code"], "payload_too_large");
    EXPECT_EQ(error["request_id"], header(r, "X-Request-Id"));
    EXPECT_FALSE(r.keep_alive());
  }
  {
    Conn c(port);  // asks first: refused before it sends the body
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n"
        "Expect: 100-continue\r\n\r\n");
    EXPECT_EQ(c.read().result_int(), 413u);
  }
  {
    Conn c(port);  // within the limit: told to continue, then answered
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_EQ(c.read().result_int(), 100u);
    c.send("abc");
    EXPECT_EQ(c.read().body(), "abc");
    const auto at_limit = c.request("POST", "/echo", std::string(1 << 20, 'y'));
    EXPECT_EQ(at_limit.result_int(), 200u);
    EXPECT_EQ(header(at_limit, "X-Length"), "1048576");
  }
  // What the client component sees (it sends the whole body).
  auto r = fetch(test::client_request("POST", port, "/echo", std::string(2 << 20, 'x')));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->status, 413);
}

TEST(HttpServer, AnswersUnknownPathsAndMethodsWithTheErrorShape) {
  auto server = serve(demo_routes());
  Conn c(server->port());
  const auto not_found = c.get("/nope");
  EXPECT_EQ(not_found.result_int(), 404u);
  EXPECT_EQ(header(not_found, "Content-Type"), "application/json");
  const auto nf = body_json(not_found)["error"];
  EXPECT_EQ(nf["code"], "not_found");
  EXPECT_NE(nf["message"].get<std::string>().find("/nope"), std::string::npos);
  EXPECT_FALSE(nf.contains("field"));

  const auto not_allowed = c.request("DELETE", "/api/miners/7/status");
  EXPECT_EQ(not_allowed.result_int(), 405u);
  EXPECT_EQ(header(not_allowed, "Allow"), "PATCH");
  EXPECT_EQ(body_json(not_allowed)["error"]["code"], "method_not_allowed");

  const auto bad = c.request("PATCH", "/api/miners/%zz/status");
  EXPECT_EQ(bad.result_int(), 400u);
  EXPECT_EQ(body_json(bad)["error"]["code"], "bad_request");

  const auto boom = c.get("/boom");
  EXPECT_EQ(boom.result_int(), 500u);
  EXPECT_EQ(body_json(boom)["error"]["code"], "internal");
  EXPECT_EQ(body_json(boom)["error"]["message"], "internal error");

  EXPECT_EQ(c.get("/hello").result_int(), 200u);  // the connection survived every error
}

TEST(HttpServer, AnswersMalformedRequestsWith400AndCloses) {
  auto server = serve(demo_routes());
  Conn c(server->port());
  c.send("GET /hello HTTP/1.1\r\nHost x\r\n\r\n");  // a header line without a colon
  const auto r = c.read();
  EXPECT_EQ(r.result_int(), 400u);
  EXPECT_EQ(body_json(r)["error"]["code"], "bad_request");
  EXPECT_EQ(header(r, "X-Request-Id").size(), 36u);
  EXPECT_TRUE(c.closed_within(3s));
}

TEST(HttpServer, DecodesPathParametersAndQueryStrings) {
  auto server = serve(demo_routes());
  Conn c(server->port());
  const auto r = c.request("PATCH", "/api/miners/a%20b%2Fc/status?days=30&name=J%C3%BCrgen+X&flag");
  ASSERT_EQ(r.result_int(), 200u) << r.body();
  const auto j = body_json(r);
  EXPECT_EQ(j["id"], "a b/c");
  EXPECT_EQ(j["route"], "/api/miners/:id/status");
  EXPECT_EQ(j["path"], "/api/miners/a%20b%2Fc/status");
  EXPECT_EQ(j["query"],
            json::parse(R"([["days", "30"], ["name", "J\u00fcrgen X"], ["flag", ""]])"));
}

TEST(HttpServer, AFullWorkerPoolAnswers503WithRetryAfter) {
  Gate gate;
  ServerOptions o;
  o.workers = 1;
  o.worker_queue = 0;
  o.retry_after_seconds = 2;
  auto server = serve(demo_routes(&gate), o);
  const auto port = server->port();
  std::thread slow([&] {
    Conn c(port);
    EXPECT_EQ(c.get("/slow").result_int(), 200u);
  });
  gate.entered.wait();  // the only worker is busy

  Conn c(port);
  const auto refused = c.request("POST", "/echo", "x");
  EXPECT_EQ(refused.result_int(), 503u);
  EXPECT_EQ(header(refused, "Retry-After"), "2");
  EXPECT_EQ(body_json(refused)["error"]["code"], "overloaded");
  EXPECT_EQ(c.get("/hello").result_int(), 200u);  // inline routes need no worker

  gate.release.count_down();
  slow.join();
  EXPECT_TRUE(
      test::eventually([&] { return c.request("POST", "/echo", "x").result_int() == 200; }));
}

TEST(HttpServer, StopFinishesTheRequestInFlight) {
  Gate gate;
  auto server = serve(demo_routes(&gate));
  const auto port = server->port();
  Conn idle(port);
  EXPECT_EQ(idle.get("/hello").result_int(), 200u);  // now idle, kept alive

  std::promise<test::Reply> answer;
  auto answered = answer.get_future();
  std::thread client([&] {
    Conn c(port);
    answer.set_value(c.get("/slow"));
  });
  gate.entered.wait();
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server->stop(5s);
    stopped = true;
  });

  EXPECT_TRUE(idle.closed_within(3s));  // idle connections are closed at once
  EXPECT_TRUE(test::eventually([&] {    // and nothing new is accepted
    try {
      Conn probe(port);
      return false;
    } catch (const boost::system::system_error&) {
      return true;
    }
  }));
  EXPECT_FALSE(stopped.load());  // the request in flight holds the stop

  gate.release.count_down();
  const auto reply = answered.get();
  EXPECT_EQ(reply.result_int(), 200u);
  EXPECT_EQ(body_json(reply)["passed"], true);
  EXPECT_FALSE(reply.keep_alive());  // the last one on its connection
  stopper.join();
  client.join();
  EXPECT_TRUE(stopped.load());
}

TEST(HttpServer, ClosesSilentConnectionsAfterItsTimeouts) {
  ServerOptions o;
  o.idle_timeout = 200ms;
  o.header_timeout = 300ms;
  auto server = serve(demo_routes(), o);
  Conn silent(server->port());
  EXPECT_TRUE(silent.closed_within(3s));
  EXPECT_TRUE(silent.raw().empty());  // closed without an answer: there was no request

  Conn after_one(server->port());
  EXPECT_EQ(after_one.get("/hello").result_int(), 200u);
  EXPECT_TRUE(after_one.closed_within(3s));

  Conn half_header(server->port());
  half_header.send("GET /hello HTTP/1.1\r\nHost: x\r\n");
  EXPECT_TRUE(half_header.closed_within(3s));
}

TEST(HttpServer, StreamsChunksWrittenLaterFromAnyThread) {
  std::mutex mu;
  std::vector<std::shared_ptr<Stream>> opened;  // guarded by mu
  std::atomic<int> closed{0};
  Router r;
  r.add(
      "GET", "/events",
      [&](Request&) {
        auto s = std::make_shared<Stream>();
        s->on_close([&] { ++closed; });
        s->write(": hello\n\n");  // before the head is sent: queued
        std::lock_guard lock(mu);
        opened.push_back(s);
        return Response::streaming(s);
      },
      Execution::kInline);
  auto server = serve(std::move(r));
  const auto stream = [&](std::size_t i) {
    std::lock_guard lock(mu);
    return opened.at(i);
  };

  Conn c(server->port());
  c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.wait_for(": hello\n\n")) << c.raw();
  EXPECT_NE(c.raw().find("HTTP/1.1 200 OK\r\n"), std::string::npos) << c.raw();
  EXPECT_NE(c.raw().find("Transfer-Encoding: chunked\r\n"), std::string::npos) << c.raw();
  EXPECT_NE(c.raw().find("Content-Type: text/event-stream\r\n"), std::string::npos) << c.raw();
  EXPECT_NE(c.raw().find("X-Request-Id: "), std::string::npos) << c.raw();
  std::thread([s = stream(0)] { EXPECT_TRUE(s->write("data: 1\n\n")); }).join();
  ASSERT_TRUE(c.wait_for("9\r\ndata: 1\n\n\r\n")) << c.raw();

  c.socket().close();  // the client leaves: the stream ends and says so
  EXPECT_TRUE(test::eventually([&] { return closed.load() == 1; }));
  EXPECT_FALSE(stream(0)->write("data: 2\n\n"));

  // A stream open when the server stops gets its last chunk, then the connection closes.
  Conn d(server->port());
  d.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(d.wait_for(": hello\n\n")) << d.raw();
  server->stop(3s);
  EXPECT_TRUE(d.closed_within(3s));
  EXPECT_NE(d.raw().find("0\r\n\r\n"), std::string::npos) << d.raw();
  EXPECT_EQ(closed.load(), 2);
}

TEST(HttpServer, CountsRequestsPerRoutePatternMethodAndStatus) {
  Metrics metrics;
  ServerOptions o;
  o.metrics = &metrics;
  auto server = serve(demo_routes(), o);
  Conn c(server->port());
  c.get("/hello");
  c.get("/hello");
  c.request("PATCH", "/api/miners/1/status");
  c.request("PATCH", "/api/miners/2/status");
  c.get("/nope/1");
  c.get("/nope/2");
  const std::string text = metrics.render();
  for (
      const char* line : {
          R"(hashinsight_http_requests_total{method="GET",route="/hello",status="200"} 2)",
          R"(hashinsight_http_requests_total{method="PATCH",route="/api/miners/:id/status",status="200"} 2)",
          R"(hashinsight_http_requests_total{method="GET",route="unmatched",status="404"} 2)",
          R"(hashinsight_http_request_duration_seconds_count{method="GET",route="/hello",status="200"} 2)",
      }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace hi::http
