// Files in transit between client, daemon and agent: guest path rules and
// the zstd chunk format (one frame per chunk of at most
// limits::kFileChunkBytes, its content size in the frame header).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox {

// A path relative to the session's home: at most kMaxPathBytes, no NUL, not
// absolute, and no ".." that climbs above home. `allow_home` accepts "" and
// "." (the home directory itself, for listings).
Result<void> validate_guest_path(std::string_view path, bool allow_home);

// Splits `data` into compressed chunks; empty data gives no chunk.
std::vector<std::string> compress_chunks(std::string_view data);
// One chunk compressed (the agent streams a file chunk by chunk).
std::string compress_chunk(std::string_view data);
// The size a chunk decompresses to, from its frame header: an error unless
// it is exactly one zstd frame that declares at most kFileChunkBytes.
Result<size_t> chunk_content_size(std::string_view chunk);
// Checks that `chunks` decompress to `size` bytes in all (headers only).
Result<void> check_chunks(const std::vector<std::string>& chunks, uint64_t size);
// Appends the decompressed chunk to `out`.
Result<void> decompress_chunk(std::string_view chunk, std::string* out);
Result<std::string> decompress_chunks(const std::vector<std::string>& chunks, uint64_t size);

}  // namespace sandbox
