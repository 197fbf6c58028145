#include <sandbox/result.h>

#include <array>

namespace sandbox {
namespace {

struct CodeInfo {
  ErrorCode code;
  std::string_view name;
  bool retryable;
};

constexpr std::array<CodeInfo, 14> kCodes = {{
    {ErrorCode::invalid_argument, "invalid_argument", false},
    {ErrorCode::permission_denied, "permission_denied", false},
    {ErrorCode::capacity, "capacity", true},
    {ErrorCode::timeout, "timeout", true},
    {ErrorCode::vm_boot_failed, "vm_boot_failed", true},
    {ErrorCode::guest_error, "guest_error", false},
    {ErrorCode::communication, "communication", true},
    {ErrorCode::session_closed, "session_closed", false},
    {ErrorCode::not_found, "not_found", false},
    {ErrorCode::package_not_allowed, "package_not_allowed", false},
    {ErrorCode::image_missing, "image_missing", false},
    {ErrorCode::image_corrupt, "image_corrupt", false},
    {ErrorCode::internal, "internal", false},
    // An index that failed transiently was retried already by the builder.
    {ErrorCode::package_install_failed, "package_install_failed", false},
}};

}  // namespace

std::string_view error_code_name(ErrorCode code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c.name;
  return "internal";
}

std::optional<ErrorCode> error_code_from_name(std::string_view name) {
  for (const auto& c : kCodes)
    if (c.name == name) return c.code;
  return std::nullopt;
}

bool error_code_retryable(ErrorCode code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c.retryable;
  return false;
}

Error Error::sys(std::string_view op, std::string_view subject, int err) {
  std::string msg(op);
  if (!subject.empty()) msg += " '" + std::string(subject) + "'";
  msg += ": ";
  msg += std::strerror(err);
  ErrorCode code = ErrorCode::internal;
  if (err == EACCES || err == EPERM) code = ErrorCode::permission_denied;
  if (err == ENOENT) code = ErrorCode::not_found;
  return Error{code, std::move(msg), err};
}

}  // namespace sandbox
