// The HTTP client against the server, and the part endpoint (/metrics, /alive).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/net.h"
#include "core/process.h"
#include "http/client.h"
#include "http/part_endpoint.h"
#include "http_support.h"
#include "support/self_signed.h"

namespace hi::http {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Gate;
using test::serve;

using test::client_request;

TEST(HttpClient, SendsTheRequestAndReturnsStatusBodyAndHeaders) {
  Router r;
  r.add("POST", "/hooks/:name", [](Request& q) {
    return Response::json({{"name", std::string(q.param("name"))},
                           {"body", q.body},
                           {"content_type", std::string(q.header("content-type").value_or(""))},
                           {"key", std::string(q.header("idempotency-key").value_or(""))}},
                          201);
  });
  auto server = serve(std::move(r));
  auto req = client_request("POST", server->port(), "/hooks/crm", R"({"id":"e1"})");
  req.headers = {{"Idempotency-Key", "e1"}, {"X-Request-Id", "client-1"}};
  auto res = fetch(req);
  ASSERT_TRUE(res.ok()) << res.error().to_string();
  EXPECT_EQ(res->status, 201);
  EXPECT_EQ(res->header("X-REQUEST-ID"), "client-1");
  EXPECT_EQ(res->header("content-type"), "application/json");
  const auto j = json::parse(res->body);
  EXPECT_EQ(j["name"], "crm");
  EXPECT_EQ(j["body"], R"({"id":"e1"})");
  EXPECT_EQ(j["content_type"], "application/json");  // the default for a body
  EXPECT_EQ(j["key"], "e1");

  auto missing = fetch(client_request("GET", server->port(), "/nope"));
  ASSERT_TRUE(missing.ok());  // an error status is a response, not an Error
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "not_found");
}

TEST(HttpClient, GivesUpAtTheDeadline) {
  Gate gate;
  Router r;
  r.add("POST", "/slow", [&](Request&) { return gate.pass(); });
  auto server = serve(std::move(r));
  const auto started = std::chrono::steady_clock::now();
  auto res = fetch(client_request("POST", server->port(), "/slow", "{}", 200ms));
  const auto took = std::chrono::steady_clock::now() - started;
  gate.release.count_down();
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, Code::kDeadlineExceeded) << res.error().to_string();
  EXPECT_LT(took, 3s);
}

TEST(HttpClient, ARefusedConnectionIsUnavailable) {
  const int port = free_loopback_port();  // nothing listens there
  ASSERT_GT(port, 0);
  auto res = fetch(client_request("GET", static_cast<std::uint16_t>(port), "/", {}, 2s));
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, Code::kUnavailable) << res.error().to_string();
  EXPECT_NE(res.error().message.find("connect"), std::string::npos) << res.error().message;
}

TEST(HttpClient, RefusesHeadersThatWouldInjectOthers) {
  auto req = client_request("GET", 1, "/");
  req.headers = {{"X-Event-Kind", "a\r\nX-Evil: 1"}};
  auto res = fetch(req);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, Code::kInvalidArgument);
}

// The sockets this process holds (its in-process server's included), from /proc.
std::set<std::string> open_sockets() {
  std::set<std::string> out;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.rfind("socket:", 0) == 0) out.insert(target);
  }
  return out;
}

TEST(HttpSession, KeepsItsConnectionAndReconnectsWhenTheServerClosedIt) {
  Router r;
  r.add("POST", "/echo", [](Request& q) { return Response::json({{"body", q.body}}); });
  ServerOptions options;
  options.idle_timeout = 300ms;  // the server closes a connection idle this long
  auto server = serve(std::move(r), options);
  Session session;
  const auto before = open_sockets();
  auto first = session.fetch(client_request("POST", server->port(), "/echo", R"({"n":1})"));
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  const auto after_first = open_sockets();
  EXPECT_GT(after_first.size(), before.size()) << "no connection kept open";
  for (int n = 2; n <= 5; ++n) {
    const std::string body = R"({"n":)" + std::to_string(n) + "}";
    auto res = session.fetch(client_request("POST", server->port(), "/echo", body));
    ASSERT_TRUE(res.ok()) << res.error().to_string();
    EXPECT_EQ(json::parse(res->body)["body"], body);
  }
  // Four more requests, not one new socket on either side.
  EXPECT_EQ(open_sockets(), after_first);

  // Idle past the server's timeout: the server has closed it; the next request still goes
  // through, once, on a new connection.
  std::this_thread::sleep_for(900ms);
  auto again = session.fetch(client_request("POST", server->port(), "/echo", R"({"n":6})"));
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(json::parse(again->body)["body"], R"({"n":6})");
  EXPECT_NE(open_sockets(), after_first);
}

TEST(PartEndpoint, ServesMetricsAndAlive) {
  Metrics metrics;
  metrics.counter("hashinsight_test_things_total", "Things").Increment(3);
  const int port = free_loopback_port();
  ASSERT_GT(port, 0);
  auto endpoint = start_part_endpoint(port, metrics, Logger("test"), "127.0.0.1");
  ASSERT_TRUE(endpoint.ok()) << endpoint.error().to_string();
  ASSERT_TRUE(*endpoint != nullptr);

  auto scraped = fetch(client_request("GET", static_cast<std::uint16_t>(port), "/metrics"));
  ASSERT_TRUE(scraped.ok()) << scraped.error().to_string();
  EXPECT_EQ(scraped->status, 200);
  EXPECT_EQ(scraped->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(scraped->body.find("hashinsight_test_things_total 3"), std::string::npos)
      << scraped->body;

  auto alive = fetch(client_request("GET", static_cast<std::uint16_t>(port), "/alive"));
  ASSERT_TRUE(alive.ok()) << alive.error().to_string();
  EXPECT_EQ(alive->status, 200);
  EXPECT_EQ(json::parse(alive->body), json::parse(R"({"status":"alive"})"));

  auto other = fetch(client_request("GET", static_cast<std::uint16_t>(port), "/ready"));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->status, 404);
}

TEST(PartEndpoint, PortZeroIsOff) {
  Metrics metrics;
  auto endpoint = start_part_endpoint(0, metrics, Logger("test"));
  ASSERT_TRUE(endpoint.ok());
  EXPECT_TRUE(*endpoint == nullptr);
}

TEST(PartEndpoint, ATakenPortIsAnError) {
  Metrics metrics;
  auto first = serve(part_routes(metrics));
  auto second = start_part_endpoint(first->port(), metrics, Logger("test"), "127.0.0.1");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Code::kUnavailable);
}

// https against `openssl s_server` serving a file (-WWW): a certificate made here with openssl,
// trusted as its own CA. The client reads the file through the right CA and refuses the server
// with another CA, or when the certificate names another host.
class HttpsClient : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hi-https-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/hello.txt") << "hello over tls\n";
  }
  void TearDown() override {
    for (auto& p : servers_) p.stop(std::chrono::milliseconds(2000));
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void make_cert(const std::string& name, const std::string& san) {
    hi::test::make_self_signed_cert(dir_, name, san);
  }
  // An s_server with `cert`; its port once it accepts connections.
  int serve_tls(const std::string& cert) {
    const int port = free_loopback_port();
    SpawnOptions o;
    o.argv = {"openssl", "s_server",
              "-accept", "127.0.0.1:" + std::to_string(port),
              "-cert",   dir_ + "/" + cert + ".crt",
              "-key",    dir_ + "/" + cert + ".key",
              "-WWW",    "-quiet"};
    o.cwd = dir_;
    o.output_path = dir_ + "/" + cert + ".log";
    auto p = Process::spawn(o);
    EXPECT_TRUE(p.ok());
    if (!p.ok()) return 0;
    servers_.push_back(std::move(*p));
    for (int i = 0; i < 100 && loopback_port_free(port); ++i) std::this_thread::sleep_for(50ms);
    return port;
  }
  ClientRequest get(int port, const std::string& ca) {
    auto url = parse_url("https://127.0.0.1:" + std::to_string(port) + "/hello.txt");
    EXPECT_TRUE(url.ok());
    ClientRequest r;
    r.url = *url;
    r.ca_file = ca.empty() ? "" : dir_ + "/" + ca + ".crt";
    return r;
  }

  std::string dir_;
  std::vector<Process> servers_;
};

TEST_F(HttpsClient, VerifiesTheServerAndReadsOverTls) {
  make_cert("server", "IP:127.0.0.1");
  make_cert("other", "IP:127.0.0.1");
  const int port = serve_tls("server");
  ASSERT_GT(port, 0);

  auto ok = fetch(get(port, "server"));
  ASSERT_TRUE(ok.ok()) << ok.error().to_string();
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "hello over tls\n");

  // A session keeps one TLS connection for the same host and CA.
  Session session;
  for (int i = 0; i < 2; ++i) {
    auto again = session.fetch(get(port, "server"));
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    EXPECT_EQ(again->body, "hello over tls\n");
  }

  auto untrusted = fetch(get(port, "other"));
  ASSERT_FALSE(untrusted.ok());
  EXPECT_EQ(untrusted.error().code, Code::kUnavailable);
  EXPECT_NE(untrusted.error().message.find("certificate verify failed"), std::string::npos)
      << untrusted.error().message;
  // Nor is the system's store a way around it: a self-signed certificate is in no store.
  EXPECT_FALSE(fetch(get(port, "")).ok());

  auto missing = get(port, "server");
  missing.ca_file = dir_ + "/none.crt";
  auto no_ca = fetch(missing);
  ASSERT_FALSE(no_ca.ok());
  EXPECT_EQ(no_ca.error().code, Code::kInvalidArgument);
}

TEST_F(HttpsClient, RefusesACertificateForAnotherHost) {
  make_cert("elsewhere", "DNS:db.example");
  const int port = serve_tls("elsewhere");
  ASSERT_GT(port, 0);
  auto r = fetch(get(port, "elsewhere"));  // trusted, but it names db.example, not 127.0.0.1
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Code::kUnavailable);
  EXPECT_NE(r.error().message.find("certificate verify failed"), std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace hi::http
