// Start-up recovery: what a daemon that died without cleaning up (kill -9,
// a crash, power loss) left behind is found under its state directory and
// its cgroup subtree, and removed before the new daemon serves anyone.
#pragma once

#include <string>
#include <vector>

#include "daemon/cgroups.h"

namespace sandbox::daemon {

struct RecoveryReport {
  std::vector<std::string> killed;   // QEMU processes still running, "name (pid N)"
  std::vector<std::string> records;  // VM records removed
  std::vector<std::string> cgroups;  // VM cgroups removed
};

// `records_dir` holds one file per VM the previous daemon started, with
// "pid start-time". A process is killed only if both still match (a reused
// pid is left alone); then its record and cgroup go.
RecoveryReport recover_leftovers(const std::string& records_dir, const Cgroups& cgroups);

}  // namespace sandbox::daemon
