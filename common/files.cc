#include "common/files.h"

#include <zstd.h>

#include <sandbox/limits.h>

namespace sandbox {
namespace {

Error invalid(std::string msg) { return Error::make(ErrorCode::invalid_argument, std::move(msg)); }

// Fast enough for a 50 MB upload under software emulation in the guest;
// text still shrinks well.
constexpr int kLevel = 1;

}  // namespace

Result<void> validate_guest_path(std::string_view path, bool allow_home) {
  if (path.size() > limits::kMaxPathBytes)
    return invalid("path is longer than " + std::to_string(limits::kMaxPathBytes) + " bytes");
  if (path.find('\0') != std::string_view::npos) return invalid("path contains a NUL byte");
  if (path.empty() || path == ".") {
    if (allow_home) return ok();
    return invalid("path is empty; name a file in the session's home");
  }
  if (path.front() == '/') return invalid("path '" + std::string(path) + "' is absolute; paths are relative to home");
  // Lexical depth below home: "a/../b" stays inside, "../x" and "a/../../x" do not.
  int depth = 0;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    auto part = path.substr(start, end - start);
    if (part == "..") {
      if (--depth < 0) return invalid("path '" + std::string(path) + "' leaves the session's home");
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    start = end + 1;
  }
  if (!allow_home && depth == 0) return invalid("path '" + std::string(path) + "' names home, not a file");
  return ok();
}

std::string compress_chunk(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), kLevel);
  // Compressing into a buffer of compressBound's size cannot fail.
  out.resize(ZSTD_isError(n) ? 0 : n);
  return out;
}

std::vector<std::string> compress_chunks(std::string_view data) {
  std::vector<std::string> chunks;
  for (size_t off = 0; off < data.size(); off += limits::kFileChunkBytes)
    chunks.push_back(compress_chunk(data.substr(off, limits::kFileChunkBytes)));
  return chunks;
}

Result<size_t> chunk_content_size(std::string_view chunk) {
  if (chunk.size() > limits::kMaxFileChunkWireBytes) return invalid("a file chunk is too large");
  if (ZSTD_findFrameCompressedSize(chunk.data(), chunk.size()) != chunk.size())
    return invalid("a file chunk is not exactly one zstd frame");
  unsigned long long n = ZSTD_getFrameContentSize(chunk.data(), chunk.size());
  if (n == ZSTD_CONTENTSIZE_UNKNOWN || n == ZSTD_CONTENTSIZE_ERROR)
    return invalid("a file chunk does not declare its size");
  if (n > limits::kFileChunkBytes) return invalid("a file chunk declares more than 1 MiB");
  return static_cast<size_t>(n);
}

Result<void> check_chunks(const std::vector<std::string>& chunks, uint64_t size) {
  if (size > limits::kMaxFileBytes)
    return invalid("file is " + std::to_string(size) + " bytes; the limit is " + std::to_string(limits::kMaxFileBytes));
  if (chunks.size() > limits::kMaxFileChunks) return invalid("too many file chunks");
  uint64_t total = 0;
  for (const auto& c : chunks) {
    auto n = chunk_content_size(c);
    if (!n) return std::move(n).error();
    total += *n;
  }
  if (total != size)
    return invalid("file chunks hold " + std::to_string(total) + " bytes, not the declared " + std::to_string(size));
  return ok();
}

Result<void> decompress_chunk(std::string_view chunk, std::string* out) {
  auto n = chunk_content_size(chunk);
  if (!n) return std::move(n).error();
  size_t at = out->size();
  out->resize(at + *n);
  size_t got = ZSTD_decompress(out->data() + at, *n, chunk.data(), chunk.size());
  if (ZSTD_isError(got) || got != *n) {
    out->resize(at);
    return invalid(std::string("a file chunk does not decompress: ") +
                   (ZSTD_isError(got) ? ZSTD_getErrorName(got) : "size differs from its header"));
  }
  return ok();
}

Result<std::string> decompress_chunks(const std::vector<std::string>& chunks, uint64_t size) {
  if (auto r = check_chunks(chunks, size); !r) return std::move(r).error();
  std::string out;
  out.reserve(size);
  for (const auto& c : chunks)
    if (auto r = decompress_chunk(c, &out); !r) return std::move(r).error();
  return out;
}

}  // namespace sandbox
