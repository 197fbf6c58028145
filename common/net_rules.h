// Egress allowlist entries and port mappings (SPEC F12, F13): their syntax,
// their checks, and how a name and port are matched against them. Shared by
// the daemon (authoritative) and libsandbox (early, clearer errors).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox {

// One allowlist entry: "example.org", "*.example.com" (subdomains only),
// optionally ":port" (default: 443 and 80).
struct DomainRule {
  std::string name;  // lower case, no trailing dot; for a wildcard the suffix
  bool wildcard = false;
  uint16_t port = 0;  // 0: the web ports 80 and 443
  bool operator==(const DomainRule&) const = default;
};

// A DNS name as the allowlist compares it: lower case, no trailing dot, or
// nullopt if it is not a valid host name (empty labels, labels over 63
// bytes, characters outside [a-z0-9-_], an IP literal).
std::optional<std::string> normalize_host_name(std::string_view name);

Result<DomainRule> parse_domain_rule(std::string_view entry);
Result<std::vector<DomainRule>> parse_domain_rules(const std::vector<std::string>& entries);
std::string to_string(const DomainRule& rule);

// Whether `name` (normalized) on `port` is admitted by `rule`.
bool rule_admits(const DomainRule& rule, std::string_view name, uint16_t port);
bool rules_admit(const std::vector<DomainRule>& rules, std::string_view name, uint16_t port);
// Whether any rule names `name` at all, on whatever port.
bool rules_name(const std::vector<DomainRule>& rules, std::string_view name);
// The TCP ports a policy listens on in the guest: 80, 443 and each rule's own.
std::vector<uint16_t> rule_ports(const std::vector<DomainRule>& rules);

// A VM's network policy: egress rules (empty: none) and ports to expose.
struct NetPolicy {
  std::vector<DomainRule> rules;
  std::vector<PortMapping> expose;
  uint32_t owner_uid = 0;  // whose Unix-socket ports they are
  bool empty() const { return rules.empty() && expose.empty(); }
};
Result<NetPolicy> make_policy(const NetworkRequest& request);

// Entry count, syntax and port mappings of a request (an empty allowlist
// with `network` set is the daemon's to judge: it knows its default list).
Result<void> validate_network(const NetworkRequest& request);

}  // namespace sandbox
