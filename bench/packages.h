// sandbox-bench --packages: what a package layer costs. One cold build
// (reported apart), then runs with the cached layer next to runs without
// packages on the same path (both restored from their snapshots), against
// a package index on loopback: the source tree's test index
// (tests/integration/make_index.py, served by net_hosts.py).
#pragma once

#include <string>

namespace sandbox::bench {

struct PackagesOptions {
  std::string bin_dir;  // where sandboxd is
  std::string images;
  int samples = 15;
};

int run_packages(const PackagesOptions& options);

}  // namespace sandbox::bench
