// Checks on every request kind, applied before any work: by the daemon's
// service layer (authoritative, for both transports) and by libsandbox
// (early, for a clear message without a round trip).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox {

// A name an environment variable may have: a portable identifier, and not
// one of the refused classes (see kRefusedEnv in validate.cc and the
// README): the loader's, each interpreter's start-up and module paths, the
// shell's hooks, and the variables the sandbox sets itself.
Result<void> validate_env_name(std::string_view name);
Result<void> validate_env_value(std::string_view name, std::string_view value);
Result<void> validate_env(const EnvList& env);
// Not empty, not only white space, no NUL byte, at most kMaxCodeBytes.
Result<void> validate_code(std::string_view code);
Result<void> validate_timeout(std::chrono::milliseconds timeout);
Result<void> validate_memory(uint32_t memory_mb);

// Packages as text only (the grammar, the count, no name twice); whether
// they must be pinned or allowlisted is the daemon's policy (packages.h).
Result<void> validate_package_syntax(Language language, const std::vector<std::string>& packages);

Result<void> validate(const RunRequest& request);
Result<void> validate(const SessionOptions& options);
// A session exec: its code, and its timeout unless 0 (the session's default).
Result<void> validate_exec(std::string_view code, std::chrono::milliseconds timeout);

}  // namespace sandbox
