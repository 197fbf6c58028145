// A snapshot template's description from the nodes' shared store
// (daemon/snapshot_description.cc): any bytes. What parses is within the
// bounds, and formats back to a text that parses to the same description.
#include <cstdint>
#include <string_view>

#include <sandbox/limits.h>

#include "daemon/snapshot_description.h"
#include "fuzz/require.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::fuzz::require;

namespace {

bool same(const SnapshotFile& a, const SnapshotFile& b) {
  return a.bytes == b.bytes && a.sha256 == b.sha256 && a.encoding == b.encoding && a.stored_bytes == b.stored_bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto d = parse_snapshot_description(bytes);
  if (!d) {
    require(d.error().code == ErrorCode::image_corrupt, "a refusal other than image_corrupt");
    return 0;
  }
  require(d->memory_mb >= 1 && d->memory_mb <= limits::kMaxMemoryMb, "memory out of bounds");
  require(d->ram.bytes == uint64_t{d->memory_mb} << 20, "a RAM file of another size than the memory");
  require(d->state.sha256.size() == 64 && d->ram.sha256.size() == 64, "a hash of the wrong length");
  require(d->key.size() <= kMaxSnapshotTokenBytes && d->layer.size() <= kMaxSnapshotTokenBytes, "a token too long");
  auto again = parse_snapshot_description(format_snapshot_description(*d));
  require(again.ok() && again->key == d->key && again->fingerprint == d->fingerprint &&
              again->language == d->language && again->memory_mb == d->memory_mb && again->layer == d->layer &&
              same(again->state, d->state) && same(again->ram, d->ram),
          "a description that does not survive formatting");
  return 0;
}
