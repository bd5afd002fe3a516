#include "http/router.h"

#include <gtest/gtest.h>

namespace hi::http {
namespace {

Handler named(std::string name) {
  return [name](Request&) { return Response::text(name); };
}

std::string run(const RouteMatch& m) {
  Request r;
  return m.route ? m.route->handler(r).body : "";
}

std::vector<std::string> split(std::string_view path) { return parse_target(path)->segments; }

TEST(Router, MatchesLiteralsAndNamesParameters) {
  Router router;
  router.add("PATCH", "/api/miners/:id/status", named("status"));
  router.add("GET", "/api/miners", named("list"));
  auto m = router.match("PATCH", split("/api/miners/a%2Fb/status"));
  ASSERT_NE(m.route, nullptr);
  EXPECT_EQ(m.route->pattern, "/api/miners/:id/status");
  EXPECT_EQ(m.params, (Pairs{{"id", "a/b"}}));
  EXPECT_EQ(run(router.match("GET", split("/api/miners"))), "list");
}

TEST(Router, PrefersALiteralToAParameter) {
  Router router;
  router.add("POST", "/api/miners/:id", named("one"));
  router.add("POST", "/api/miners/bulk", named("bulk"));
  router.add("GET", "/a/:x/c", named("param-first"));
  router.add("GET", "/a/b/:y", named("literal-first"));
  EXPECT_EQ(run(router.match("POST", split("/api/miners/bulk"))), "bulk");
  EXPECT_EQ(run(router.match("POST", split("/api/miners/7"))), "one");
  EXPECT_EQ(run(router.match("GET", split("/a/b/c"))), "literal-first");
}

TEST(Router, TellsNotFoundFromMethodNotAllowed) {
  Router router;
  router.add("PATCH", "/api/miners/:id/status", named("status"));
  router.add("GET", "/api/miners/:id/status", named("get"));
  router.add("PATCH", "/api/miners/:other/status", named("twin"));
  auto wrong_method = router.match("DELETE", split("/api/miners/7/status"));
  EXPECT_EQ(wrong_method.route, nullptr);
  EXPECT_EQ(wrong_method.allowed, (std::vector<std::string>{"PATCH", "GET"}));
  for (const char* path : {"/api/miners/7", "/api/miners//status", "/api/miners/7/status/", "/",
                           "/API/miners/7/status"}) {
    auto none = router.match("PATCH", split(path));
    EXPECT_EQ(none.route, nullptr) << path;
    EXPECT_TRUE(none.allowed.empty()) << path;
  }
}

TEST(Router, RootAndTheTableItself) {
  Router router;
  router.add("GET", "/", named("root"), Execution::kInline);
  EXPECT_EQ(run(router.match("GET", split("/"))), "root");
  ASSERT_EQ(router.routes().size(), 1u);
  EXPECT_EQ(router.routes()[0].execution, Execution::kInline);
}

}  // namespace
}  // namespace hi::http
