// A libseccomp filter as a ready BPF program. Filters are compiled before
// any fork (compiling allocates; the child of a multi-threaded parent may
// not) and installed by spawn (common/process.cc) as the child's last step.
#pragma once

#include <linux/filter.h>
#include <seccomp.h>

#include <vector>

#include <sandbox/result.h>

namespace sandbox {

Result<std::vector<sock_filter>> export_seccomp_program(scmp_filter_ctx ctx);

}  // namespace sandbox
