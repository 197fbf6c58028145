// The server name in a TLS ClientHello, read from the first bytes a guest
// sends on a TLS port. The bytes are the guest's: parsed strictly, bounded
// to one TLS record.
#pragma once

#include <string>
#include <string_view>

namespace sandbox::daemon::tls {

// One record holds any real ClientHello (post-quantum key shares included).
inline constexpr size_t kMaxHelloBytes = 5 + (16 << 10);

enum class Verdict { need_more, not_tls, no_sni, sni };

struct Hello {
  Verdict verdict = Verdict::need_more;
  std::string server_name;  // as sent (verdict sni)
  bool ech = false;         // an encrypted_client_hello extension (the outer name is what we check)
};

Hello parse_client_hello(std::string_view bytes);

}  // namespace sandbox::daemon::tls
