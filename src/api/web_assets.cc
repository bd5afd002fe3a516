#include "api/web_assets.h"

#include <fstream>
#include <sstream>

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;

std::string_view content_type_of(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

// The file `name`: from `web_dir` when set (the served names are flat: no path is accepted),
// else the embedded copy.
Response serve(const std::string& web_dir, std::string_view name) {
  const WebAsset* embedded = nullptr;
  for (const auto& a : web_assets()) {
    if (a.name == name) embedded = &a;
  }
  if (embedded == nullptr) {
    return Response::fail(ErrorCode::kNotFound, "no dashboard file " + std::string(name));
  }
  std::string body(embedded->body);
  if (!web_dir.empty() && name != "chart.umd.js") {
    std::ifstream in(web_dir + "/" + std::string(name), std::ios::binary);
    if (!in) return Response::fail(ErrorCode::kNotFound, "no " + std::string(name) + " in WEB_DIR");
    std::ostringstream text;
    text << in.rdbuf();
    body = std::move(text).str();
  }
  Response r = Response::text(std::move(body), std::string(content_type_of(name)));
  // Revalidated on every load: a new binary's page is never mixed with an old cached script.
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (name == "index.html") {
    // The page talks to its own origin only, and cannot be framed.
    r.headers.emplace_back(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'");
  }
  return r;
}

}  // namespace

void add_dashboard_routes(http::Router& router, std::string web_dir) {
  router.add(
      "GET", "/analytics/main", [web_dir](http::Request&) { return serve(web_dir, "index.html"); },
      web_dir.empty() ? http::Execution::kInline : http::Execution::kWorkers);
  router.add(
      "GET", "/analytics/assets/:file",
      [web_dir](http::Request& r) {
        const std::string file(r.param("file"));
        if (file == "index.html") {
          return Response::fail(ErrorCode::kNotFound, "the page is /analytics/main");
        }
        return serve(web_dir, file);
      },
      web_dir.empty() ? http::Execution::kInline : http::Execution::kWorkers);
}

}  // namespace hi::api
