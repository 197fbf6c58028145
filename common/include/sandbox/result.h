// Error taxonomy and a small Result<T> carrying errno and context: the one
// error type of libsandbox, the daemon and the agent, so one code name means
// one thing on every transport.
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sandbox {

enum class ErrorCode {
  invalid_argument,
  permission_denied,
  capacity,
  timeout,
  vm_boot_failed,
  guest_error,
  communication,
  session_closed,
  not_found,
  package_not_allowed,
  image_missing,
  image_corrupt,
  internal,
  // Last: codes are appended, never renumbered.
  package_install_failed,
};

// Stable wire/CLI name of a code.
std::string_view error_code_name(ErrorCode code);
std::optional<ErrorCode> error_code_from_name(std::string_view name);
// Whether the same request may succeed if retried later.
bool error_code_retryable(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
  int sys_errno = 0;  // 0 when no system call is involved

  // "open '/x/y': Permission denied" style: operation, subject, errno text.
  static Error sys(std::string_view op, std::string_view subject = {}, int err = errno);
  static Error make(ErrorCode code, std::string message) { return Error{code, std::move(message), 0}; }

  // Adds outer context: "starting VM: open '/x': ENOENT".
  Error& context(std::string_view what) {
    message.insert(0, std::string(what) + ": ");
    return *this;
  }
  std::string describe() const { return std::string(error_code_name(code)) + ": " + message; }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}
  bool ok() const { return !error_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const& { return *error_; }
  Error&& error() && { return std::move(*error_); }

 private:
  std::optional<Error> error_;
};

inline Result<void> ok() { return {}; }

}  // namespace sandbox
