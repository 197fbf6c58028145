// sandbox-bench --soak: sustained mixed load on one private sandboxd.
#pragma once

#include <string>

namespace sandbox::bench {

struct SoakOptions {
  std::string bin_dir;  // where sandboxd is
  std::string images;
  int clients = 100;
  int seconds = 60;
};

// Runs the soak and prints its report; the process exit status.
int run_soak(const SoakOptions& options);

}  // namespace sandbox::bench
