// Guest system bring-up done by the agent as PID 1: devices, modules, the
// read-only root, writable tmpfs areas, and the virtio port to the host.
#pragma once

#include <string>
#include <string_view>

#include "common/protocol.h"
#include <sandbox/result.h>
#include "common/unique_fd.h"

namespace sandbox::agent {

// The unprivileged identity user code runs as (created in the root image).
inline constexpr uid_t kUserUid = 1000;
inline constexpr gid_t kUserGid = 1000;
inline constexpr std::string_view kUserHome = "/home/sandbox";
inline constexpr std::string_view kRootDevice = "/dev/vda";

// Memory kept back from user code for the kernel and the agent.
inline constexpr uint64_t kAgentReserveKb = 24 << 10;

// Mounts, loads modules and switches to the root image.
Result<void> setup_system();
// After the host channel is open: kernel knobs, read-only /proc/sys and
// /sys, and a minimal /dev in place of devtmpfs.
Result<void> lock_down();
// The cgroup that will hold every exec's process tree.
Result<void> setup_exec_cgroup(const std::string& tree);
// Path of the device node of the host channel, once it exists.
Result<std::string> find_agent_port(long timeout_ms);
std::string kernel_release();
// Mixes host-provided bytes into the kernel RNG and forces a reseed.
Result<void> reseed(std::string_view seed);
[[noreturn]] void power_off();

}  // namespace sandbox::agent
