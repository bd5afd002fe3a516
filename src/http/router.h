// The route table: method + pattern -> handler.
//
//   http::Router router;
//   router.add("PATCH", "/api/miners/:id/status", [&](http::Request& r) {
//     return update_status(r.param("id"), r.body);         // on a worker thread: may block
//   });
//   router.add("GET", "/alive", alive, http::Execution::kInline);
//
// A pattern is "/"-separated literal segments and ":name" parameters, each parameter one whole
// non-empty segment. Matching is on decoded segments, so "/api/miners/a%2Fb/status" gives
// id = "a/b". When several patterns match, the one whose first differing segment is a literal
// wins ("/api/miners/bulk" before "/api/miners/:id"). A path that matches only other methods is
// 405 with their list, one that matches nothing is 404.
//
// Routes are added before the router is handed to a server; after that it is read-only and may
// be read from any thread. routes() is the table itself, for tests that must cover every route.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"

namespace hi::http {

using Handler = std::function<Response(Request&)>;

enum class Execution {
  kWorkers,  // on the server's bounded worker pool: may block (database, Redis, webhooks)
  kInline,   // on the connection's I/O thread: must not block (health, metrics, stream setup)
};

struct Route {
  std::string method;
  std::string pattern;
  Handler handler;
  Execution execution = Execution::kWorkers;
};

struct RouteMatch {
  const Route* route = nullptr;  // null: no route for this method and path
  Pairs params;                  // decoded, by name, when route is set
  // When route is null: the methods that do have a route for this path (empty: 404, else 405).
  std::vector<std::string> allowed;
};

class Router {
 public:
  // A pattern that does not start with '/', has an empty ":" parameter name, or repeats a
  // method + pattern already added is a programming error (assert).
  Router& add(std::string method, std::string pattern, Handler handler,
              Execution execution = Execution::kWorkers);

  RouteMatch match(std::string_view method, const std::vector<std::string>& segments) const;

  const std::vector<Route>& routes() const { return routes_; }

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter's name
    bool param = false;
  };
  static std::vector<Segment> compile(std::string_view pattern);
  // True when the decoded path `segments` fit `pattern` (same length, literals equal).
  static bool fits(const std::vector<Segment>& pattern, const std::vector<std::string>& segments);

  std::vector<Route> routes_;
  std::vector<std::vector<Segment>> compiled_;  // parallel to routes_
};

}  // namespace hi::http
