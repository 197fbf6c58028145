// Special-purpose address ranges the relay never dials (loopback, private,
// CGNAT, link-local and metadata, ULA, multicast, documentation, IPv4 in
// IPv6 forms...) unless the operator's config allows a range. Addresses
// are raw network-order bytes: 4 or 16 of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sandbox::daemon {

struct Cidr {
  std::string prefix;  // 4 or 16 bytes
  uint8_t bits = 0;
  bool contains(std::string_view address) const;
};

std::optional<Cidr> parse_cidr(std::string_view text);
std::string to_string(const Cidr& cidr);
// "93.184.216.34", "2001:db8::1".
std::string address_text(std::string_view address);
std::optional<std::string> parse_address(std::string_view text);

// Why the address is special ("loopback", "private"...), or nullopt.
std::optional<std::string_view> special_range(std::string_view address);
// Special and not allowed by `allowed`.
bool address_refused(std::string_view address, const std::vector<Cidr>& allowed);

}  // namespace sandbox::daemon
