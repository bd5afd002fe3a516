#include "http/message.h"

#include <algorithm>

namespace hi::http {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

std::optional<std::string_view> find(const Pairs& pairs, std::string_view name, bool any_case) {
  for (const auto& [k, v] : pairs) {
    if (any_case ? iequals(k, name) : k == name) return std::string_view(v);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  return find(headers, name, true);
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  return find(query, name, false);
}

std::string_view Request::param(std::string_view name) const {
  return find(params, name, false).value_or(std::string_view());
}

bool is_sane_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

Response Response::json(const nlohmann::json& body, int status) {
  Response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

Response Response::text(std::string body, std::string content_type, int status) {
  Response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

Response Response::fail(ErrorCode code, std::string message, std::string field) {
  return fail(ApiError{code, std::move(message), std::move(field)});
}

Response Response::fail(ApiError error) {
  Response r;
  r.status = http_status(error.code);
  r.error = std::move(error);
  return r;
}

Response Response::streaming(std::shared_ptr<Stream> stream, std::string content_type) {
  Response r;
  r.content_type = std::move(content_type);
  r.stream = std::move(stream);
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

}  // namespace hi::http
