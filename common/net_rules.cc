#include "common/net_rules.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include <sandbox/limits.h>

namespace sandbox {
namespace {

Error invalid(std::string what) { return Error::make(ErrorCode::invalid_argument, std::move(what)); }

bool is_ip_literal(std::string_view s) {
  std::string z(s);
  if (!z.empty() && z.front() == '[' && z.back() == ']') z = z.substr(1, z.size() - 2);
  unsigned char buf[16];
  return ::inet_pton(AF_INET, z.c_str(), buf) == 1 || ::inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

}  // namespace

std::optional<std::string> normalize_host_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > limits::kMaxDomainBytes || is_ip_literal(name)) return std::nullopt;
  std::string out;
  out.reserve(name.size());
  size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return std::nullopt;
      label = 0;
      out.push_back('.');
      continue;
    }
    char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    // Underscore appears in real service names (_dmarc, SRV owners).
    if (!((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '-' || l == '_')) return std::nullopt;
    if (++label > 63) return std::nullopt;
    out.push_back(l);
  }
  if (label == 0) return std::nullopt;
  // All-numeric last label: an address in disguise (1.2.3, 0x7f.1).
  auto last = out.substr(out.rfind('.') == std::string::npos ? 0 : out.rfind('.') + 1);
  if (std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  return out;
}

Result<DomainRule> parse_domain_rule(std::string_view entry) {
  std::string shown(entry.substr(0, 80));
  DomainRule rule;
  std::string_view host = entry;
  // An IPv6 literal has colons of its own; refuse it before looking for a port.
  if (entry.find('[') != std::string_view::npos || std::count(entry.begin(), entry.end(), ':') > 1)
    return invalid("allowed domain '" + shown + "' is an IP address; name a domain");
  if (auto colon = entry.rfind(':'); colon != std::string_view::npos) {
    host = entry.substr(0, colon);
    auto p = entry.substr(colon + 1);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec != std::errc() || end != p.data() + p.size() || v == 0 || v > 65535)
      return invalid("allowed domain '" + shown + "' has an invalid port");
    rule.port = static_cast<uint16_t>(v);
  }
  if (host.starts_with("*.")) {
    rule.wildcard = true;
    host.remove_prefix(2);
  }
  if (is_ip_literal(host)) return invalid("allowed domain '" + shown + "' is an IP address; name a domain");
  auto name = normalize_host_name(host);
  if (!name) return invalid("allowed domain '" + shown + "' is not a valid domain name");
  // "*.com" would admit a whole top-level domain.
  if (rule.wildcard && name->find('.') == std::string::npos)
    return invalid("allowed domain '" + shown + "': a wildcard needs at least two labels after '*.'");
  rule.name = std::move(*name);
  return rule;
}

Result<std::vector<DomainRule>> parse_domain_rules(const std::vector<std::string>& entries) {
  if (entries.size() > limits::kMaxAllowedDomains)
    return invalid(std::to_string(entries.size()) + " allowed domains; at most " +
                   std::to_string(limits::kMaxAllowedDomains));
  std::vector<DomainRule> rules;
  for (const auto& e : entries) {
    auto r = parse_domain_rule(e);
    if (!r) return std::move(r).error();
    if (std::find(rules.begin(), rules.end(), *r) == rules.end()) rules.push_back(std::move(*r));
  }
  return rules;
}

std::string to_string(const DomainRule& rule) {
  return (rule.wildcard ? "*." : "") + rule.name + (rule.port ? ":" + std::to_string(rule.port) : "");
}

bool rule_admits(const DomainRule& rule, std::string_view name, uint16_t port) {
  bool port_ok = rule.port ? port == rule.port : (port == 80 || port == 443);
  return port_ok && rules_name({rule}, name);
}

bool rules_admit(const std::vector<DomainRule>& rules, std::string_view name, uint16_t port) {
  return std::any_of(rules.begin(), rules.end(), [&](const DomainRule& r) { return rule_admits(r, name, port); });
}

bool rules_name(const std::vector<DomainRule>& rules, std::string_view name) {
  for (const auto& r : rules) {
    if (!r.wildcard) {
      if (name == r.name) return true;
    } else if (name.size() > r.name.size() + 1 && name.ends_with(r.name) &&
               name[name.size() - r.name.size() - 1] == '.') {
      return true;  // a subdomain; the suffix itself only if listed on its own
    }
  }
  return false;
}

std::vector<uint16_t> rule_ports(const std::vector<DomainRule>& rules) {
  std::vector<uint16_t> ports = {80, 443};
  for (const auto& r : rules)
    if (r.port && std::find(ports.begin(), ports.end(), r.port) == ports.end()) ports.push_back(r.port);
  std::sort(ports.begin(), ports.end());
  return ports;
}

Result<NetPolicy> make_policy(const NetworkRequest& request) {
  if (auto v = validate_network(request); !v) return std::move(v).error();
  auto rules = parse_domain_rules(request.allowed_domains);
  if (!rules) return std::move(rules).error();
  return NetPolicy{std::move(*rules), request.expose_ports};
}

Result<void> validate_network(const NetworkRequest& request) {
  if (auto r = parse_domain_rules(request.allowed_domains); !r) return std::move(r).error();
  if (request.expose_ports.size() > limits::kMaxExposedPorts)
    return invalid(std::to_string(request.expose_ports.size()) + " exposed ports; at most " +
                   std::to_string(limits::kMaxExposedPorts));
  for (size_t i = 0; i < request.expose_ports.size(); ++i) {
    const auto& p = request.expose_ports[i];
    if (p.internal == 0 || p.internal > 65535)
      return invalid("exposed guest port " + std::to_string(p.internal) + " is outside 1-65535");
    // Host ports below 1024 are privileged, and taking one is an operator's call.
    if (p.unix_socket && p.external != 0)
      return invalid("guest port " + std::to_string(p.internal) + " is exposed as a Unix socket and a TCP port");
    if (p.external != 0 && (p.external < 1024 || p.external > 65535))
      return invalid("exposed host port " + std::to_string(p.external) + " is outside 1024-65535 (0 picks one)");
    for (size_t j = 0; j < i; ++j) {
      if (request.expose_ports[j].internal == p.internal)
        return invalid("guest port " + std::to_string(p.internal) + " is exposed twice");
      if (p.external && request.expose_ports[j].external == p.external)
        return invalid("host port " + std::to_string(p.external) + " is used twice");
    }
  }
  return ok();
}

}  // namespace sandbox
