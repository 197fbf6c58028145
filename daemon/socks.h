// A SOCKS5 client's greeting and CONNECT request (RFC 1928), read from the
// first bytes a guest sends to its SOCKS port. The bytes are the guest's:
// each message is at most a few hundred bytes, parsed strictly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sandbox::daemon::socks {

enum class Verdict { need_more, bad, ok };

inline constexpr uint8_t kVersion = 5;
inline constexpr uint8_t kNoAuthentication = 0x00;
inline constexpr uint8_t kNoAcceptableMethod = 0xff;
inline constexpr uint8_t kConnect = 1;

// Reply codes.
inline constexpr uint8_t kSucceeded = 0;
inline constexpr uint8_t kGeneralFailure = 1;
inline constexpr uint8_t kNotAllowed = 2;
inline constexpr uint8_t kHostUnreachable = 4;
inline constexpr uint8_t kCommandNotSupported = 7;

struct Greeting {
  Verdict verdict = Verdict::need_more;
  size_t length = 0;     // bytes it took
  bool no_auth = false;  // offers "no authentication", the only method served
};
Greeting parse_greeting(std::string_view bytes);

struct Request {
  Verdict verdict = Verdict::need_more;
  size_t length = 0;
  uint8_t command = 0;
  std::string name;     // a domain-name target, as sent (not yet checked)
  std::string address;  // or an address: 4 or 16 raw bytes
  uint16_t port = 0;
};
Request parse_request(std::string_view bytes);

// A reply to a request: the code, and an unspecified bound address.
std::string reply(uint8_t code);

}  // namespace sandbox::daemon::socks
