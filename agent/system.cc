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

#include <algorithm>
#include <cerrno>
#include <tuple>
#include <cstdio>
#include <cstring>
#include <vector>
#include <memory>
#include <fstream>
#include <sstream>

#include "agent/log.h"
#include "common/io.h"
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

// Where the files area is mounted until its parts are bound in place; only
// the agent can enter it, and it is gone before user code runs.
constexpr const char* kFilesStaging = "/run/files";

Result<void> bind(const std::string& src, const std::string& dst) {
  ::mkdir(dst.c_str(), 0755);
  if (::mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) return Error::sys("bind mount " + src, dst);
  if (::mount(nullptr, dst.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, nullptr) != 0)
    return Error::sys("remount nosuid,nodev", dst);
  return ok();
}

Result<void> make_dir(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
  if (::mkdir(path.c_str(), mode) != 0) return Error::sys("mkdir", path);
  // mkdir applies the umask; the sticky bit needs chmod anyway.
  if (::chmod(path.c_str(), mode) != 0) return Error::sys("chmod", path);
  if (::chown(path.c_str(), uid, gid) != 0) return Error::sys("chown", path);
  return ok();
}

}  // namespace

MemoryPlan plan_memory(uint64_t available_kb) {
  MemoryPlan plan;
  plan.user_kb = available_kb > kAgentReserveKb ? available_kb - kAgentReserveKb : 0;
  uint64_t share = plan.user_kb > kInterpreterReserveKb + kRunTmpfsKb
                       ? plan.user_kb - kInterpreterReserveKb - kRunTmpfsKb
                       : 0;
  plan.files_kb = std::max(share / (kTmpfsKbPerInode + kTmpfsInodeKb) * kTmpfsKbPerInode, kMinFilesKb);
  plan.files_inodes = plan.files_kb / kTmpfsKbPerInode;
  return plan;
}

const MemoryPlan& memory_plan() {
  static const MemoryPlan plan = [] {
    MemoryPlan p = plan_memory(meminfo_kb("MemAvailable"));
    log("memory: %llu kB for user code; files area %llu kB, %llu inodes; /run %llu kB",
        static_cast<unsigned long long>(p.user_kb), static_cast<unsigned long long>(p.files_kb),
        static_cast<unsigned long long>(p.files_inodes), static_cast<unsigned long long>(p.run_kb));
    return p;
  }();
  return plan;
}

namespace {

std::optional<Language> g_layer;

// The disk whose virtio serial the host set: found by name, not by order.
std::optional<std::string> disk_with_serial(std::string_view wanted) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/sys/block"), ::closedir);
  if (!dir) return std::nullopt;
  while (dirent* e = ::readdir(dir.get())) {
    std::string name = e->d_name;
    if (!name.starts_with("vd")) continue;
    std::ifstream f("/sys/block/" + name + "/serial");
    std::string serial;
    if (std::getline(f, serial) && serial == wanted) return name;
  }
  return std::nullopt;
}

// Devices appear as the kernel probes them, which may be after the root.
std::optional<std::string> wait_for_disk(std::string_view serial) {
  std::optional<std::string> name;
  for (int i = 0; i < 50 && !(name = disk_with_serial(serial)); ++i) ::usleep(100'000);
  return name;
}

bool on_cmdline(std::string_view flag) {
  std::ifstream in("/proc/cmdline");
  std::string word;
  while (in >> word)
    if (word == flag) return true;
  return false;
}

// Where the layer and the root are mounted before the switch: in the
// initramfs, out of sight once the root moves over it.
constexpr const char* kStagedLayer = "/layer";
constexpr const char* kLowerRoot = "/lower";

// The layer named on the kernel command line, mounted at kStagedLayer.
// A layer that cannot be mounted is logged and left out: the run then
// fails on its missing packages, with the reason in the guest log.
void stage_layer() {
  std::ifstream in("/proc/cmdline");
  std::string word;
  constexpr std::string_view kKey = "sandbox.layer=";
  std::optional<Language> language;
  while (in >> word)
    if (word.starts_with(kKey)) language = schema::EnumNames<Language>::parse(std::string_view(word).substr(kKey.size()));
  if (!language) return;
  auto name = wait_for_disk(proto::kLayerDiskSerial);
  if (!name) return log("package layer: no disk with serial %s", proto::kLayerDiskSerial.data());
  std::string dev = "/dev/" + *name;
  ::mkdir(kStagedLayer, 0755);
  // Read-only, and nothing on it runs with privileges or names a device.
  if (auto r = do_mount(dev.c_str(), kStagedLayer, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID); !r)
    return log("package layer: %s", r.error().message.c_str());
  g_layer = language;
}

// The root at /sysroot: the image itself, or, when the layer carries
// Debian packages (a "root" tree), a read-only overlay of that tree on
// the image. Either way nothing on it is setuid or a device.
Result<void> mount_root() {
  constexpr unsigned long kFlags = MS_RDONLY | MS_NODEV | MS_NOSUID;
  struct stat st {};
  std::string tree = std::string(kStagedLayer) + "/root";
  if (!g_layer || ::stat(tree.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return do_mount(kRootDevice.data(), "/sysroot", "erofs", kFlags);
  ::mkdir(kLowerRoot, 0755);
  if (auto r = do_mount(kRootDevice.data(), kLowerRoot, "erofs", kFlags); !r) return r;
  std::string options = "lowerdir=" + tree + ":" + kLowerRoot;
  if (auto r = do_mount("overlay", "/sysroot", "overlay", kFlags, options.c_str()); !r)
    return std::move(r).error().context("the Debian package layer");
  return ok();
}

// The layer where runs find it (PYTHONPATH, NODE_PATH): moved, not
// mounted again, so the overlay keeps the very mount it was made of.
Result<void> place_layer() {
  if (!g_layer) return ok();
  std::string at = std::string("/sysroot") + std::string(proto::kLayerMount);
  ::mkdir(at.c_str(), 0755);
  if (::mount(kStagedLayer, at.c_str(), nullptr, MS_MOVE, nullptr) != 0) return Error::sys("move mount", at);
  return ok();
}

}  // namespace

std::optional<Language> mounted_layer() { return g_layer; }

Result<void> setup_system() {
  // The kernel found no /dev/console in the initramfs, so fds 0-2 are closed
  // until devtmpfs is up.
  if (auto r = do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755"); !r) return r;
  if (unique_fd console(::open("/dev/console", O_RDWR | O_NOCTTY)); console) {
    ::dup2(console.get(), 0), ::dup2(console.get(), 1), ::dup2(console.get(), 2);
    // Landed on one of 0-2 itself: keep it.
    if (console.get() <= 2) console.release();
  }
  if (auto r = do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV); !r) return r;
  if (auto r = do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV); !r) return r;
  if (auto r = load_modules(); !r) return std::move(r).error().context("loading modules");

  if (!wait_for(std::string(kRootDevice), 5000)) return Error::make(ErrorCode::vm_boot_failed, "root device did not appear");
  stage_layer();
  if (auto r = mount_root(); !r) return r;

  // Writable places on the read-only root. /tmp, /dev/shm and the home
  // share one tmpfs, so what user code can pin there (it outlives its
  // processes) has one bound, set by the memory plan made now, before
  // anything else takes memory.
  const MemoryPlan& plan = memory_plan();
  std::string run_opts = "mode=0755,size=" + std::to_string(plan.run_kb) + "k";
  if (auto r = do_mount("tmpfs", "/sysroot/run", "tmpfs", MS_NOSUID | MS_NODEV, run_opts.c_str()); !r) return r;
  std::string staging = std::string("/sysroot") + kFilesStaging;
  std::string files_opts =
      "mode=0700,size=" + std::to_string(plan.files_kb) + "k,nr_inodes=" + std::to_string(plan.files_inodes);
  if (auto r = do_mount("tmpfs", staging.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, files_opts.c_str()); !r) return r;
  for (auto [dir, mode, uid, gid] : {std::tuple{"/tmp", 01777, 0u, 0u}, std::tuple{"/shm", 01777, 0u, 0u},
                                     std::tuple{"/home", 0700, kUserUid, kUserGid}})
    if (auto r = make_dir(staging + dir, static_cast<mode_t>(mode), uid, gid); !r) return r;
  if (auto r = bind(staging + "/tmp", "/sysroot/tmp"); !r) return r;
  if (auto r = bind(staging + "/home", "/sysroot" + std::string(kUserHome)); !r) return r;
  if (auto r = place_layer(); !r) return r;

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
  // favordynmods: a session moves its interpreter into a cgroup of its
  // own for each cell, and without it the first such move after a pause
  // waits out an RCU grace period (30 ms under TCG); forks and exits pay
  // a little instead. Kernels before 6.0 refuse the option (EINVAL).
  constexpr unsigned long kCgroupFlags = MS_NOSUID | MS_NOEXEC | MS_NODEV;
  auto cgroup = do_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", kCgroupFlags, "favordynmods");
  if (!cgroup && cgroup.error().sys_errno == EINVAL) {
    log("cgroup2: no favordynmods (%s); mounted without it", cgroup.error().message.c_str());
    cgroup = do_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", kCgroupFlags);
  }
  if (!cgroup) log("cgroup2 unavailable (%s); process trees are tracked by session", cgroup.error().message.c_str());
  ::mkdir("/run/sandbox", 0755);
  ::sethostname("sandbox", 7);
  if (auto r = bring_up_loopback(); !r) log("%s", r.error().message.c_str());
  return ok();
}

Result<void> install_extra_cas(std::string_view pem) {
  // The root is read-only: a copy with both in /run, bound over the bundle.
  constexpr const char* kBundle = "/etc/ssl/certs/ca-certificates.crt";
  constexpr const char* kCopy = "/run/ca-certificates.crt";
  auto base = read_file(kBundle, 16 << 20);
  if (!base) return std::move(base).error().context("the CA bundle");
  std::string all = std::move(*base);
  if (!all.empty() && all.back() != '\n') all += '\n';
  all += pem;
  unique_fd fd(::open(kCopy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return Error::sys("open", kCopy);
  if (auto r = write_all(fd.get(), all, kCopy); !r) return r;
  fd.reset();
  if (auto r = bind(kCopy, kBundle); !r) return r;
  if (::mount(nullptr, kBundle, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return Error::sys("remount read-only", kBundle);
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
      // System V shared memory goes with the process that made it, as
      // tmpfs files do not: it cannot pin memory past an OOM kill.
      {"/proc/sys/kernel/shm_rmid_forced", "1"},
  };
  for (const auto& [path, value] : kSysctls) {
    // A knob the kernel lacks guards a feature it was built without.
    if (::access(path, F_OK) != 0 && errno == ENOENT) continue;
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
  // A builder VM's scratch disk, the one block device left, for the user
  // its installer runs as ("sandbox.builder": only builders have one).
  if (on_cmdline("sandbox.builder")) {
    auto name = wait_for_disk(proto::kScratchDiskSerial);
    if (!name) return Error::make(ErrorCode::internal, "builder VM without its scratch disk");
    std::ifstream f("/sys/block/" + *name + "/dev");
    unsigned major = 0, minor = 0;
    char colon = 0;
    if (!(f >> major >> colon >> minor) || colon != ':') return Error::make(ErrorCode::internal, "scratch disk number");
    std::string path(proto::kScratchDevice);
    if (::mknod(path.c_str(), S_IFBLK | 0600, makedev(major, minor)) != 0) return Error::sys("mknod", path);
    if (::chown(path.c_str(), kUserUid, kUserGid) != 0) return Error::sys("chown", path);
  }
  if (auto r = do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); !r)
    return r;
  if (auto r = bind(std::string(kFilesStaging) + "/shm", "/dev/shm"); !r) return r;
  // Its parts are in place; the area itself is out of reach from now on.
  if (::umount2(kFilesStaging, MNT_DETACH) != 0) return Error::sys("umount", kFilesStaging);
  ::rmdir(kFilesStaging);
  if (::mount(nullptr, "/dev", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64") != 0)
    return Error::sys("remount read-only", "/dev");
  return ok();
}

Result<void> setup_exec_cgroup(const std::string& tree) {
  // Enable the controllers for children of the root, then bound the memory
  // user code may take, tmpfs pages it writes included, so the kernel and
  // the agent always have theirs: past it the OOM killer picks within the
  // tree.
  {
    std::ofstream ctl("/sys/fs/cgroup/cgroup.subtree_control");
    if (!(ctl << "+pids +memory" << std::flush)) return Error::sys("enable controllers", "/sys/fs/cgroup");
  }
  if (::mkdir(tree.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir", tree);
  uint64_t user_kb = memory_plan().user_kb;
  if (user_kb == 0) return Error::make(ErrorCode::internal, "no memory left for user code");
  std::string max_path = tree + "/memory.max";
  unique_fd max(::open(max_path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!max) return Error::sys("open", max_path);
  return write_all(max.get(), std::to_string(user_kb * 1024), max_path);
}

Result<unique_fd> watch_memory_stall(const std::string& tree) {
  std::string path = tree + "/memory.pressure";
  unique_fd fd(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  // The kernel wants the trigger with its terminating NUL.
  std::string trigger = "full " + std::to_string(kMemoryStallUs) + " " + std::to_string(kMemoryStallWindowUs);
  if (auto r = write_all(fd.get(), std::string_view(trigger.c_str(), trigger.size() + 1), path); !r)
    return std::move(r).error();
  return fd;
}

Result<void> kill_tree(const std::string& tree) {
  std::string path = tree + "/cgroup.kill";
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  return write_all(fd.get(), "1", path);
}

Result<std::string> find_agent_port(long timeout_ms) { return find_virtio_port(proto::kAgentPortName, timeout_ms); }

Result<std::string> find_virtio_port(std::string_view wanted, long timeout_ms) {
  // The port's name is in sysfs; the node under /dev has the same base name.
  for (long waited = 0; waited <= timeout_ms; waited += 2) {
    if (auto d = Dir::open("/sys/class/virtio-ports"))
      for (const auto& port : d->names()) {
        auto name = read_file("/sys/class/virtio-ports/" + port + "/name", 256);
        if (!name || name->substr(0, name->find('\n')) != wanted) continue;
        std::string dev = "/dev/" + port;
        if (wait_for(dev, timeout_ms)) return dev;
        return Error::make(ErrorCode::vm_boot_failed, dev + " did not appear");
      }
    sleep_ms(2);
  }
  return Error::make(ErrorCode::vm_boot_failed, "virtio port " + std::string(wanted) + " not found");
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
  // Without ACPI there is no power-off device: the kernel would only halt.
  // QEMU runs with -no-reboot, so a reset (a triple fault, reboot=t) ends
  // the VM just as well.
  bool acpi = ::access("/sys/firmware/acpi", F_OK) == 0;
  ::reboot(acpi ? LINUX_REBOOT_CMD_POWER_OFF : LINUX_REBOOT_CMD_RESTART);
  for (;;) ::pause();
}

}  // namespace sandbox::agent
