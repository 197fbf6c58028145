#include "daemon/net_ranges.h"

#include <arpa/inet.h>

#include <charconv>

namespace sandbox::daemon {
namespace {

struct Special {
  const char* cidr;
  const char* why;
};

// IANA's special-purpose registries, plus the IPv6 forms that embed an
// IPv4 address (a way to reach a private IPv4 host through an IPv6 name).
constexpr Special kSpecial[] = {
    {"0.0.0.0/8", "this network"},        {"10.0.0.0/8", "private"},
    {"100.64.0.0/10", "shared (CGNAT)"},  {"127.0.0.0/8", "loopback"},
    {"169.254.0.0/16", "link-local"},     {"172.16.0.0/12", "private"},
    {"192.0.0.0/24", "IETF protocol"},    {"192.0.2.0/24", "documentation"},
    {"192.88.99.0/24", "6to4 relay"},     {"192.168.0.0/16", "private"},
    {"198.18.0.0/15", "benchmarking"},    {"198.51.100.0/24", "documentation"},
    {"203.0.113.0/24", "documentation"},  {"224.0.0.0/4", "multicast"},
    {"240.0.0.0/4", "reserved"},          {"::/128", "unspecified"},
    {"::1/128", "loopback"},              {"::ffff:0:0/96", "IPv4-mapped"},
    {"::/96", "IPv4-compatible"},         {"64:ff9b::/96", "NAT64"},
    {"64:ff9b:1::/48", "NAT64"},          {"100::/64", "discard"},
    {"2001::/23", "IETF protocol"},       {"2001:db8::/32", "documentation"},
    {"2002::/16", "6to4"},                {"fc00::/7", "unique local"},
    {"fe80::/10", "link-local"},          {"fec0::/10", "site-local"},
    {"ff00::/8", "multicast"},
};

}  // namespace

bool Cidr::contains(std::string_view a) const {
  if (a.size() != prefix.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    int bits_here = static_cast<int>(bits) - static_cast<int>(i * 8);
    if (bits_here <= 0) return true;
    auto mask = static_cast<unsigned char>(bits_here >= 8 ? 0xff : (0xff << (8 - bits_here)) & 0xff);
    if ((static_cast<unsigned char>(a[i]) & mask) != (static_cast<unsigned char>(prefix[i]) & mask)) return false;
  }
  return true;
}

std::optional<std::string> parse_address(std::string_view text) {
  std::string z(text);
  unsigned char buf[16];
  if (::inet_pton(AF_INET, z.c_str(), buf) == 1) return std::string(reinterpret_cast<char*>(buf), 4);
  if (::inet_pton(AF_INET6, z.c_str(), buf) == 1) return std::string(reinterpret_cast<char*>(buf), 16);
  return std::nullopt;
}

std::optional<Cidr> parse_cidr(std::string_view text) {
  auto slash = text.find('/');
  auto addr = parse_address(text.substr(0, slash));
  if (!addr) return std::nullopt;
  unsigned bits = static_cast<unsigned>(addr->size() * 8);
  if (slash != std::string_view::npos) {
    auto b = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(b.data(), b.data() + b.size(), bits);
    if (ec != std::errc() || end != b.data() + b.size() || b.empty() || bits > addr->size() * 8) return std::nullopt;
  }
  return Cidr{std::move(*addr), static_cast<uint8_t>(bits)};
}

std::string address_text(std::string_view a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.size() == 4) ::inet_ntop(AF_INET, a.data(), buf, sizeof buf);
  else if (a.size() == 16) ::inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  return buf;
}

std::string to_string(const Cidr& c) { return address_text(c.prefix) + "/" + std::to_string(c.bits); }

std::optional<std::string_view> special_range(std::string_view address) {
  static const std::vector<std::pair<Cidr, const char*>> ranges = [] {
    std::vector<std::pair<Cidr, const char*>> out;
    for (const auto& s : kSpecial) out.emplace_back(*parse_cidr(s.cidr), s.why);
    return out;
  }();
  for (const auto& [cidr, why] : ranges)
    if (cidr.contains(address)) return why;
  return std::nullopt;
}

bool address_refused(std::string_view address, const std::vector<Cidr>& allowed) {
  if (!special_range(address)) return false;
  for (const auto& c : allowed)
    if (c.contains(address)) return false;
  return true;
}

}  // namespace sandbox::daemon
