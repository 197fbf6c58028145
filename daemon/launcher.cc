#include "daemon/launcher.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

namespace sandbox::daemon {
namespace {

// Descriptor numbers inside QEMU.
constexpr int kAgentFd = 3;
constexpr int kQmpFd = 4;
constexpr int kKernelFd = 5;
constexpr int kInitrdFd = 6;
constexpr int kRootfsFd = 7;
constexpr int kMemoryFd = 8;
constexpr int kNetFd = 9;
constexpr int kLayerFd = 10;
constexpr int kScratchFd = 11;
constexpr int kScratchReadFd = 12;

// Names cgroups and records; unique within a daemon's life, and start-up
// recovery clears what an earlier daemon left.
std::atomic<uint64_t> next_vm_number{1};

struct Pair {
  unique_fd ours, theirs;
};

Result<Pair> socket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Error::sys("socketpair");
  return Pair{unique_fd(sv[0]), unique_fd(sv[1])};
}

Result<Pair> console_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe2");
  return Pair{unique_fd(p[0]), unique_fd(p[1])};
}

// Step: the command line, with every file QEMU needs passed as an
// inherited descriptor and named through /proc/self/fd: QEMU opens nothing
// of the daemon's by path.
Result<std::vector<std::string>> command_line(const VmConfig& config, const VmLaunch& launch, bool need_qmp,
                                              std::vector<std::pair<int, int>>* fds) {
  VmSpec spec = config.base;
  const VmHost& host = config.host;
  spec.memory_mb = launch.shape.memory_mb;
  spec.prestart = launch.shape.prestart;
  spec.warm_up = launch.shape.warm_up;
  spec.run_pids_max = config.run_pids_max;
  spec.agent_fd = kAgentFd;
  spec.net_fd = kNetFd;
  spec.qmp_fd = need_qmp ? kQmpFd : -1;
  auto pass = [&](int host_fd, int child_fd) {
    fds->emplace_back(child_fd, host_fd);
    return "/proc/self/fd/" + std::to_string(child_fd);
  };
  if (host.kernel_fd >= 0) spec.kernel = pass(host.kernel_fd, kKernelFd);
  if (host.initrd_fd >= 0) spec.initrd = pass(host.initrd_fd, kInitrdFd);
  if (launch.shape.builder) {
    if (host.builder_fd < 0) return Error::make(ErrorCode::image_missing, "no package builder image");
    pass(host.builder_fd, kRootfsFd);
    spec.rootfs_fd = kRootfsFd;
  } else if (host.rootfs_fd >= 0) {
    pass(host.rootfs_fd, kRootfsFd);
    spec.rootfs_fd = kRootfsFd;
  }
  if (launch.shape.scratch_fd >= 0 && launch.shape.scratch_ro_fd >= 0) {
    pass(launch.shape.scratch_fd, kScratchFd);
    pass(launch.shape.scratch_ro_fd, kScratchReadFd);
    spec.scratch_fd = kScratchFd;
    spec.scratch_ro_fd = kScratchReadFd;
  }
  if (launch.shape.layer_fd >= 0) {
    pass(launch.shape.layer_fd, kLayerFd);
    spec.layer_fd = kLayerFd;
    spec.layer = launch.shape.layer;
  }
  if (launch.restore) {
    spec.memory_file = pass(launch.restore->ram_fd, kMemoryFd);
    spec.memory_shared = false;
    spec.incoming = true;
  } else if (launch.make_template) {
    spec.memory_file = pass(launch.make_template->ram_fd, kMemoryFd);
    spec.memory_shared = true;
    spec.template_vm = true;
  }
  return qemu_argv(spec);
}

// Step: the VM's own cgroup, made before QEMU, which is cloned straight into it.
Result<unique_fd> make_cgroup(const VmHost& host, const std::string& name, uint32_t memory_mb) {
  CgroupLimits limits;
  limits.memory_max = (uint64_t{memory_mb} + host.memory_overhead_mb) << 20;
  limits.memory_high = limits.memory_max - (uint64_t{host.memory_overhead_mb} << 20) / 4;
  limits.pids_max = host.pids_max;
  limits.cpu_percent = host.cpu_percent;
  auto fd = host.cgroups->create(name, limits);
  if (!fd) return std::move(fd).error().context("creating the VM's cgroup");
  return fd;
}

}  // namespace

Result<LaunchedQemu> launch_qemu(const VmConfig& config, const VmLaunch& launch) {
  const VmHost& host = config.host;
  bool need_qmp = launch.restore || launch.make_template;
  LaunchedQemu q;
  q.name = "vm-" + std::to_string(next_vm_number++);

  auto agent = socket_pair();
  if (!agent) return std::move(agent).error();
  auto net = socket_pair();
  if (!net) return std::move(net).error();
  auto console = console_pipe();
  if (!console) return std::move(console).error();
  std::optional<Pair> qmp;
  if (need_qmp) {
    auto p = socket_pair();
    if (!p) return std::move(p).error();
    qmp = std::move(*p);
  }

  SpawnOptions opts;
  opts.confine = true;
  opts.fds = {{1, console->theirs.get()}, {2, console->theirs.get()}, {kAgentFd, agent->theirs.get()},
             {kNetFd, net->theirs.get()}};
  if (qmp) opts.fds.emplace_back(kQmpFd, qmp->theirs.get());
  auto argv = command_line(config, launch, need_qmp, &opts.fds);
  if (!argv) return std::move(argv).error();
  opts.argv = std::move(*argv);
  opts.user = host.user;
  opts.seccomp = host.seccomp;

  unique_fd cgroup;
  if (host.cgroups && host.cgroups->enabled()) {
    auto fd = make_cgroup(host, q.name, launch.shape.memory_mb);
    if (!fd) return std::move(fd).error();
    cgroup = std::move(*fd);
    q.has_cgroup = true;
    opts.cgroup_fd = cgroup.get();
  }
  auto proc = Process::spawn(opts);
  if (!proc) {
    if (q.has_cgroup) host.cgroups->remove(q.name);
    return std::move(proc).error().context("starting QEMU");
  }
  q.process = std::move(*proc);
  // Written after the spawn: a crash in between leaves a QEMU that dies
  // with the daemon (PR_SET_PDEATHSIG) and, if any, a cgroup to recover.
  if (!host.records_dir.empty()) {
    auto record = VmRecord::write(host.records_dir, q.name, q.process.pid());
    if (!record) {
      q.process.kill_and_wait();
      if (q.has_cgroup) host.cgroups->remove(q.name);
      return std::move(record).error().context("recording the VM");
    }
    q.record = std::move(*record);
  }
  q.agent = std::move(agent->ours);
  q.net = std::move(net->ours);
  q.console = std::move(console->ours);
  if (qmp) q.qmp = std::move(qmp->ours);
  return q;
}

}  // namespace sandbox::daemon
