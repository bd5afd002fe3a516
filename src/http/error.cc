#include "http/error.h"

#include <nlohmann/json.hpp>

namespace hi::http {

std::string_view code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequest:
      return "bad_request";
    case ErrorCode::kUnauthorized:
      return "unauthorized";
    case ErrorCode::kForbidden:
      return "forbidden";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kMethodNotAllowed:
      return "method_not_allowed";
    case ErrorCode::kRequestTimeout:
      return "request_timeout";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kPayloadTooLarge:
      return "payload_too_large";
    case ErrorCode::kUnsupportedMediaType:
      return "unsupported_media_type";
    case ErrorCode::kUnprocessable:
      return "unprocessable";
    case ErrorCode::kRateLimited:
      return "rate_limited";
    case ErrorCode::kHeadersTooLarge:
      return "headers_too_large";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kOverloaded:
      return "overloaded";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kTimeout:
      return "timeout";
  }
  return "internal";
}

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequest:
      return 400;
    case ErrorCode::kUnauthorized:
      return 401;
    case ErrorCode::kForbidden:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kMethodNotAllowed:
      return 405;
    case ErrorCode::kRequestTimeout:
      return 408;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kPayloadTooLarge:
      return 413;
    case ErrorCode::kUnsupportedMediaType:
      return 415;
    case ErrorCode::kUnprocessable:
      return 422;
    case ErrorCode::kRateLimited:
      return 429;
    case ErrorCode::kHeadersTooLarge:
      return 431;
    case ErrorCode::kInternal:
      return 500;
    case ErrorCode::kOverloaded:
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kTimeout:
      return 504;
  }
  return 500;
}

ApiError api_error(const Error& error, std::string field) {
  switch (error.code) {
    case Code::kInvalidArgument:
      return {ErrorCode::kBadRequest, error.message, std::move(field)};
    case Code::kNotFound:
      return {ErrorCode::kNotFound, error.message, std::move(field)};
    case Code::kAlreadyExists:
    case Code::kFailedPrecondition:
      return {ErrorCode::kConflict, error.message, std::move(field)};
    case Code::kUnavailable:
    case Code::kCancelled:
      return {ErrorCode::kUnavailable, error.message, {}};
    case Code::kDeadlineExceeded:
      return {ErrorCode::kTimeout, error.message, {}};
    case Code::kOk:
    case Code::kDataLoss:
    case Code::kInternal:
      break;
  }
  return {ErrorCode::kInternal, "internal error", {}};
}

std::string error_body(const ApiError& error, std::string_view request_id) {
  nlohmann::json inner = {
      {"code", code_name(error.code)}, {"message", error.message}, {"request_id", request_id}};
  if (!error.field.empty()) inner["field"] = error.field;
  return nlohmann::json{{"error", std::move(inner)}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

}  // namespace hi::http
