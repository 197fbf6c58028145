// A SOCKS5 greeting and request from the guest (daemon/socks.cc): any bytes,
// and prefixes of them. A verdict other than need_more must not change as
// more bytes arrive, and an ok verdict never claims more bytes than given.
#include <cstdint>
#include <string_view>

#include "daemon/socks.h"
#include "fuzz/require.h"

using namespace sandbox::daemon;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto g = socks::parse_greeting(bytes);
  if (g.verdict == socks::Verdict::ok) require(g.length >= 3 && g.length <= size, "a greeting's length out of range");
  auto r = socks::parse_request(bytes);
  if (r.verdict == socks::Verdict::ok) {
    require(r.length <= size, "a request longer than its bytes");
    require(r.name.empty() != r.address.empty(), "a request with neither or both of name and address");
    require(r.address.empty() || r.address.size() == 4 || r.address.size() == 16, "an address of a wrong size");
  }
  for (size_t cut = 0; cut < size; cut += 1 + size / 16) {
    auto part = bytes.substr(0, cut);
    auto pg = socks::parse_greeting(part);
    if (pg.verdict != socks::Verdict::need_more)
      require(pg.verdict == g.verdict && pg.length == g.length && pg.no_auth == g.no_auth, "a greeting changed");
    auto pr = socks::parse_request(part);
    if (pr.verdict != socks::Verdict::need_more)
      require(pr.verdict == r.verdict && pr.length == r.length && pr.name == r.name && pr.port == r.port,
              "a request changed");
  }
  return 0;
}
