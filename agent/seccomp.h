// The seccomp filter around user code: syscalls that only serve an escape
// or an attack on the guest kernel fail with EPERM (clone3 with ENOSYS so
// libc falls back to clone, whose namespace flags are checked).
#pragma once

#include <linux/filter.h>

#include <vector>

#include "common/result.h"

namespace sandbox::agent {

// Built once at start-up (it allocates); installed in each child.
Result<std::vector<sock_filter>> build_user_filter();
// Async-signal-safe: for the forked child, after no_new_privs.
bool install_filter(const std::vector<sock_filter>& program);

}  // namespace sandbox::agent
