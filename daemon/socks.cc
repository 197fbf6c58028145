#include "daemon/socks.h"

namespace sandbox::daemon::socks {
namespace {

uint8_t byte(std::string_view b, size_t i) { return static_cast<uint8_t>(b[i]); }

}  // namespace

Greeting parse_greeting(std::string_view b) {
  Greeting g;
  if (b.empty()) return g;
  if (byte(b, 0) != kVersion) return {Verdict::bad};
  if (b.size() < 2) return g;
  size_t methods = byte(b, 1);
  if (methods == 0) return {Verdict::bad};
  if (b.size() < 2 + methods) return g;
  g.verdict = Verdict::ok;
  g.length = 2 + methods;
  for (size_t i = 0; i < methods; ++i)
    if (byte(b, 2 + i) == kNoAuthentication) g.no_auth = true;
  return g;
}

Request parse_request(std::string_view b) {
  Request r;
  if (b.empty()) return r;
  if (byte(b, 0) != kVersion) return {Verdict::bad};
  if (b.size() < 4) return r;
  if (byte(b, 2) != 0) return {Verdict::bad};
  size_t at = 4, target = 0;
  switch (byte(b, 3)) {
    case 1: target = 4; break;
    case 4: target = 16; break;
    case 3:
      if (b.size() < 5) return r;
      target = byte(b, 4);
      if (target == 0) return {Verdict::bad};
      at = 5;
      break;
    default: return {Verdict::bad};
  }
  if (b.size() < at + target + 2) return r;
  r.command = byte(b, 1);
  if (byte(b, 3) == 3)
    r.name.assign(b.substr(at, target));
  else
    r.address.assign(b.substr(at, target));
  r.port = static_cast<uint16_t>(byte(b, at + target) << 8 | byte(b, at + target + 1));
  r.length = at + target + 2;
  r.verdict = Verdict::ok;
  return r;
}

std::string reply(uint8_t code) { return std::string{5, static_cast<char>(code), 0, 1, 0, 0, 0, 0, 0, 0}; }

}  // namespace sandbox::daemon::socks
