// DNS SRV answers the router's discovery reads from the network
// (gateway/srv.cc): any bytes, as the answer to the id in their first two.
// Records and addresses stay within their bounds, targets are host names.
#include <cstdint>
#include <string_view>

#include "fuzz/require.h"
#include "gateway/srv.h"

using namespace sandbox::gateway;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (size < 2) return 0;
  auto a = dns::parse_answer(bytes, static_cast<uint16_t>((data[0] << 8) | data[1]));
  if (!a) return 0;
  require(a->records.size() <= dns::kMaxRecords, "more SRV records than the bound");
  for (const auto& r : a->records) {
    require(!r.target.empty() && r.target.size() <= 255, "a target no DNS name can be");
    require(r.target.find_first_of("/:@ ?#") == std::string::npos, "a target that is no host name");
    require(r.port != 0, "a record with port 0");
  }
  for (const auto& [name, list] : a->addresses) require(list.size() <= 8, "more addresses per name than the bound");
  return 0;
}
