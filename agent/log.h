// Agent diagnostics go to the console, which the daemon keeps for boot errors.
#pragma once

#include <cstdio>

namespace sandbox::agent {

template <class... Args>
void log(const char* fmt, Args... args) {
  std::fprintf(stderr, "sandbox-agent: ");
  std::fprintf(stderr, fmt, args...);
  std::fprintf(stderr, "\n");
}

}  // namespace sandbox::agent
