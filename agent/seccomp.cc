#include "agent/seccomp.h"

#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "common/seccomp_program.h"

namespace sandbox::agent {
namespace {

struct Denied {
  int nr;
  const char* why;
  int err = EPERM;  // ENOSYS where programs should fall back as on an older kernel
};

// Each entry: a syscall user code never needs, and what it would open up.
const Denied kDenied[] = {
    {SCMP_SYS(mount), "new mounts could hide or replace files"},
    {SCMP_SYS(umount2), "unmounting could expose what mounts hide"},
    {SCMP_SYS(pivot_root), "root changes belong to the agent"},
    {SCMP_SYS(chroot), "no use without privileges; no reason to probe"},
    {SCMP_SYS(unshare), "namespaces are the usual first step of kernel exploits"},
    {SCMP_SYS(setns), "joining namespaces"},
    {SCMP_SYS(bpf), "eBPF is a large kernel attack surface"},
    {SCMP_SYS(perf_event_open), "perf is a large kernel attack surface"},
    {SCMP_SYS(userfaultfd), "used to widen kernel race windows"},
    {SCMP_SYS(kexec_load), "replacing the kernel"},
    {SCMP_SYS(kexec_file_load), "replacing the kernel"},
    {SCMP_SYS(init_module), "loading kernel code"},
    {SCMP_SYS(finit_module), "loading kernel code"},
    {SCMP_SYS(delete_module), "unloading kernel code"},
    {SCMP_SYS(add_key), "kernel keyrings are not for user code"},
    {SCMP_SYS(request_key), "kernel keyrings are not for user code"},
    {SCMP_SYS(keyctl), "kernel keyrings are not for user code"},
    {SCMP_SYS(iopl), "raw port I/O"},
    {SCMP_SYS(ioperm), "raw port I/O"},
    {SCMP_SYS(swapon), "swap configuration"},
    {SCMP_SYS(swapoff), "swap configuration"},
    {SCMP_SYS(reboot), "the VM's life belongs to the host"},
    {SCMP_SYS(syslog), "kernel log may leak addresses"},
    {SCMP_SYS(acct), "process accounting"},
    {SCMP_SYS(quotactl), "quota control"},
    {SCMP_SYS(open_by_handle_at), "bypasses path-based confinement"},
    {SCMP_SYS(name_to_handle_at), "pairs with open_by_handle_at"},
    {SCMP_SYS(fsopen), "new mount API"},
    {SCMP_SYS(fsconfig), "new mount API"},
    {SCMP_SYS(fsmount), "new mount API"},
    {SCMP_SYS(fspick), "new mount API"},
    {SCMP_SYS(move_mount), "new mount API"},
    {SCMP_SYS(open_tree), "new mount API"},
    {SCMP_SYS(mount_setattr), "new mount API"},
    {SCMP_SYS(lookup_dcookie), "kernel profiling interface"},
    {SCMP_SYS(vhangup), "terminal hijacking"},
    {SCMP_SYS(io_uring_setup), "io_uring is one of the largest kernel attack surfaces", ENOSYS},
    {SCMP_SYS(io_uring_enter), "io_uring is one of the largest kernel attack surfaces", ENOSYS},
    {SCMP_SYS(io_uring_register), "io_uring is one of the largest kernel attack surfaces", ENOSYS},
    {SCMP_SYS(memfd_secret), "secret memory is hidden from the kernel's own checks", ENOSYS},
    {SCMP_SYS(pidfd_getfd), "takes descriptors out of other processes"},
    {SCMP_SYS(process_madvise), "acts on other processes' memory"},
    {SCMP_SYS(process_mrelease), "acts on other processes' memory"},
    {SCMP_SYS(fanotify_init), "watches the whole filesystem"},
    {SCMP_SYS(quotactl_fd), "quota control"},
    {SCMP_SYS(move_pages), "acts on other processes' memory"},
    {SCMP_SYS(migrate_pages), "acts on other processes' memory"},
};

// Namespace flags that clone() may not carry.
constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID,
                                        CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME};

}  // namespace

Result<std::vector<sock_filter>> build_user_filter() {
  std::unique_ptr<void, decltype(&seccomp_release)> ctx(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  if (!ctx) return Error::make(ErrorCode::internal, "seccomp_init failed");
  auto deny = [&](int nr, uint32_t err, unsigned n = 0, scmp_arg_cmp a = {}, scmp_arg_cmp b = {}) -> Result<void> {
    int rc = n == 0   ? seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(err), nr, 0)
             : n == 1 ? seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(err), nr, 1, a)
                      : seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(err), nr, 2, a, b);
    if (rc != 0) return Error::sys("seccomp_rule_add", std::to_string(nr), -rc);
    return ok();
  };
  for (const auto& d : kDenied)
    if (auto r = deny(d.nr, static_cast<uint32_t>(d.err)); !r) return std::move(r).error();
  for (uint64_t flag : kNamespaceFlags)
    if (auto r = deny(SCMP_SYS(clone), EPERM, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)); !r)
      return std::move(r).error();
  // clone3 passes flags in memory the filter cannot read.
  if (auto r = deny(SCMP_SYS(clone3), ENOSYS); !r) return std::move(r).error();
  // Packet sockets and raw IP sockets: sniffing and spoofing.
  if (auto r = deny(SCMP_SYS(socket), EPERM, 1, SCMP_A0(SCMP_CMP_EQ, AF_PACKET)); !r) return std::move(r).error();
  for (int family : {AF_INET, AF_INET6})
    if (auto r = deny(SCMP_SYS(socket), EPERM, 2, SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(family)),
                      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW));
        !r)
      return std::move(r).error();

  return export_seccomp_program(ctx.get());
}

}  // namespace sandbox::agent
