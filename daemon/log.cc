#include "daemon/log.h"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace sandbox::daemon {
namespace {

LogLevel g_level = LogLevel::info;

}  // namespace

void set_log_level(LogLevel level) { g_level = level; }

void log(LogLevel level, std::string_view message) {
  if (level < g_level) return;
  // "<N>" prefixes are read by journald as syslog priorities.
  static constexpr const char* kPrefix[] = {"<7>debug", "<6>info", "<4>warning", "<3>error"};
  std::string line = std::string(kPrefix[static_cast<int>(level)]) + ": ";
  line.append(message);
  line.push_back('\n');
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace sandbox::daemon
