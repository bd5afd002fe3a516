// The dashboard's files (web/ and the charting library from web/node_modules), embedded into
// the binary at build time (cmake/embed_web.cmake), and the routes that serve them:
//
//   GET /analytics/main               web/index.html
//   GET /analytics/assets/:file       app.js, style.css, chart.umd.js
//
// No authentication: the page is public, the data routes it calls are not. With a `web_dir`
// (the WEB_DIR setting, for working on the page) the files are read from that directory on
// every request instead, so an edit shows on reload without a rebuild.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "http/router.h"

namespace hi::api {

struct WebAsset {
  std::string_view name;  // as served under /analytics/assets/ ("index.html" is the page)
  std::string_view body;
};

// Generated (cmake/embed_web.cmake).
std::span<const WebAsset> web_assets();

void add_dashboard_routes(http::Router& router, std::string web_dir);

}  // namespace hi::api
