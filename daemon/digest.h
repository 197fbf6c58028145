// SHA-256, the one digest of the daemon: image verification, snapshot
// integrity and cache keys.
#pragma once

#include <string>
#include <string_view>

#include <sandbox/result.h>

namespace sandbox::daemon {

// Lowercase hex.
std::string sha256_hex(std::string_view data);
// Of a file's contents; a missing file is not_found.
Result<std::string> sha256_file(const std::string& path);

}  // namespace sandbox::daemon
