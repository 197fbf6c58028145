// A package layer's description from the nodes' shared store
// (daemon/layer_description.cc): any bytes. What parses is within the
// bounds, and formats back to a text that parses to the same description.
#include <cstdint>
#include <string_view>

#include <sandbox/limits.h>

#include "common/protocol.h"
#include "daemon/layer_description.h"
#include "fuzz/require.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto d = parse_layer_description("py-key", bytes);
  if (!d) {
    require(d.error().code == ErrorCode::image_corrupt, "a refusal other than image_corrupt");
    return 0;
  }
  require(d->sha256.size() == 64, "a hash of the wrong length");
  require(d->info.packages.size() <= limits::kMaxPackages, "too many packages");
  require(d->info.lock.size() <= proto::kMaxLockEntries, "too many lock entries");
  auto again = parse_layer_description("py-key", format_layer_description(*d));
  require(again.ok() && again->sha256 == d->sha256 && again->info.packages == d->info.packages &&
              again->info.lock == d->info.lock && again->info.bytes == d->info.bytes &&
              again->info.language == d->info.language,
          "a description that does not survive formatting");
  return 0;
}
