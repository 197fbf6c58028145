// The seccomp allowlist each QEMU starts under, kept as data: every system
// call QEMU may make, with the reason it needs it. The filter is installed by
// the daemon just before exec, so it also covers QEMU's start-up, before
// QEMU's own `-sandbox` filter (a denylist) is added on top of it.
#pragma once

#include <linux/filter.h>

#include <span>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox::daemon {

struct SyscallRule {
  std::string_view name;
  std::string_view reason;
  // clone: only with CLONE_THREAD, i.e. threads and never a new process.
  bool threads_only = false;
};

std::span<const SyscallRule> qemu_syscall_allowlist();

// System calls refused with ENOSYS rather than EPERM, so that glibc falls
// back to a call the allowlist can inspect (clone3 passes its flags in
// memory, out of a filter's reach; glibc then uses clone).
std::span<const std::string_view> qemu_syscalls_enosys();

// The allowlist compiled for the native architecture. A call not on it fails
// with EPERM; a call from another architecture (int 0x80, x32) kills QEMU.
Result<std::vector<sock_filter>> build_qemu_seccomp();

}  // namespace sandbox::daemon
