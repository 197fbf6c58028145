// A bounded pre-scan of msgpack bytes from untrusted peers. msgpack's own
// unpack limits apply per container, so a frame of many small nested
// containers still makes it allocate a msgpack::object for every byte or two
// of input. This walk checks the shape of the whole message first, without
// allocating, so that only messages within the limits reach msgpack::unpack.
#pragma once

#include <cstddef>
#include <string_view>

#include <sandbox/result.h>

namespace sandbox {

// Nesting the scanner can follow at all: its stack is a fixed array of this
// many entries, far deeper than any message of the protocol.
inline constexpr size_t kMaxScanDepth = 64;

struct MsgpackScanLimits {
  // Every object counted once: containers, their elements, map keys and values.
  size_t max_objects = 0;
  // Containers nested inside each other: a scalar is 0, [1] is 1, {"a": [1]} is 2.
  // Capped at kMaxScanDepth.
  size_t max_depth = 0;
  // Elements of one array, or key/value pairs of one map.
  size_t max_container_entries = 0;
};

struct MsgpackScan {
  size_t objects = 0;
  size_t max_depth_seen = 0;
};

// Checks that `bytes` holds exactly one complete msgpack object within the
// limits, with nothing after it. Rejections are invalid_argument errors that
// say what was exceeded or where the bytes stop making sense. Work is linear
// in the input; memory is constant.
Result<MsgpackScan> scan_msgpack(std::string_view bytes, const MsgpackScanLimits& limits);

}  // namespace sandbox
