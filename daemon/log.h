// Daemon logging: one line per event, "level message key=value...", to
// stderr (which journald captures under systemd). Only main-level code and
// the transports log; library code returns errors instead.
#pragma once

#include <string_view>

namespace sandbox::daemon {

enum class LogLevel { debug, info, warning, error };

void set_log_level(LogLevel level);
void log(LogLevel level, std::string_view message);

inline void log_info(std::string_view m) { log(LogLevel::info, m); }
inline void log_warning(std::string_view m) { log(LogLevel::warning, m); }
inline void log_error(std::string_view m) { log(LogLevel::error, m); }
inline void log_debug(std::string_view m) { log(LogLevel::debug, m); }

}  // namespace sandbox::daemon
