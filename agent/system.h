// Guest system bring-up done by the agent as PID 1: devices, modules, the
// read-only root, writable tmpfs areas, and the virtio port to the host.
#pragma once

#include <string>
#include <string_view>

#include "common/protocol.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace sandbox::agent {

// The unprivileged identity user code runs as (created in the root image).
inline constexpr uid_t kUserUid = 1000;
inline constexpr gid_t kUserGid = 1000;
inline constexpr std::string_view kUserHome = "/home/sandbox";
inline constexpr std::string_view kRootDevice = "/dev/vda";

// Mounts, loads modules and switches to the root image.
Result<void> setup_system();
// Path of the device node of the host channel, once it exists.
Result<std::string> find_agent_port(long timeout_ms);
std::string kernel_release();
[[noreturn]] void power_off();

}  // namespace sandbox::agent
