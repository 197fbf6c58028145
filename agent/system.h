// Guest system bring-up done by the agent as PID 1: devices, modules, the
// read-only root, writable tmpfs areas, and the virtio port to the host.
#pragma once

#include <optional>
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

// Guest memory is shared out once, at boot, from what is available then
// (what the kernel and the agent already hold is not for user code):
//   user code   memory.max of the exec cgroup: its processes and the tmpfs
//               pages they write, which are charged to them;
//   files       one tmpfs shared by /tmp, /dev/shm and the home, smaller
//               than that by an interpreter's room: what is written there
//               outlives an OOM kill, and a fresh interpreter must still
//               start beside it.
// Kept back from user code for the kernel and the agent beyond what they
// hold at boot: slab and buffers that grow with use, reclaim headroom.
inline constexpr uint64_t kAgentReserveKb = 16 << 10;
// Room a fresh interpreter needs with the files area full: Node.js peaks
// near 56 MB while it starts, Python near 18 MB.
inline constexpr uint64_t kInterpreterReserveKb = 64 << 10;
// /run holds only what the agent writes: a run's and a cell's code
// (limits::kMaxCodeBytes each).
inline constexpr uint64_t kRunTmpfsKb = 4 << 10;
// However small the VM, the files area holds at least this much.
inline constexpr uint64_t kMinFilesKb = 4 << 10;
// A tmpfs inode with its dentry takes about 1 kB of kernel memory; the area
// has one per 8 kB of data, so its inodes take at most a ninth of its share.
inline constexpr uint64_t kTmpfsInodeKb = 1;
inline constexpr uint64_t kTmpfsKbPerInode = 8;

struct MemoryPlan {
  uint64_t user_kb = 0;   // memory.max of the exec cgroup
  uint64_t files_kb = 0;  // size of the files area
  uint64_t files_inodes = 0;
  uint64_t run_kb = kRunTmpfsKb;
};

// The plan for a guest with `available_kb` of memory available at boot.
MemoryPlan plan_memory(uint64_t available_kb);
// This guest's plan, made from MemAvailable on first use (at boot).
const MemoryPlan& memory_plan();

// Mounts, loads modules and switches to the root image.
Result<void> setup_system();
// The package layer's language when the kernel command line asked for one
// ("sandbox.layer=python") and its disk is mounted read-only at
// proto::kLayerMount; the interpreters of that language find it there.
std::optional<Language> mounted_layer();
// After the host channel is open: kernel knobs, read-only /proc/sys and
// /sys, and a minimal /dev in place of devtmpfs, with /dev/shm in the files
// area.
Result<void> lock_down();
// The cgroup that will hold every exec's process tree.
Result<void> setup_exec_cgroup(const std::string& tree);

// Without swap, user code at its memory.max can evict and refault its own
// code pages for ever instead of reaching the OOM killer. Stalled on memory
// this long within a window (all its tasks at once), its tree is killed.
inline constexpr uint32_t kMemoryStallUs = 2'000'000;
inline constexpr uint32_t kMemoryStallWindowUs = 10'000'000;
// A pressure trigger on the tree: EPOLLPRI when user code stalls so.
Result<unique_fd> watch_memory_stall(const std::string& tree);
// SIGKILL to every process of the tree, as the OOM killer would.
Result<void> kill_tree(const std::string& tree);
// Path of the device node of the host channel, once it exists.
Result<std::string> find_agent_port(long timeout_ms);
// The device node of the virtio-serial port named `name`.
Result<std::string> find_virtio_port(std::string_view name, long timeout_ms);
std::string kernel_release();
// Adds the operator's CA certificates (PEM) to the system bundle that
// OpenSSL, and through it Python, curl, git and Node, read.
Result<void> install_extra_cas(std::string_view pem);
// Mixes host-provided bytes into the kernel RNG and forces a reseed.
Result<void> reseed(std::string_view seed);
[[noreturn]] void power_off();

}  // namespace sandbox::agent
