// The Host of a plain HTTP request, read from the first bytes a guest sends
// on port 80 (or a CONNECT's target). The bytes are the guest's: bounded to
// kMaxHeadBytes, strict about what a request head is.
#pragma once

#include <string>
#include <string_view>

namespace sandbox::daemon::http {

inline constexpr size_t kMaxHeadBytes = 16 << 10;

enum class Verdict { need_more, not_http, no_host, host };

struct Head {
  Verdict verdict = Verdict::need_more;
  std::string method;
  std::string host;  // without the port
  bool has_port = false;
  uint16_t port = 0;
};

Head parse_request_head(std::string_view bytes);

}  // namespace sandbox::daemon::http
