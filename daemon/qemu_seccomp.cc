#include "daemon/qemu_seccomp.h"

#include "common/seccomp_program.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/unique_fd.h"

namespace sandbox::daemon {
namespace {

// Derived from tracing QEMU 7.2 (TCG and KVM) through boot, runs, sessions,
// file transfers, snapshot save and restore; each entry says why. Left out
// on purpose: io_uring (QEMU probes it and falls back to epoll; it is a large
// kernel attack surface), socket creation, process creation, namespaces,
// mount, ptrace, bpf, keyrings, module loading.
constexpr SyscallRule kAllowlist[] = {
    // Start-up: the dynamic loader, glibc and QEMU's own initialisation.
    {"execve", "the exec of QEMU itself; QEMU's -sandbox spawn=deny forbids it afterwards"},
    {"brk", "heap"},
    {"mmap", "heap, shared libraries, guest RAM"},
    {"munmap", "heap, shared libraries, guest RAM"},
    {"mremap", "glibc realloc of large blocks"},
    {"mprotect", "loader relocations, TCG code buffer, coroutine stack guards"},
    {"madvise", "guest RAM hints (MADV_DONTDUMP, MADV_DONTNEED on balloon and reset)"},
    {"mbind", "guest RAM NUMA policy (host-nodes, default policy)"},
    {"set_mempolicy", "glibc and QEMU probe the memory policy"},
    {"get_mempolicy", "glibc and QEMU probe the memory policy"},
    {"membarrier", "QEMU's RCU uses membarrier where available"},
    {"arch_prctl", "thread pointer set-up by the loader"},
    {"set_tid_address", "glibc thread start-up"},
    {"set_robust_list", "glibc thread start-up"},
    {"rseq", "glibc registers restartable sequences per thread"},
    {"prlimit64", "glibc and QEMU read their resource limits"},
    {"getrlimit", "glibc and QEMU read their resource limits"},
    {"sysinfo", "QEMU sizes caches from host memory"},
    {"uname", "glibc and QEMU check the kernel version"},
    {"sched_getaffinity", "glibc counts CPUs for thread pools"},
    {"sched_setaffinity", "vCPU threads may be pinned"},
    {"sched_yield", "spin loops in QEMU's locks and the TCG vCPU loop"},
    {"getpid", "logging and self-identification"},
    {"gettid", "per-thread identity for QEMU's locks and tracing"},
    {"getuid", "glibc start-up"},
    {"geteuid", "glibc start-up"},
    {"getgid", "glibc start-up"},
    {"getegid", "glibc start-up"},
    {"getrandom", "glibc malloc and hash seeds, QEMU's guest RNG backend"},
    {"getcwd", "path resolution of relative names"},
    {"prctl", "thread names (PR_SET_NAME); QEMU's -sandbox installs its own filter with it"},
    {"seccomp", "QEMU's -sandbox installs its own filter on top of this one"},
    {"capget", "QEMU's -sandbox checks its privileges"},
    // Files: the images and memory are passed in; QEMU opens them by
    // /proc/self/fd, reads the kernel and initrd, and maps guest RAM.
    {"openat", "images and memory via /proc/self/fd, shared libraries, /dev/kvm"},
    {"open", "older glibc paths"},
    {"close", "descriptors"},
    {"read", "images, eventfds, the console and agent channels"},
    {"readv", "chardev sockets"},
    {"pread64", "the root image (virtio-blk), the loader"},
    {"preadv", "the root image (virtio-blk)"},
    {"preadv2", "the root image (virtio-blk)"},
    {"write", "console, eventfds, snapshot device state"},
    {"writev", "console and agent channels"},
    {"pwrite64", "memory files (snapshot template RAM is shared)"},
    {"pwritev", "memory files"},
    {"lseek", "images and the snapshot state file"},
    {"fadvise64", "QEMU drops the page cache of the snapshot state it has read"},
    {"fstat", "images and descriptors"},
    {"newfstatat", "images and descriptors"},
    {"statx", "images and descriptors"},
    {"statfs", "page size of the memory file's filesystem"},
    {"fstatfs", "page size of the memory file's filesystem"},
    {"access", "the loader and QEMU's module lookup"},
    {"faccessat", "QEMU's module lookup"},
    {"faccessat2", "QEMU's module lookup"},
    {"readlink", "the loader finds QEMU's own path"},
    {"readlinkat", "the loader finds QEMU's own path"},
    {"getdents64", "QEMU lists its module and firmware directories"},
    {"fchdir", "glibc directory walks"},
    {"fcntl", "descriptor flags (non-blocking channels, CLOEXEC)"},
    {"dup", "chardev set-up"},
    {"dup2", "chardev set-up"},
    {"dup3", "chardev set-up"},
    {"pipe2", "QEMU's internal notifiers where eventfd is missing"},
    {"eventfd2", "QEMU's event notifiers (main loop, virtio, vCPU kicks)"},
    {"signalfd4", "QEMU's main loop receives signals through a signalfd"},
    {"memfd_create", "QEMU's shared memory for virtio and the TCG code buffer"},
    {"ftruncate", "sizing a memory file that is created empty"},
    {"fallocate", "memory file preallocation"},
    {"fsync", "flush of written state"},
    {"fdatasync", "flush of written state"},
    {"ioctl", "/dev/kvm (VM, vCPU and device ioctls), terminal and block queries"},
    // Event loop and threads.
    {"ppoll", "QEMU's main loop"},
    {"poll", "glibc helpers"},
    {"epoll_create1", "QEMU's aio event loop on Linux"},
    {"epoll_ctl", "QEMU's aio event loop"},
    {"epoll_wait", "QEMU's aio event loop"},
    {"epoll_pwait", "QEMU's aio event loop"},
    {"futex", "locks and condition variables"},
    {"clone", "threads (vCPUs, I/O workers, RCU)", true},
    {"exit", "thread exit"},
    {"exit_group", "process exit"},
    {"rt_sigaction", "signal handlers (vCPU kick, main-loop signals)"},
    {"rt_sigprocmask", "signal masks per thread and in coroutines"},
    {"rt_sigreturn", "return from a signal handler"},
    {"rt_sigtimedwait", "QEMU waits for signals in some threads"},
    {"sigaltstack", "coroutine and signal stacks"},
    {"tgkill", "QEMU kicks its own vCPU threads"},
    {"clock_gettime", "timers (when not served by the vDSO)"},
    {"clock_getres", "timers"},
    {"gettimeofday", "timers (when not served by the vDSO)"},
    {"clock_nanosleep", "throttling and retry sleeps"},
    {"nanosleep", "throttling and retry sleeps"},
    {"timerfd_create", "timers"},
    {"timerfd_settime", "timers"},
    // Sockets: only the descriptors the daemon passes in (agent channel,
    // QMP); QEMU makes no socket of its own (and has no network namespace
    // to reach anything with).
    {"recvmsg", "QMP getfd receives the snapshot stream's descriptor"},
    {"sendmsg", "chardev socket writes"},
    {"recvfrom", "chardev socket reads"},
    {"sendto", "chardev socket writes"},
    {"shutdown", "closing a chardev socket"},
    {"getsockopt", "chardev socket set-up"},
    {"setsockopt", "chardev socket set-up"},
    {"getsockname", "chardev socket set-up"},
    {"getpeername", "chardev socket set-up"},
};

constexpr std::string_view kEnosys[] = {"clone3"};

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

}  // namespace

std::span<const SyscallRule> qemu_syscall_allowlist() { return kAllowlist; }
std::span<const std::string_view> qemu_syscalls_enosys() { return kEnosys; }

Result<std::vector<sock_filter>> build_qemu_seccomp() {
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
  if (!ctx) return Error::make(ErrorCode::internal, "seccomp_init failed");
  auto fail = [](std::string_view what, std::string_view name, int rc) {
    return Error::make(ErrorCode::internal,
                       std::string(what) + " " + std::string(name) + ": " + std::strerror(rc < 0 ? -rc : rc));
  };
  // Refused calls show up in the kernel's audit log (type=1326).
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_LOG, 1); rc != 0) return fail("seccomp_attr_set", "log", rc);
  for (const auto& rule : kAllowlist) {
    int nr = seccomp_syscall_resolve_name(std::string(rule.name).c_str());
    // Not every call exists on every architecture (open, dup2 on arm64).
    if (nr == __NR_SCMP_ERROR) continue;
    int rc = rule.threads_only
                 ? seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 1,
                                    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
                 : seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0);
    if (rc != 0) return fail("seccomp_rule_add", rule.name, rc);
  }
  for (auto name : kEnosys) {
    int nr = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (nr == __NR_SCMP_ERROR) continue;
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), nr, 0); rc != 0)
      return fail("seccomp_rule_add", name, rc);
  }
  return export_seccomp_program(ctx.get());
}

}  // namespace sandbox::daemon
