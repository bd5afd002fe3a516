// The one error shape of every HTTP response that is not a success:
//
//   {"error": {"code": "not_found", "message": "no route for GET /nope", "request_id": "...",
//              "field": "quantity"}}          <- "field" only when one field of the input is wrong
//
// `code` is stable (clients switch on it; the message is for people). Each code has one status.
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"

namespace hi::http {

enum class ErrorCode {
  kBadRequest,            // 400 bad_request: malformed request, or a field failed validation
  kUnauthorized,          // 401 unauthorized: no, or an invalid, credential
  kForbidden,             // 403 forbidden: valid credential without the scope
  kNotFound,              // 404 not_found
  kMethodNotAllowed,      // 405 method_not_allowed (the response carries Allow)
  kRequestTimeout,        // 408 request_timeout: the request did not arrive in time
  kConflict,              // 409 conflict
  kPayloadTooLarge,       // 413 payload_too_large: the body is over the server's limit
  kUnsupportedMediaType,  // 415 unsupported_media_type
  kUnprocessable,         // 422 unprocessable: well-formed, but cannot be applied
  kRateLimited,           // 429 rate_limited (the response carries Retry-After)
  kHeadersTooLarge,       // 431 headers_too_large
  kInternal,              // 500 internal: a bug or an unexpected failure; details only in logs
  kOverloaded,            // 503 overloaded: no worker free (the response carries Retry-After)
  kUnavailable,           // 503 unavailable: a dependency (database, Redis, bus) is down
  kTimeout,               // 504 timeout: a dependency did not answer in time
};

// "not_found"
std::string_view code_name(ErrorCode code);
// 404
int http_status(ErrorCode code);

struct ApiError {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::string field;  // the input field at fault; empty when none
};

// An expected failure of the code below a handler, as the client should see it. kInternal and
// kDataLoss become a generic "internal error" (their messages are for the log, not the client).
ApiError api_error(const Error& error, std::string field = {});

// The JSON body for `error` (invalid UTF-8 in the message is replaced, never a throw).
std::string error_body(const ApiError& error, std::string_view request_id);

}  // namespace hi::http
