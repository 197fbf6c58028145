// DNS SRV look-ups for node discovery: the query the router sends and the
// parser of the answer (bytes from the network: strict and bounded; any
// malformed message is nullopt, never a crash). Nomad's and Consul's DNS
// and a Kubernetes headless Service all answer SRV with the targets'
// addresses in the additional section.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox::gateway::dns {

inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeAAAA = 28;
inline constexpr uint16_t kTypeSRV = 33;
inline constexpr uint16_t kClassIN = 1;
// Records taken from one answer: far more nodes than one name should list.
inline constexpr size_t kMaxRecords = 256;
// UDP answers past this are cut by the server (TC) anyway.
inline constexpr size_t kMaxMessage = 65535;

struct SrvRecord {
  uint16_t priority = 0;
  uint16_t weight = 0;
  uint16_t port = 0;
  std::string target;  // lower case, no trailing dot
};

struct SrvAnswer {
  uint8_t rcode = 0;
  bool truncated = false;
  std::vector<SrvRecord> records;
  // Addresses of names from A/AAAA records in the answer and additional
  // sections (text form), by lower-case name.
  std::map<std::string, std::vector<std::string>> addresses;
};

// A standard recursive query for `name`'s SRV records; nullopt for a name
// DNS cannot carry (a label over 63 bytes, the name over 253).
std::optional<std::string> build_query(uint16_t id, std::string_view name, uint16_t qtype = kTypeSRV);

// The answer to query `id`; nullopt when the message is not one.
std::optional<SrvAnswer> parse_answer(std::string_view message, uint16_t id);

// Asks `server` ("IP:PORT", IPv4 or [IPv6]) over UDP and waits at most
// `timeout`. Errors name the server.
Result<SrvAnswer> query_srv(const std::string& server, std::string_view name, std::chrono::milliseconds timeout);

}  // namespace sandbox::gateway::dns
