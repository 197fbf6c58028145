// Starting one QEMU, as a list of steps: its channels (agent, console,
// QMP), the descriptors it inherits (images, memory, channels), its cgroup,
// the confined spawn, and its recovery record. Vm (vm.h) drives what this
// starts.
#pragma once

#include <linux/filter.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/unique_fd.h"
#include "daemon/cgroups.h"
#include "daemon/fleet.h"
#include "daemon/net_relay.h"
#include "daemon/qemu_argv.h"
#include "daemon/recovery.h"

namespace sandbox::daemon {

// What every QEMU shares on the host side: the images (opened read-only by
// the daemon and inherited), the user it runs as, its seccomp program, its
// cgroup limits and where it is recorded for start-up recovery.
struct VmHost {
  int kernel_fd = -1, initrd_fd = -1, rootfs_fd = -1;
  // The package builder's root (-1: this host has none).
  int builder_fd = -1;
  std::optional<SpawnOptions::User> user;
  const std::vector<sock_filter>* seccomp = nullptr;
  const Cgroups* cgroups = nullptr;
  // memory.max is the guest's memory plus this (QEMU, its translation
  // cache, device buffers); memory.high sits a quarter of it lower.
  uint32_t memory_overhead_mb = 192;
  uint32_t pids_max = 128;
  uint32_t cpu_percent = 0;
  std::string records_dir;  // empty: no records
};

// The daemon-wide VM configuration: the command line's fixed part and the
// host side. Per VM, a VmLaunch adds its shape and snapshot.
struct VmConfig {
  VmSpec base;
  VmHost host;
  std::chrono::milliseconds boot_timeout{20'000};
  NetConfig net;
  // The operator's extra CA certificates (PEM), given to every booted guest.
  std::string extra_ca_pem;
  // The pids limit a run asks for by default (a pool VM's Python warm-up
  // sets it in the guest ahead of the run).
  uint32_t run_pids_max = 0;
};

// A started QEMU and the daemon's ends of its channels.
struct LaunchedQemu {
  Process process;
  unique_fd agent;    // the agent's virtio-serial port
  unique_fd net;      // the network channel's port (net_relay.h)
  unique_fd console;  // QEMU's stdout and stderr, the guest console
  unique_fd qmp;      // only for snapshots (restore or template)
  std::string name;   // of its cgroup and record
  bool has_cgroup = false;
  std::optional<VmRecord> record;
};

Result<LaunchedQemu> launch_qemu(const VmConfig& config, const VmLaunch& launch);

}  // namespace sandbox::daemon
