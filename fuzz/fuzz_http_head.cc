// An HTTP request head from the guest (daemon/http_head.cc): any bytes, and
// prefixes of them. A verdict other than need_more must not change as more
// bytes arrive; a host is only given with the host verdict.
#include <cstdint>
#include <string_view>

#include "daemon/http_head.h"
#include "fuzz/require.h"

using namespace sandbox::daemon;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto full = http::parse_request_head(bytes);
  require(full.verdict == http::Verdict::host || full.verdict == http::Verdict::not_http ||
              full.verdict == http::Verdict::no_host || full.verdict == http::Verdict::need_more,
          "an unknown verdict");
  if (full.verdict == http::Verdict::host) require(!full.host.empty(), "a host verdict without a host");
  for (size_t cut = 0; cut < size; cut += 1 + size / 16) {
    auto part = http::parse_request_head(bytes.substr(0, cut));
    if (part.verdict != http::Verdict::need_more && part.verdict != http::Verdict::not_http)
      require(part.verdict == full.verdict && part.host == full.host, "a verdict changed with more bytes");
  }
  return 0;
}
