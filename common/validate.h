// Checks on a run request that every entry point applies before any work:
// the daemon always (authoritative), libsandbox early for a clear message.
#pragma once

#include <string_view>

#include "common/protocol.h"
#include "common/result.h"

namespace sandbox {

// A name an environment variable may have: a portable identifier, not one
// that changes how the interpreter or the loader starts.
Result<void> validate_env_name(std::string_view name);
Result<void> validate_env_value(std::string_view name, std::string_view value);
Result<void> validate_run_request(const proto::RunRequest& request);

}  // namespace sandbox
