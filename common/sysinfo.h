// Facts about the machine this runs on (host for the daemon, guest for the
// agent).
#pragma once

#include <cstdint>
#include <string_view>

namespace sandbox {

// A /proc/meminfo field in kB ("MemTotal", ...), 0 when absent.
uint64_t meminfo_kb(std::string_view key);

}  // namespace sandbox
