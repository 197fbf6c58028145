// sandboxctl verbs: one function each, dispatched from main's table.
#pragma once

namespace sandbox::ctl {

// Exit statuses of sandboxctl itself (the code's own status otherwise).
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 124;   // like timeout(1)
inline constexpr int kExitSandboxError = 125;  // the sandbox, not the code, failed

int cmd_run(int argc, char** argv);
int cmd_status(int argc, char** argv);
int cmd_pool(int argc, char** argv);
int cmd_snapshots(int argc, char** argv);

}  // namespace sandbox::ctl
