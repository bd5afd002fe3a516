#include "http/error.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "http/message.h"

namespace hi::http {
namespace {

using nlohmann::json;

TEST(ErrorBody, HasTheOneShape) {
  const auto with_field =
      json::parse(error_body({ErrorCode::kBadRequest, "quantity must be > 0", "quantity"}, "r-1"));
  EXPECT_EQ(with_field, json::parse(R"({"error": {"code": "bad_request",
      "message": "quantity must be > 0", "request_id": "r-1", "field": "quantity"}})"));
  const auto without = json::parse(error_body({ErrorCode::kNotFound, "no such miner", {}}, "r-2"));
  EXPECT_FALSE(without["error"].contains("field"));
  EXPECT_EQ(without["error"]["code"], "not_found");
}

TEST(ErrorBody, NeverThrowsOnBytesThatAreNotUtf8) {
  const std::string body = error_body({ErrorCode::kBadRequest, "bad \xff\xfe name", {}}, "r");
  EXPECT_TRUE(json::accept(body));
}

TEST(ErrorCode, NamesAreStableAndDistinct) {
  std::set<std::string_view> names;
  for (int c = 0; c <= static_cast<int>(ErrorCode::kTimeout); ++c) {
    const auto code = static_cast<ErrorCode>(c);
    EXPECT_TRUE(names.insert(code_name(code)).second) << code_name(code);
    EXPECT_GE(http_status(code), 400);
  }
  EXPECT_EQ(code_name(ErrorCode::kPayloadTooLarge), "payload_too_large");
  EXPECT_EQ(http_status(ErrorCode::kPayloadTooLarge), 413);
  EXPECT_EQ(code_name(ErrorCode::kOverloaded), "overloaded");
  EXPECT_EQ(http_status(ErrorCode::kOverloaded), 503);
  EXPECT_EQ(http_status(ErrorCode::kMethodNotAllowed), 405);
}

TEST(ApiError, MapsResultCodesAndHidesInternalDetails) {
  EXPECT_EQ(api_error(invalid_argument("bad"), "qty").code, ErrorCode::kBadRequest);
  EXPECT_EQ(api_error(invalid_argument("bad"), "qty").field, "qty");
  EXPECT_EQ(api_error(not_found("gone")).code, ErrorCode::kNotFound);
  EXPECT_EQ(api_error(unavailable("pg down")).code, ErrorCode::kUnavailable);
  EXPECT_EQ(api_error(Error{Code::kDeadlineExceeded, "slow"}).code, ErrorCode::kTimeout);
  const auto internal = api_error(internal_error("pg: relation \"secret\" does not exist"));
  EXPECT_EQ(internal.code, ErrorCode::kInternal);
  EXPECT_EQ(internal.message, "internal error");
}

TEST(Request, LooksUpHeadersInAnyCaseAndParamsByName) {
  Request r;
  r.headers = {{"x-request-id", "a"}, {"content-type", "application/json"}};
  r.query = {{"days", "30"}, {"days", "7"}, {"flag", ""}};
  r.params = {{"id", "7"}};
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_FALSE(r.header("authorization").has_value());
  EXPECT_EQ(r.query_param("days"), "30");
  EXPECT_EQ(r.query_param("flag"), "");
  EXPECT_FALSE(r.query_param("Days").has_value());
  EXPECT_EQ(r.param("id"), "7");
  EXPECT_EQ(r.param("nope"), "");
}

TEST(Request, SaneRequestIds) {
  EXPECT_TRUE(is_sane_request_id("trace-42"));
  EXPECT_TRUE(is_sane_request_id(std::string(128, 'a')));
  EXPECT_FALSE(is_sane_request_id(std::string(129, 'a')));
  EXPECT_FALSE(is_sane_request_id(""));
  EXPECT_FALSE(is_sane_request_id("a b"));
  EXPECT_FALSE(is_sane_request_id("a\x01"));
  EXPECT_FALSE(is_sane_request_id("caf\xc3\xa9"));
}

TEST(Response, FailTakesTheCodesStatus) {
  const auto r = Response::fail(ErrorCode::kConflict, "taken", "name");
  EXPECT_EQ(r.status, 409);
  ASSERT_TRUE(r.error.has_value());
  EXPECT_EQ(r.error->field, "name");
  EXPECT_EQ(Response::json({{"a", 1}}, 201).body, R"({"a":1})");
}

}  // namespace
}  // namespace hi::http
