#include "core/result.h"

namespace hi {

std::string_view code_name(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kNotFound:
      return "not_found";
    case Code::kAlreadyExists:
      return "already_exists";
    case Code::kFailedPrecondition:
      return "failed_precondition";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kDataLoss:
      return "data_loss";
    case Code::kCancelled:
      return "cancelled";
    case Code::kDeadlineExceeded:
      return "deadline_exceeded";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out(code_name(code));
  out += ": ";
  out += message;
  return out;
}

Error Error::wrap(std::string_view context) const& {
  Error e = *this;
  return std::move(e).wrap(context);
}

Error Error::wrap(std::string_view context) && {
  std::string m(context);
  m += ": ";
  m += message;
  message = std::move(m);
  return std::move(*this);
}

}  // namespace hi
