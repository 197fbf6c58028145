// The network channel's frames from the guest (common/net_frame.cc): a
// byte stream fed in two pieces, and every structured payload decoder on
// each frame. Frames are bounded; decoders accept only their exact sizes.
#include <cstdint>
#include <string_view>

#include "common/net_frame.h"
#include "fuzz/require.h"

using namespace sandbox;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  net::FrameReader reader;
  size_t cut = size ? data[0] % (size + 1) : 0;
  reader.feed(bytes.substr(0, cut));
  size_t frames = 0;
  bool fed = false;
  for (;;) {
    auto f = reader.next();
    if (!f) {
      if (fed) break;
      reader.feed(bytes.substr(cut));
      fed = true;
      continue;
    }
    if (!*f) break;
    ++frames;
    const auto& fr = **f;
    require(fr.payload.size() <= net::kMaxNetPayload, "a payload past the bound");
    if (auto o = net::decode_open(fr.payload)) require(o->address.size() == (o->family == 4 ? 4u : 16u), "open address size");
    if (auto p = net::decode_policy(fr.payload)) require(p->ports.size() <= net::kMaxPolicyPorts, "policy ports past the bound");
    (void)net::decode_u32(fr.payload);
  }
  require(frames * net::kNetHeaderBytes <= size, "more frames than bytes");
  return 0;
}
