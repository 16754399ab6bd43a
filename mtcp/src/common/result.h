// Result<T>: a value or an Error, without exceptions (C++20 has no std::expected).
#pragma once
#include <cassert>
#include <utility>
#include <variant>

#include "common/errors.h"

namespace mtcp {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error e) : v_(e) { assert(e != Error::ok); }  // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  Error error() const { return ok() ? Error::ok : std::get<1>(v_); }
  T& value() { assert(ok()); return std::get<0>(v_); }
  const T& value() const { assert(ok()); return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Error> v_;
};

// Status: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : e_(e) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return e_ == Error::ok; }
  explicit operator bool() const { return ok(); }
  Error error() const { return e_; }

 private:
  Error e_ = Error::ok;
};

}  // namespace mtcp
