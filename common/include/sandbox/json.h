// JSON views of libsandbox's values, for tools, logs and gateways. Each is
// derived from the same field table as the wire protocol, so a field added
// to a result shows up here with no further code. Byte fields that are not
// valid UTF-8 also appear as "<key>_base64" with the exact bytes.
#pragma once

#include <string>
#include <string_view>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox {

std::string to_json(const RunResult& result);
std::string to_json(const DaemonStatus& status);
std::string to_json(const PoolInfo& pool);
std::string to_json(const SnapshotInfo& snapshot);
std::string to_json(const SessionInfo& session);
std::string to_json(const FileEntry& entry);
std::string to_json(const FileListing& listing);
std::string to_json(const ImagesInfo& images);
std::string to_json(const ExposedPort& port);
std::string to_json(const NetworkStats& network);
std::string to_json(const LayerInfo& layer);
std::string to_json(const LayerUse& layer);
// {"code": ..., "message": ..., "retryable": ...}
std::string to_json(const Error& error);

// A JSON string literal. Invalid UTF-8 bytes become U+FFFD; callers that
// need the exact bytes also emit base64.
std::string json_string(std::string_view bytes);
bool is_valid_utf8(std::string_view bytes);
std::string base64(std::string_view bytes);

}  // namespace sandbox
