#include "daemon/log.h"

#include <unistd.h>

#include <cstdio>

namespace sandbox::daemon {
namespace {

LogLevel g_level = LogLevel::info;

}  // namespace

void set_log_level(LogLevel level) { g_level = level; }

std::string log_escape(std::string_view text, size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max));
  for (unsigned char c : text) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

void log(LogLevel level, std::string_view message) {
  if (level < g_level) return;
  // "<N>" prefixes are read by journald as syslog priorities.
  static constexpr const char* kPrefix[] = {"<7>debug", "<6>info", "<4>warning", "<3>error"};
  std::string line = std::string(kPrefix[static_cast<int>(level)]) + ": " + log_escape(message) + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

void LogRateLimit::log(LogLevel level, std::string_view message) {
  auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= window_) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (++in_window_ > burst_) {
    ++suppressed_;
    return;
  }
  if (suppressed_ == 0) return daemon::log(level, message);
  daemon::log(level, std::string(message) + " (" + std::to_string(suppressed_) + " similar lines suppressed)");
  suppressed_ = 0;
}

}  // namespace sandbox::daemon
