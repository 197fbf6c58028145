// Host-side limits for every QEMU: one cgroup v2 directory per VM under the
// daemon's delegated subtree (systemd's Delegate=yes gives the service its
// own cgroup to manage).
//
//   <base>/daemon/     the daemon itself: a cgroup that passes controllers
//                      to its children may hold no processes of its own
//   <base>/vms/<name>  one per QEMU, created before QEMU starts (it is
//                      cloned straight into it) and removed after it is reaped
//
// Everything goes through the files of a cgroup2 tree, so tests point `root`
// at a fake tree in a temp directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sandbox/result.h>
#include "common/unique_fd.h"

namespace sandbox::daemon {

struct CgroupLimits {
  uint64_t memory_max = 0;   // bytes; memory.max
  uint64_t memory_high = 0;  // bytes; memory.high (reclaim pressure before the hard limit)
  uint32_t pids_max = 0;     // pids.max: QEMU's threads
  uint32_t cpu_percent = 0;  // cpu.max as a share of one CPU; 0 is unlimited
};

struct CgroupUsage {
  std::optional<uint64_t> memory_peak_bytes;  // memory.peak
  std::optional<uint64_t> cpu_usec;           // cpu.stat usage_usec
};

class Cgroups {
 public:
  // The controllers whose limits sandboxd sets.
  static constexpr const char* kControllers[] = {"memory", "pids", "cpu"};

  struct Options {
    // cgroup2 mount point; empty: found in /proc/self/mountinfo.
    std::string root;
    // Path of the daemon's subtree below root; empty: the daemon's own
    // cgroup from /proc/self/cgroup (the root cgroup gets "/sandboxd").
    std::string base;
    // Move the calling process into <base>/daemon (off in tests).
    bool move_self = true;
  };

  // Finds the tree, creates the layout and enables the controllers it can.
  // Never fails: what is missing is recorded and reported by status().
  static Cgroups open(const Options& options);

  // Per-VM cgroups are made (at least one controller is usable).
  bool enabled() const { return enabled_; }
  // Controllers sandboxd wants that the subtree does not offer.
  const std::vector<std::string>& missing() const { return missing_; }
  // One line for logs and `sandboxctl status`.
  const std::string& status() const { return status_; }
  const std::string& base_dir() const { return base_dir_; }

  // Creates <base>/vms/<name> with the limits the available controllers
  // allow; returns an O_DIRECTORY descriptor for CLONE_INTO_CGROUP.
  Result<unique_fd> create(const std::string& name, const CgroupLimits& limits) const;
  CgroupUsage usage(const std::string& name) const;
  // Kills whatever is left in the cgroup and removes it, waiting for the
  // killed to leave (up to a second).
  void remove(const std::string& name) const;
  // One try: true once the cgroup is gone (or cannot be removed at all),
  // false while tasks are still leaving it (killed now; try again shortly).
  bool try_remove(const std::string& name) const;
  // Removes every VM cgroup an earlier daemon left; returns their names.
  std::vector<std::string> recover() const;

 private:
  std::string vm_dir(const std::string& name) const { return base_dir_ + "/vms/" + name; }

  bool enabled_ = false;
  std::vector<std::string> available_;
  std::vector<std::string> missing_;
  std::string status_;
  std::string base_dir_;
};

// Parses "0::/path" from a /proc/PID/cgroup text; nullopt without one.
std::optional<std::string> cgroup2_path_of(const std::string& proc_cgroup);
// The cgroup2 mount point from a /proc/self/mountinfo text.
std::optional<std::string> cgroup2_mount(const std::string& mountinfo);

}  // namespace sandbox::daemon
