// A TLS ClientHello from the guest (daemon/tls_hello.cc): any bytes, and
// every prefix of them. A verdict other than need_more must not change
// as more bytes arrive, and a server name is only ever given with sni.
#include <cstdint>
#include <string_view>

#include "daemon/tls_hello.h"
#include "fuzz/require.h"

using namespace sandbox::daemon;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto full = tls::parse_client_hello(bytes);
  require(full.verdict == tls::Verdict::sni || full.server_name.empty(), "a name without the sni verdict");
  require(full.server_name.size() <= bytes.size(), "a name longer than the input");
  for (size_t cut = 0; cut < size; cut += 1 + size / 16) {
    auto part = tls::parse_client_hello(bytes.substr(0, cut));
    if (part.verdict != tls::Verdict::need_more)
      require(part.verdict == full.verdict && part.server_name == full.server_name, "a verdict changed with more bytes");
  }
  return 0;
}
