#include "api/validate.h"

#include <cmath>

namespace hi::api {
namespace {

using nlohmann::json;

// True when brackets outside strings nest deeper than `limit` (checked before parsing, so a
// body of a million '[' costs one pass, not a deep structure).
bool nested_deeper_than(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

std::optional<json> parse_object(std::string_view body, http::ApiError* error) {
  auto bad = [&](std::string message) {
    *error = http::ApiError{http::ErrorCode::kBadRequest, std::move(message), ""};
    return std::nullopt;
  };
  if (nested_deeper_than(body, kMaxJsonDepth)) {
    return bad("the body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json j = json::parse(body, nullptr, false);  // invalid UTF-8 in a string is a parse error
  if (j.is_discarded()) return bad("the body is not valid JSON (UTF-8)");
  if (!j.is_object()) return bad("the body must be a JSON object");
  return j;
}

Fields::Fields(const json& body, std::initializer_list<std::string_view> allowed,
               std::string prefix)
    : body_(body), prefix_(std::move(prefix)) {
  for (const auto& [key, value] : body_.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      fault(key, "unknown field " + key);
      return;
    }
  }
}

void Fields::fault(std::string_view name, std::string message) {
  if (error_) return;
  if (!prefix_.empty()) {
    // "quantity must be ..." reads "miners[3].quantity must be ..."; other messages say where.
    if (message.compare(0, name.size(), name) == 0) {
      message = prefix_ + message;
    } else {
      message += " (in " + prefix_.substr(0, prefix_.size() - 1) + ")";
    }
  }
  error_ =
      http::ApiError{http::ErrorCode::kBadRequest, std::move(message), prefix_ + std::string(name)};
}

const json* Fields::get(std::string_view name, bool required) {
  const auto it = body_.find(name);
  if (it == body_.end() || it->is_null()) {
    if (required) fault(name, std::string(name) + " is required");
    return nullptr;
  }
  return &*it;
}

std::optional<std::int64_t> Fields::integer(std::string_view name, bool required, std::int64_t min,
                                            std::int64_t max) {
  const json* v = get(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) {
    fault(name, std::string(name) + " must be an integer");
    return std::nullopt;
  }
  // Unsigned values above int64 and negatives both fall out of [min, max] here.
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    fault(name, std::string(name) + " must be at most " + std::to_string(max));
    return std::nullopt;
  }
  const auto n = v->get<std::int64_t>();
  if (n < min || n > max) {
    fault(name, std::string(name) + " must be between " + std::to_string(min) + " and " +
                    std::to_string(max));
    return std::nullopt;
  }
  return n;
}

std::optional<double> Fields::number(std::string_view name, bool required, double min, double max) {
  const json* v = get(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) {
    fault(name, std::string(name) + " must be a number");
    return std::nullopt;
  }
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < min || d > max) {
    fault(name,
          std::string(name) + " must be between " + json(min).dump() + " and " + json(max).dump());
    return std::nullopt;
  }
  return d;
}

std::optional<std::string> Fields::one_of(std::string_view name, bool required,
                                          std::span<const char* const> choices) {
  const json* v = get(name, required);
  if (v == nullptr) return std::nullopt;
  std::string list;
  for (const char* c : choices) list += (list.empty() ? "" : ", ") + std::string(c);
  if (!v->is_string()) {
    fault(name, std::string(name) + " must be one of " + list);
    return std::nullopt;
  }
  const auto s = v->get<std::string>();
  for (const char* c : choices) {
    if (s == c) return s;
  }
  fault(name, std::string(name) + " must be one of " + list);
  return std::nullopt;
}

std::optional<std::string> Fields::text(std::string_view name, bool required,
                                        std::size_t max_length) {
  const json* v = get(name, required);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string() || v->get_ref<const std::string&>().empty() ||
      v->get_ref<const std::string&>().size() > max_length) {
    fault(name,
          std::string(name) + " must be a string of 1 to " + std::to_string(max_length) + " bytes");
    return std::nullopt;
  }
  return v->get<std::string>();
}

}  // namespace hi::api
