#include "common/sysinfo.h"

#include <fstream>
#include <string>

namespace sandbox {

uint64_t meminfo_kb(std::string_view key) {
  std::ifstream meminfo("/proc/meminfo");
  std::string name;
  std::string wanted = std::string(key) + ":";
  while (meminfo >> name) {
    if (name == wanted) {
      uint64_t kb = 0;
      meminfo >> kb;
      return kb;
    }
    meminfo.ignore(256, '\n');
  }
  return 0;
}

}  // namespace sandbox
