#include "common/msgpack_scan.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

namespace sandbox {
namespace {

enum class Kind : uint8_t { scalar, array, map, never_used };

// The layout after the first byte of formats 0xc0..0xdf: `length_bytes` of
// big-endian length (a payload's size, or a container's entry count), then
// `fixed_bytes` (an ext's type byte, or a number), then the payload.
struct Format {
  Kind kind;
  uint8_t length_bytes;
  uint8_t fixed_bytes;
};

constexpr std::array<Format, 32> kFormats = {{
    {Kind::scalar, 0, 0},      // 0xc0 nil
    {Kind::never_used, 0, 0},  // 0xc1 never used
    {Kind::scalar, 0, 0},      // 0xc2 false
    {Kind::scalar, 0, 0},      // 0xc3 true
    {Kind::scalar, 1, 0},      // 0xc4 bin 8
    {Kind::scalar, 2, 0},      // 0xc5 bin 16
    {Kind::scalar, 4, 0},      // 0xc6 bin 32
    {Kind::scalar, 1, 1},      // 0xc7 ext 8: length, type, data
    {Kind::scalar, 2, 1},      // 0xc8 ext 16
    {Kind::scalar, 4, 1},      // 0xc9 ext 32
    {Kind::scalar, 0, 4},      // 0xca float 32
    {Kind::scalar, 0, 8},      // 0xcb float 64
    {Kind::scalar, 0, 1},      // 0xcc uint 8
    {Kind::scalar, 0, 2},      // 0xcd uint 16
    {Kind::scalar, 0, 4},      // 0xce uint 32
    {Kind::scalar, 0, 8},      // 0xcf uint 64
    {Kind::scalar, 0, 1},      // 0xd0 int 8
    {Kind::scalar, 0, 2},      // 0xd1 int 16
    {Kind::scalar, 0, 4},      // 0xd2 int 32
    {Kind::scalar, 0, 8},      // 0xd3 int 64
    {Kind::scalar, 0, 1 + 1},  // 0xd4 fixext 1: type, data
    {Kind::scalar, 0, 1 + 2},  // 0xd5 fixext 2
    {Kind::scalar, 0, 1 + 4},  // 0xd6 fixext 4
    {Kind::scalar, 0, 1 + 8},  // 0xd7 fixext 8
    {Kind::scalar, 0, 1 + 16}, // 0xd8 fixext 16
    {Kind::scalar, 1, 0},      // 0xd9 str 8
    {Kind::scalar, 2, 0},      // 0xda str 16
    {Kind::scalar, 4, 0},      // 0xdb str 32
    {Kind::array, 2, 0},       // 0xdc array 16
    {Kind::array, 4, 0},       // 0xdd array 32
    {Kind::map, 2, 0},         // 0xde map 16
    {Kind::map, 4, 0},         // 0xdf map 32
}};

// What the first bytes of an object say: a scalar and how many payload bytes
// follow, or a container and how many entries (map: key/value pairs).
struct Head {
  Kind kind;
  uint64_t count;
};

Error bad(std::string what) { return Error::make(ErrorCode::invalid_argument, "malformed message: " + std::move(what)); }

Error truncated(size_t offset, uint64_t needed, size_t left) {
  return bad("object at offset " + std::to_string(offset) + " needs " + std::to_string(needed) + " more bytes, " +
             std::to_string(left) + " left");
}

std::string_view kind_name(Kind kind) { return kind == Kind::map ? "map" : "array"; }

class Cursor {
 public:
  explicit Cursor(std::string_view bytes) : bytes_(bytes) {}

  size_t offset() const { return pos_; }
  size_t left() const { return bytes_.size() - pos_; }
  uint8_t byte() { return static_cast<uint8_t>(bytes_[pos_++]); }
  // Big-endian unsigned of `width` bytes; the caller checked they are there.
  uint64_t be(size_t width) {
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v = (v << 8) | byte();
    return v;
  }
  // Compared as 64-bit so a 32-bit length near 4 GiB cannot wrap.
  bool skip(uint64_t n) {
    if (n > left()) return false;
    pos_ += static_cast<size_t>(n);
    return true;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

Result<Head> read_head(Cursor& in) {
  size_t at = in.offset();
  if (in.left() == 0) return truncated(at, 1, 0);
  uint8_t b = in.byte();
  if (b <= 0x7f || b >= 0xe0) return Head{Kind::scalar, 0};  // positive and negative fixint
  if (b <= 0x8f) return Head{Kind::map, b & 0x0fu};
  if (b <= 0x9f) return Head{Kind::array, b & 0x0fu};
  if (b <= 0xbf) return Head{Kind::scalar, b & 0x1fu};  // fixstr
  const Format& f = kFormats[b - 0xc0];
  if (f.kind == Kind::never_used) return bad("byte 0xc1 at offset " + std::to_string(at) + " is not a msgpack format");
  if (f.length_bytes > in.left()) return truncated(at, f.length_bytes, in.left());
  uint64_t length = in.be(f.length_bytes);
  if (f.kind != Kind::scalar) return Head{f.kind, length};
  return Head{Kind::scalar, length + f.fixed_bytes};
}

}  // namespace

Result<MsgpackScan> scan_msgpack(std::string_view bytes, const MsgpackScanLimits& limits) {
  const size_t max_depth = std::min(limits.max_depth, kMaxScanDepth);
  // Objects still to read in each open container, innermost last.
  std::array<uint64_t, kMaxScanDepth> pending{};
  size_t depth = 0;
  MsgpackScan scan{1, 0};  // the top-level object
  if (scan.objects > limits.max_objects) return bad("more than " + std::to_string(limits.max_objects) + " objects");

  Cursor in(bytes);
  for (;;) {
    size_t at = in.offset();
    auto head = read_head(in);
    if (!head) return std::move(head).error();
    if (head->kind == Kind::scalar) {
      if (!in.skip(head->count)) return truncated(at, head->count, in.left());
    } else {
      if (depth == max_depth) return bad("nested deeper than " + std::to_string(max_depth) + " containers");
      if (head->count > limits.max_container_entries)
        return bad(std::string(kind_name(head->kind)) + " at offset " + std::to_string(at) + " has " +
                   std::to_string(head->count) + " entries, over the limit of " +
                   std::to_string(limits.max_container_entries));
      uint64_t children = head->kind == Kind::map ? 2 * head->count : head->count;
      // Each object takes at least one byte: a count beyond the bytes left
      // is a lie, whatever the limits allow.
      if (children > in.left())
        return bad(std::string(kind_name(head->kind)) + " at offset " + std::to_string(at) + " declares " +
                   std::to_string(head->count) + " entries in the " + std::to_string(in.left()) + " bytes left");
      if (children > limits.max_objects - scan.objects)
        return bad("more than " + std::to_string(limits.max_objects) + " objects");
      scan.objects += static_cast<size_t>(children);
      scan.max_depth_seen = std::max(scan.max_depth_seen, depth + 1);
      if (children > 0) {
        pending[depth++] = children;
        continue;
      }
    }
    // The object just read may complete its container, and that one its own.
    while (depth > 0 && --pending[depth - 1] == 0) --depth;
    if (depth == 0) break;
  }
  if (in.left() > 0) return bad(std::to_string(in.left()) + " trailing bytes after the message");
  return scan;
}

}  // namespace sandbox
