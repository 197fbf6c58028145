// Daemon logging: one line per event, "level: message", to stderr (which
// journald captures under systemd). Only main-level code and the transports
// log; library code returns errors instead. Messages often carry text a
// client or a guest chose: control characters are escaped here, once, so
// no one can forge a log line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace sandbox::daemon {

enum class LogLevel { debug, info, warning, error };

void set_log_level(LogLevel level);
void log(LogLevel level, std::string_view message);
// `text` with control characters as \xNN and at most `max` bytes.
std::string log_escape(std::string_view text, size_t max = 4096);

inline void log_info(std::string_view m) { log(LogLevel::info, m); }
inline void log_warning(std::string_view m) { log(LogLevel::warning, m); }
inline void log_error(std::string_view m) { log(LogLevel::error, m); }
inline void log_debug(std::string_view m) { log(LogLevel::debug, m); }

// At most `burst` lines per `window`; the rest are counted and reported
// with the next line that gets through. For warnings a client can trigger
// at will (refused connections, say).
class LogRateLimit {
 public:
  LogRateLimit(uint32_t burst, std::chrono::milliseconds window) : burst_(burst), window_(window) {}
  void log(LogLevel level, std::string_view message);

 private:
  uint32_t burst_;
  std::chrono::milliseconds window_;
  std::chrono::steady_clock::time_point window_start_{};
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace sandbox::daemon
