// Invariants the fuzz targets check beyond "no crash": a broken one aborts,
// which libFuzzer keeps as a crash with its input, after saying which.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace sandbox::fuzz {

inline void require(bool holds, const char* invariant) {
  if (holds) return;
  std::fprintf(stderr, "invariant broken: %s\n", invariant);
  std::abort();
}

}  // namespace sandbox::fuzz
