// Guest system bring-up: what the agent does as PID 1 before it can serve.
#include "agent/system.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/random.h>
#include <linux/reboot.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>
#include <fstream>
#include <sstream>

#include "agent/log.h"
#include "common/sysinfo.h"

namespace sandbox::agent {
namespace {

Result<void> do_mount(const char* src, const char* dst, const char* type, unsigned long flags,
                      const char* data = nullptr) {
  ::mkdir(dst, 0755);
  if (::mount(src, dst, type, flags, data) != 0) return Error::sys("mount " + std::string(type), dst);
  return ok();
}

void sleep_ms(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
  ::nanosleep(&ts, nullptr);
}

// Waits for a path that appears asynchronously (device nodes, sysfs entries).
bool wait_for(const std::string& path, long timeout_ms) {
  for (long waited = 0; waited < timeout_ms; waited += 2) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    sleep_ms(2);
  }
  return ::access(path.c_str(), F_OK) == 0;
}

Result<void> load_modules() {
  std::ifstream order("/lib/modules/load-order");
  if (!order) return Error::sys("open", "/lib/modules/load-order", ENOENT);
  std::string name;
  while (order >> name) {
    std::string path = "/lib/modules/" + name + ".ko";
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Error::sys("open", path);
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST)
      return Error::sys("finit_module", path);
  }
  return ok();
}

Result<void> bring_up_loopback() {
  unique_fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return Error::sys("socket", "lo");
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "lo");
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return Error::sys("SIOCGIFFLAGS", "lo");
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return Error::sys("SIOCSIFFLAGS", "lo");
  return ok();
}

}  // namespace

Result<void> setup_system() {
  // The kernel found no /dev/console in the initramfs, so fds 0-2 are closed
  // until devtmpfs is up.
  if (auto r = do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755"); !r) return r;
  if (int fd = ::open("/dev/console", O_RDWR | O_NOCTTY); fd >= 0) {
    ::dup2(fd, 0), ::dup2(fd, 1), ::dup2(fd, 2);
    if (fd > 2) ::close(fd);
  }
  if (auto r = do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV); !r) return r;
  if (auto r = do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV); !r) return r;
  if (auto r = load_modules(); !r) return std::move(r).error().context("loading modules");

  if (!wait_for(std::string(kRootDevice), 5000)) return Error::make(ErrorCode::vm_boot_failed, "root device did not appear");
  if (auto r = do_mount(kRootDevice.data(), "/sysroot", "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID); !r) return r;

  // Writable places on the read-only root; sizes and inode counts bound
  // what user code can pin in guest memory.
  if (auto r = do_mount("tmpfs", "/sysroot/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m"); !r) return r;
  if (auto r = do_mount("tmpfs", "/sysroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m,nr_inodes=16k"); !r)
    return r;
  std::string home_opts = "mode=0700,size=64m,nr_inodes=16k,uid=" + std::to_string(kUserUid) +
                          ",gid=" + std::to_string(kUserGid);
  if (auto r = do_mount("tmpfs", "/sysroot/home/sandbox", "tmpfs", MS_NOSUID | MS_NODEV, home_opts.c_str()); !r)
    return r;

  // Switch root: the agent keeps running from the initramfs copy in memory.
  for (const char* m : {"/dev", "/sys"}) {
    std::string dst = std::string("/sysroot") + m;
    if (::mount(m, dst.c_str(), nullptr, MS_MOVE, nullptr) != 0) return Error::sys("move mount", m);
  }
  ::umount2("/proc", MNT_DETACH);
  if (::chdir("/sysroot") != 0) return Error::sys("chdir", "/sysroot");
  if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) return Error::sys("move mount", "/sysroot");
  if (::chroot(".") != 0) return Error::sys("chroot", "/sysroot");
  if (::chdir("/") != 0) return Error::sys("chdir", "/");

  // Other users' processes (the agent's above all) are invisible in /proc.
  if (auto r = do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, "hidepid=invisible"); !r) return r;
  if (auto r = do_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NOEXEC | MS_NODEV); !r)
    log("cgroup2 unavailable (%s); process trees are tracked by session", r.error().message.c_str());
  ::mkdir("/run/sandbox", 0755);
  ::sethostname("sandbox", 7);
  if (auto r = bring_up_loopback(); !r) log("%s", r.error().message.c_str());
  return ok();
}

Result<void> lock_down() {
  // Kernel knobs that shrink what an unprivileged user can reach. Modules
  // are all loaded by now, so loading is switched off for good.
  static const std::pair<const char*, const char*> kSysctls[] = {
      {"/proc/sys/user/max_user_namespaces", "0"},
      {"/proc/sys/kernel/unprivileged_bpf_disabled", "1"},
      {"/proc/sys/kernel/kexec_load_disabled", "1"},
      {"/proc/sys/kernel/dmesg_restrict", "1"},
      {"/proc/sys/kernel/kptr_restrict", "2"},
      {"/proc/sys/kernel/perf_event_paranoid", "3"},
      {"/proc/sys/vm/unprivileged_userfaultfd", "0"},
      {"/proc/sys/kernel/sysrq", "0"},
      {"/proc/sys/kernel/modules_disabled", "1"},
  };
  for (const auto& [path, value] : kSysctls) {
    std::ofstream f(path);
    if (!(f << value << std::flush)) log("cannot set %s", path);
  }
  // /proc/sys read-only even for root-owned files a bug might open up.
  if (::mount("/proc/sys", "/proc/sys", nullptr, MS_BIND, nullptr) != 0 ||
      ::mount(nullptr, "/proc/sys", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0)
    return Error::sys("remount read-only", "/proc/sys");
  if (::mount(nullptr, "/sys", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return Error::sys("remount read-only", "/sys");

  // A /dev with only harmless nodes replaces devtmpfs: no block devices,
  // no /dev/mem, /dev/port, loop devices or the host channel.
  if (::umount2("/dev", MNT_DETACH) != 0) return Error::sys("umount", "/dev");
  if (auto r = do_mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64"); !r) return r;
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                        Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    std::string path = std::string("/dev/") + n.name;
    if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) != 0) return Error::sys("mknod", path);
    ::chmod(path.c_str(), 0666);
  }
  for (auto [link, target] : {std::pair{"/dev/fd", "/proc/self/fd"}, std::pair{"/dev/stdin", "/proc/self/fd/0"},
                              std::pair{"/dev/stdout", "/proc/self/fd/1"}, std::pair{"/dev/stderr", "/proc/self/fd/2"},
                              std::pair{"/dev/ptmx", "pts/ptmx"}})
    if (::symlink(target, link) != 0) return Error::sys("symlink", link);
  if (auto r = do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); !r)
    return r;
  if (auto r = do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=32m,nr_inodes=4k"); !r)
    return r;
  if (::mount(nullptr, "/dev", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64") != 0)
    return Error::sys("remount read-only", "/dev");
  return ok();
}

Result<void> setup_exec_cgroup(const std::string& tree) {
  // Enable the controllers for children of the root, then bound the memory
  // user code may take so the agent always has some left.
  {
    std::ofstream ctl("/sys/fs/cgroup/cgroup.subtree_control");
    if (!(ctl << "+pids +memory" << std::flush)) return Error::sys("enable controllers", "/sys/fs/cgroup");
  }
  if (::mkdir(tree.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir", tree);
  uint64_t total_kb = meminfo_kb("MemTotal");
  if (total_kb > 2 * kAgentReserveKb) {
    std::ofstream max(tree + "/memory.max");
    max << (total_kb - kAgentReserveKb) * 1024 << std::flush;
  }
  return ok();
}

Result<std::string> find_agent_port(long timeout_ms) {
  // The port's name is in sysfs; the node under /dev has the same base name.
  for (long waited = 0; waited <= timeout_ms; waited += 2) {
    if (DIR* d = ::opendir("/sys/class/virtio-ports")) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(std::string("/sys/class/virtio-ports/") + e->d_name + "/name");
        std::string name;
        if (f >> name && name == proto::kAgentPortName) {
          std::string dev = std::string("/dev/") + e->d_name;
          ::closedir(d);
          if (wait_for(dev, timeout_ms)) return dev;
          return Error::make(ErrorCode::vm_boot_failed, dev + " did not appear");
        }
      }
      ::closedir(d);
    }
    sleep_ms(2);
  }
  return Error::make(ErrorCode::vm_boot_failed, "virtio port " + std::string(proto::kAgentPortName) + " not found");
}

Result<void> reseed(std::string_view seed) {
  unique_fd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", "/dev/urandom");
  std::vector<char> buf(sizeof(rand_pool_info) + seed.size());
  auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(seed.size() * 8);
  info->buf_size = static_cast<int>(seed.size());
  std::memcpy(info->buf, seed.data(), seed.size());
  if (::ioctl(fd.get(), RNDADDENTROPY, info) != 0) return Error::sys("RNDADDENTROPY");
  if (::ioctl(fd.get(), RNDRESEEDCRNG) != 0) return Error::sys("RNDRESEEDCRNG");
  return ok();
}

std::string kernel_release() {
  utsname u{};
  ::uname(&u);
  return u.release;
}

[[noreturn]] void power_off() {
  ::sync();
  ::reboot(LINUX_REBOOT_CMD_POWER_OFF);
  for (;;) ::pause();
}

}  // namespace sandbox::agent
