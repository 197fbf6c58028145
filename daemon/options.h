// Every option of the daemon's parts, built from the configuration in one
// place: the defaults live in Config (config.h) and nowhere else.
#pragma once

#include "daemon/config.h"
#include "daemon/control_socket.h"
#include "daemon/manager.h"
#include "daemon/service.h"

namespace sandbox::daemon {

struct DaemonOptions {
  ManagerOptions manager;
  ServiceOptions service;
  ControlLimits control;
};

// What configuration alone does not say.
struct RuntimeFacts {
  Accel accel = Accel::tcg;  // resolved
  std::string accel_reason;
  std::string host_limits;
  uid_t daemon_uid = 0;
  std::optional<gid_t> socket_gid;
  uint64_t host_memory_kb = 0;
  long cpus = 1;
  ImagesInfo images;  // as verified by load_images
};

DaemonOptions options_from(const Config& config, const RuntimeFacts& facts);

// The default pool refill concurrency is one per CPU up to this: a large
// host's refills should not take more CPUs at once than a burst needs.
inline constexpr long kMaxDefaultRefills = 16;

// As many VMs as three quarters of host memory holds, at the pool's size
// plus QEMU's own overhead, and no more than four per CPU under TCG (16
// under KVM): a VM that gets no CPU misses its boot deadline.
uint32_t default_max_vms(uint64_t host_memory_kb, long cpus, uint32_t vm_mb, Accel accel);

}  // namespace sandbox::daemon
