// Minimal JSON output for sandboxctl --json.
#pragma once

#include <string>
#include <string_view>

#include "sandbox/client.h"

namespace sandbox::ctl {

// A JSON string literal. Invalid UTF-8 bytes become U+FFFD; callers that
// need the exact bytes also emit base64.
std::string json_string(std::string_view bytes);
bool is_valid_utf8(std::string_view bytes);
std::string base64(std::string_view bytes);
// One run's (or session exec's) outcome as a JSON object.
std::string result_json(std::string_view source, Language language, const Result<RunResult>& r);

}  // namespace sandbox::ctl
