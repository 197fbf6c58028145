// The seccomp filter around user code: syscalls that only serve an escape
// or an attack on the guest kernel fail with EPERM, or ENOSYS where a
// program should fall back as on an older kernel (clone3, so libc falls
// back to clone, whose namespace flags are checked; io_uring).
#pragma once

#include <linux/filter.h>

#include <vector>

#include <sandbox/result.h>

namespace sandbox::agent {

// Built once at start-up (it allocates); installed in each child by spawn.
Result<std::vector<sock_filter>> build_user_filter();

}  // namespace sandbox::agent
