// Request bodies, checked field by field before anything is written: a wrong type, a missing
// field, an unknown field or a value out of range is a 400 naming the field.
//
//   http::ApiError bad;
//   auto body = parse_object(request.body, &bad);
//   if (!body) return Response::fail(bad);
//   Fields f(*body, {"model_id", "quantity"});
//   const auto quantity = f.integer("quantity", true, 1, 100'000);
//   if (auto e = f.error()) return Response::fail(*e);      // the first fault found
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "http/error.h"

namespace hi::api {

// Deepest nesting a body may have; deeper is refused before parsing.
inline constexpr int kMaxJsonDepth = 32;

// The body as a JSON object; nullopt with `error` set when it is not JSON (or not UTF-8, or
// nested deeper than kMaxJsonDepth) or not an object.
std::optional<nlohmann::json> parse_object(std::string_view body, http::ApiError* error);

class Fields {
 public:
  // `allowed`: every field the body may carry; any other is an error. `prefix` names the body
  // inside a larger one in error messages ("miners[3]." gives "miners[3].quantity").
  Fields(const nlohmann::json& body, std::initializer_list<std::string_view> allowed,
         std::string prefix = {});

  // An integer in [min, max] (no fraction, no string).
  std::optional<std::int64_t> integer(std::string_view name, bool required, std::int64_t min,
                                      std::int64_t max);
  // A finite number in [min, max].
  std::optional<double> number(std::string_view name, bool required, double min, double max);
  // A string equal to one of `choices`.
  std::optional<std::string> one_of(std::string_view name, bool required,
                                    std::span<const char* const> choices);
  // A string of 1 to max_length bytes.
  std::optional<std::string> text(std::string_view name, bool required, std::size_t max_length);

  // The first fault found, if any.
  const std::optional<http::ApiError>& error() const { return error_; }

 private:
  // The field's value when present and not null; records "missing" when required.
  const nlohmann::json* get(std::string_view name, bool required);
  void fault(std::string_view name, std::string message);

  const nlohmann::json& body_;
  std::string prefix_;
  std::optional<http::ApiError> error_;
};

}  // namespace hi::api
