// scan_msgpack on arbitrary bytes, checked against msgpack itself: whatever
// the scan accepts, msgpack::unpack must accept whole with the same counts,
// and on short inputs the two must agree on what is well-formed at all.
#include <msgpack.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include "common/msgpack_scan.h"
#include "fuzz/require.h"

namespace {

using sandbox::MsgpackScanLimits;
using sandbox::fuzz::require;

// What a control frame may hold: far above any real message.
constexpr MsgpackScanLimits kFrameLimits{20000, 8, 4096};
constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();
// Well-formedness alone, up to the scanner's own depth.
constexpr MsgpackScanLimits kWellFormed{kNoLimit, sandbox::kMaxScanDepth, kNoLimit};
// msgpack allocates every declared container before reading it; capping
// counts at the input's size keeps that small without rejecting valid input.
constexpr size_t kMaxCompareBytes = 4096;

struct Shape {
  size_t objects = 0;
  size_t depth = 0;
};

void measure(const msgpack::object& o, size_t level, Shape* s) {
  ++s->objects;
  if (o.type == msgpack::type::ARRAY) {
    s->depth = std::max(s->depth, level + 1);
    for (uint32_t i = 0; i < o.via.array.size; ++i) measure(o.via.array.ptr[i], level + 1, s);
  } else if (o.type == msgpack::type::MAP) {
    s->depth = std::max(s->depth, level + 1);
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      measure(o.via.map.ptr[i].key, level + 1, s);
      measure(o.via.map.ptr[i].val, level + 1, s);
    }
  }
}

// The object msgpack reads from the whole input, if it reads one.
std::optional<msgpack::object_handle> unpack_whole(std::string_view input, const msgpack::unpack_limit& limit) {
  try {
    size_t off = 0;
    auto h = msgpack::unpack(input.data(), input.size(), off, nullptr, nullptr, limit);
    if (off == input.size()) return h;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  auto scan = sandbox::scan_msgpack(input, kFrameLimits);
  if (scan.ok()) {
    require(scan->objects <= kFrameLimits.max_objects && scan->max_depth_seen <= kFrameLimits.max_depth,
            "an accepted message is within the limits");
    msgpack::unpack_limit limit(kFrameLimits.max_container_entries, kFrameLimits.max_container_entries, size, size,
                                size, kFrameLimits.max_depth);
    auto h = unpack_whole(input, limit);
    require(h.has_value(), "msgpack reads what the scan accepts");
    Shape shape;
    measure(h->get(), 0, &shape);
    require(shape.objects == scan->objects, "the scan counts the objects msgpack reads");
    require(shape.depth == scan->max_depth_seen, "the scan measures the depth msgpack reads");
  }

  if (size <= kMaxCompareBytes) {
    bool well_formed = sandbox::scan_msgpack(input, kWellFormed).ok();
    require(!scan.ok() || well_formed, "wider limits accept what narrower ones do");
    msgpack::unpack_limit limit(size, size, size, size, size, sandbox::kMaxScanDepth);
    bool msgpack_reads = unpack_whole(input, limit).has_value();
    require(well_formed == msgpack_reads, "the scan and msgpack agree on what is well-formed");
  }
  return 0;
}
