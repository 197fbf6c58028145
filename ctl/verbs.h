// sandboxctl verbs: one function each, dispatched from main's table.
#pragma once

#include <string_view>

namespace sandbox::ctl {

// Exit statuses of sandboxctl itself (the code's own status otherwise).
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 124;   // like timeout(1)
inline constexpr int kExitSandboxError = 125;  // the sandbox, not the code, failed

int cmd_run(int argc, char** argv);
int cmd_status(int argc, char** argv);
int cmd_pool(int argc, char** argv);
int cmd_snapshots(int argc, char** argv);
int cmd_session(int argc, char** argv);

// Shared by run and session exec.
}  // namespace sandbox::ctl

#include "sandbox/client.h"

namespace sandbox::ctl {

// The exit status sandboxctl gives a run's outcome.
int exit_status(const Result<RunResult>& r);
// Writes all of `data` to fd.
void write_fd(int fd, std::string_view data);

}  // namespace sandbox::ctl
