// proto::decode on arbitrary payloads: it must refuse or accept without a
// crash, leak or hang, and what it accepts must survive encode and decode
// again unchanged.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/protocol.h"
#include "fuzz/require.h"

using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = sandbox::proto::decode(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!decoded.ok()) {
    require(!decoded.error().message.empty(), "a refusal says why");
    return 0;
  }
  std::string encoded = sandbox::proto::encode(*decoded);
  auto again = sandbox::proto::decode(encoded);
  require(again.ok(), "an accepted message re-encodes to one that decodes");
  require(again->index() == decoded->index(), "a re-encoded message keeps its type");
  require(sandbox::proto::encode(*again) == encoded, "a re-encoded message keeps its fields");
  return 0;
}
