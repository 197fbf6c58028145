// DNS messages as the network relay needs them: the guest's query (bytes
// the guest controls: parsed strictly and bounded), the answers the daemon
// writes back, and the upstream resolver's response to its own query.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sandbox::daemon::dns {

inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeAAAA = 28;
inline constexpr uint16_t kClassIN = 1;
inline constexpr uint8_t kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3, kNotImp = 4, kRefused = 5;
// Addresses taken from one response: far more than any real name has.
inline constexpr size_t kMaxAddresses = 32;

struct Query {
  uint16_t id = 0;
  bool recursion_desired = false;
  std::string name;  // as sent, dots between labels, no trailing dot
  uint16_t qtype = 0;
  uint16_t qclass = 0;
};

// One standard query with one question; nullopt for anything else.
std::optional<Query> parse_query(std::string_view message);

// The answer to `q`: rcode, and for A/AAAA the addresses (4 or 16 bytes each).
std::string build_answer(const Query& q, uint8_t rcode, const std::vector<std::string>& addresses = {},
                         uint32_t ttl = 60);
// A query the daemon sends upstream.
std::string build_query(uint16_t id, std::string_view name, uint16_t qtype);
// Addresses of type `qtype` in the answer section of the response to query `id`.
std::optional<std::vector<std::string>> parse_response(std::string_view message, uint16_t id, uint16_t qtype);

}  // namespace sandbox::daemon::dns
