// Result<T>: the value of an operation that can fail in an expected way.
//
// Shaped like std::expected (which g++ 12 lacks): either a T or an Error. Expected failures
// (bad input, a server that is down) travel as values; exceptions are reserved for third-party
// code and caught at the component boundary.
//
//   Result<Lsn> r = stream.confirmed();
//   if (!r) return r.error();          // propagate
//   use(*r);
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace hi {

// A subset of abseil's status codes.
enum class Code {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kUnavailable,  // transient: safe to retry
  kDataLoss,
  kCancelled,
  kDeadlineExceeded,
  kInternal,
};

std::string_view code_name(Code code);

struct Error {
  Code code = Code::kInternal;
  std::string message;

  // "unavailable: pg connect host=db1: connection refused"
  std::string to_string() const;

  // Prefixes the message with context: Error{..., "refused"}.wrap("pg connect") -> "pg connect:
  // refused".
  Error wrap(std::string_view context) const&;
  Error wrap(std::string_view context) &&;
};

inline Error invalid_argument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
inline Error not_found(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
inline Error unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
inline Error internal_error(std::string msg) { return {Code::kInternal, std::move(msg)}; }
inline Error data_loss(std::string msg) { return {Code::kDataLoss, std::move(msg)}; }
// The operation stopped because a stop was requested: not a failure (every component reports a
// requested stop this way, and callers end quietly on it).
inline Error cancelled(std::string msg) { return {Code::kCancelled, std::move(msg)}; }
inline Error failed_precondition(std::string msg) {
  return {Code::kFailedPrecondition, std::move(msg)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

}  // namespace hi
