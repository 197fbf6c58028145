// sandbox-bench --network: one connection through the network policy path
// (guest relay, virtio-serial channel, the daemon's checks and dial) next
// to the same transfer made on the host directly, both against a server on
// loopback.
#pragma once

#include <string>

namespace sandbox::bench {

struct NetOptions {
  std::string bin_dir;  // where sandboxd is
  std::string images;
  int samples = 15;  // connect latency samples
  int megabytes = 50;  // the download
};

int run_network(const NetOptions& options);

}  // namespace sandbox::bench
