#include "common/validate.h"

#include <array>
#include <cctype>

#include "common/limits.h"

namespace sandbox {
namespace {

// Names that let a caller change what runs before the user's code does.
constexpr std::array<std::string_view, 8> kForbiddenEnv = {
    "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONSTARTUP", "PYTHONPATH",
    "NODE_OPTIONS", "BASH_ENV", "ENV", "GLIBC_TUNABLES",
};

Error invalid(std::string msg) { return Error::make(ErrorCode::invalid_argument, std::move(msg)); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

Result<void> validate_env_name(std::string_view name) {
  if (name.empty()) return invalid("environment variable name is empty");
  if (name.size() > limits::kMaxEnvNameBytes)
    return invalid("environment variable name longer than " + std::to_string(limits::kMaxEnvNameBytes) + " bytes");
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    bool okc = c == '_' || std::isalpha(c) || (i > 0 && std::isdigit(c));
    if (!okc || c > 127) return invalid("environment variable name '" + std::string(name) + "' is not [A-Za-z_][A-Za-z0-9_]*");
  }
  for (auto bad : kForbiddenEnv)
    if (iequals(name, bad)) return invalid("environment variable '" + std::string(name) + "' is not allowed");
  return ok();
}

Result<void> validate_env_value(std::string_view name, std::string_view value) {
  if (value.size() > limits::kMaxEnvValueBytes)
    return invalid("value of '" + std::string(name) + "' longer than " + std::to_string(limits::kMaxEnvValueBytes) +
                   " bytes");
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return invalid("value of '" + std::string(name) + "' contains a control character");
  }
  return ok();
}

Result<void> validate_run_request(const proto::RunRequest& r) {
  if (r.code.empty()) return invalid("code is empty");
  if (r.code.size() > limits::kMaxCodeBytes)
    return invalid("code is " + std::to_string(r.code.size()) + " bytes; the limit is " +
                   std::to_string(limits::kMaxCodeBytes));
  if (r.timeout_ms < limits::kMinTimeoutMs || r.timeout_ms > limits::kMaxTimeoutMs)
    return invalid("timeout " + std::to_string(r.timeout_ms) + " ms is outside " +
                   std::to_string(limits::kMinTimeoutMs) + "-" + std::to_string(limits::kMaxTimeoutMs) + " ms");
  if (r.memory_mb < limits::kMinMemoryMb || r.memory_mb > limits::kMaxMemoryMb)
    return invalid("memory " + std::to_string(r.memory_mb) + " MB is outside " + std::to_string(limits::kMinMemoryMb) +
                   "-" + std::to_string(limits::kMaxMemoryMb) + " MB");
  if (r.env.size() > limits::kMaxEnvVars)
    return invalid("more than " + std::to_string(limits::kMaxEnvVars) + " environment variables");
  for (size_t i = 0; i < r.env.size(); ++i) {
    if (auto v = validate_env_name(r.env[i].first); !v) return v;
    if (auto v = validate_env_value(r.env[i].first, r.env[i].second); !v) return v;
    for (size_t j = 0; j < i; ++j)
      if (r.env[j].first == r.env[i].first) return invalid("environment variable '" + r.env[i].first + "' given twice");
  }
  return ok();
}

}  // namespace sandbox
