#include "common/process.h"

#include "common/io.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sandbox {
namespace {

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) { return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0)); }

[[noreturn]] void child_fail(const char* what) {
  // stderr may be the console pipe; the parent reports the exit status.
  const char prefix[] = "spawn: cannot start the program: ";
  (void)!::write(2, prefix, sizeof prefix - 1);
  (void)!::write(2, what, std::strlen(what));
  (void)!::write(2, "\n", 1);
  ::_exit(127);
}

}  // namespace

namespace {

// clone3 is not wrapped by glibc 2.36.
struct CloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

// Runs in the child between clone and exec. The child is a copy of one
// thread of a multi-threaded process: only raw system calls, no allocation,
// no glibc calls that assume the parent's threads (setuid and friends go
// through syscall() for that reason).
[[noreturn]] void child_main(const SpawnOptions& options, std::vector<std::pair<int, int>>& fds, int max_target,
                             char* const* argv, char* const* envp, int parent_pidfd, bool cgroup_by_write) {
  if (cgroup_by_write) {
    // Fallback without clone3: join the cgroup before exec (the
    // descriptor goes with close_range below, or at exec).
    int procs = ::openat(options.cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (procs < 0 || ::write(procs, "0", 1) != 1) child_fail("joining the cgroup");
  }
  // Own session: a terminal's ^C reaches the daemon, which decides.
  ::setsid();
  if ((options.confine || options.no_new_privs) && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    child_fail("no_new_privs");
  if (options.user) {
    const auto& u = *options.user;
    if (::syscall(SYS_setgroups, u.groups.size(), u.groups.data()) != 0) child_fail("setgroups");
    if (::syscall(SYS_setresgid, u.gid, u.gid, u.gid) != 0) child_fail("setresgid");
    if (::syscall(SYS_setresuid, u.uid, u.uid, u.uid) != 0) child_fail("setresuid");
  }
  // After the user switch, which clears the parent-death signal.
  if (options.die_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died before the line above: its pidfd says so.
    pollfd p{parent_pidfd, POLLIN, 0};
    if (::poll(&p, 1, 0) != 0) ::_exit(127);
  }
  if (options.batch_scheduling) {
    // Only a matter of latency: the child runs either way.
    sched_param param{};
    (void)::sched_setscheduler(0, SCHED_BATCH, &param);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
  // Move sources out of the target range first so no dup2 clobbers one.
  int base = max_target + 1;
  for (auto& [target, source] : fds) {
    int moved = ::fcntl(source, F_DUPFD_CLOEXEC, base);
    if (moved < 0) child_fail("fcntl F_DUPFD");
    source = moved;
  }
  // Whatever sits between the standard descriptors and the last target
  // (inherited without close-on-exec) is not the child's either.
  ::close_range(3, static_cast<unsigned>(max_target), 0);
  for (auto& [target, source] : fds)
    if (::dup2(source, target) < 0) child_fail("dup2");
  ::close_range(static_cast<unsigned>(max_target + 1), ~0U, 0);
  if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) child_fail("chdir");
  if (options.seccomp) {
    sock_fprog prog{static_cast<unsigned short>(options.seccomp->size()),
                    const_cast<sock_filter*>(options.seccomp->data())};
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) child_fail("seccomp");
  }
  if (envp)
    ::execvpe(argv[0], argv, envp);
  else
    ::execvp(argv[0], argv);
  child_fail(argv[0]);
}

}  // namespace

Result<Process> Process::spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return Error::make(ErrorCode::invalid_argument, "empty argv");
  // Everything the child needs is prepared before the clone: no allocation after.
  std::vector<char*> argv;
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (options.env) {
    for (const auto& e : *options.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  unique_fd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return Error::sys("open", "/dev/null");
  std::vector<std::pair<int, int>> fds = options.fds;
  int max_target = 2;
  for (int std_fd = 0; std_fd <= 2; ++std_fd) {
    bool listed = false;
    for (auto& [target, source] : fds) listed |= target == std_fd;
    if (!listed) fds.emplace_back(std_fd, devnull.get());
  }
  for (auto& [target, source] : fds) max_target = std::max(max_target, target);
  unique_fd self(pidfd_open(::getpid()));
  if (!self) return Error::sys("pidfd_open");
  ::fcntl(self.get(), F_SETFD, FD_CLOEXEC);

  uint64_t flags = CLONE_PIDFD;
  // Unprivileged daemons cannot make namespaces without a user namespace;
  // they run QEMU unconfined here rather than not at all.
  if (options.confine && ::geteuid() == 0)
    flags |= CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
  if (options.cgroup_fd >= 0) flags |= CLONE_INTO_CGROUP;
  int pidfd = -1;
  CloneArgs args{};
  args.flags = flags;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = options.cgroup_fd >= 0 ? static_cast<uint64_t>(options.cgroup_fd) : 0;
  bool cgroup_by_write = false;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0 && errno == ENOSYS) {
    // Kernels before 5.3 (or filters that hide clone3): fork, without a PID
    // namespace, and join the cgroup from the child before exec.
    flags &= ~static_cast<uint64_t>(CLONE_NEWPID | CLONE_INTO_CGROUP | CLONE_PIDFD);
    cgroup_by_write = options.cgroup_fd >= 0;
    pid = ::fork();
    if (pid == 0 && flags != 0 && ::unshare(static_cast<int>(flags)) != 0) child_fail("unshare");
  }
  if (pid < 0) return Error::sys("clone3");
  if (pid == 0) child_main(options, fds, max_target, argv.data(), options.env ? envp.data() : nullptr, self.get(),
                             cgroup_by_write);
  Process p;
  p.pid_ = static_cast<pid_t>(pid);
  p.pidfd_.reset(pidfd >= 0 ? pidfd : pidfd_open(p.pid_));
  if (!p.pidfd_) {
    auto err = Error::sys("pidfd_open");
    ::kill(p.pid_, SIGKILL);
    ::waitpid(p.pid_, nullptr, 0);
    p.pid_ = -1;
    return err;
  }
  ::fcntl(p.pidfd_.get(), F_SETFD, FD_CLOEXEC);
  return p;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_and_wait();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

Process::~Process() { kill_and_wait(); }

Result<void> Process::signal(int sig) {
  if (!running()) return Error::make(ErrorCode::not_found, "process is not running");
  if (pidfd_send_signal(pidfd_.get(), sig) != 0) return Error::sys("pidfd_send_signal");
  return ok();
}

std::optional<int> Process::try_wait() {
  if (status_ || !pidfd_) return status_;
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG) == 0 &&
      info.si_pid != 0) {
    status_ = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status;
  }
  return status_;
}

int Process::wait() {
  if (!pidfd_ || status_) return status_.value_or(0);
  // An event loop may have made the pidfd non-blocking; this wait must block.
  int flags = ::fcntl(pidfd_.get(), F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(pidfd_.get(), F_SETFL, flags & ~O_NONBLOCK);
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED) != 0 &&
         errno == EINTR) {
  }
  status_ = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status;
  return *status_;
}

void Process::kill_and_wait() {
  if (!pidfd_ || status_) return;
  pidfd_send_signal(pidfd_.get(), SIGKILL);
  wait();
}

bool signal_process(pid_t pid, int sig) {
  unique_fd fd(pidfd_open(pid));
  return fd && pidfd_send_signal(fd.get(), sig) == 0;
}

namespace {

// Fields 3 and on of /proc/PID/stat (field N is at index N - 3). The command
// name may hold spaces and parentheses: fields resume after the last ')'.
std::vector<std::string> stat_fields(pid_t pid) {
  std::vector<std::string> out;
  auto line = read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!line) return out;
  auto close = line->rfind(')');
  if (close == std::string::npos || close + 2 > line->size()) return out;
  std::istringstream rest(line->substr(close + 2));
  for (std::string f; rest >> f;) out.push_back(f);
  return out;
}

}  // namespace

std::optional<ProcessUsage> read_process_usage(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 13) return std::nullopt;
  // utime and stime are fields 14 and 15.
  uint64_t utime = std::strtoull(f[11].c_str(), nullptr, 10), stime = std::strtoull(f[12].c_str(), nullptr, 10);
  ProcessUsage u;
  long ticks = ::sysconf(_SC_CLK_TCK);
  u.cpu_ms = ticks > 0 ? (utime + stime) * 1000 / static_cast<uint64_t>(ticks) : 0;
  if (auto status = read_file("/proc/" + std::to_string(pid) + "/status", 1 << 16))
    if (auto p = status->find("VmHWM:"); p != std::string::npos)
      u.peak_rss_kb = std::strtoull(status->c_str() + p + 6, nullptr, 10);
  return u;
}

// Field 22: the start time in clock ticks since boot.
std::string process_start_time(pid_t pid) {
  auto f = stat_fields(pid);
  return f.size() > 19 ? f[19] : std::string();
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

}  // namespace sandbox
