// How the daemon confines QEMU: the seccomp allowlist, the user switch, the
// namespaces and cgroup placement of Process::spawn, and start-up recovery.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <set>
#include <sstream>

#include "daemon/cgroups.h"
#include "common/process.h"
#include "daemon/qemu_seccomp.h"
#include "daemon/recovery.h"

using namespace sandbox;
using namespace sandbox::daemon;
namespace fs = std::filesystem;

namespace {

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Runs `argv` with `options` and returns what it wrote to fd 5.
std::string output_of(SpawnOptions options) {
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  unique_fd r(pfd[0]), w(pfd[1]);
  options.fds.emplace_back(5, w.get());
  auto p = Process::spawn(options);
  REQUIRE_MESSAGE(p.ok(), p.error().describe());
  w.reset();
  std::string out = read_all(r.get());
  p->wait();
  return out;
}

std::string field(const std::string& status, const std::string& name) {
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(name + ":")) {
      auto v = line.substr(name.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      v.erase(v.find_last_not_of(" \t") + 1);
      return v;
    }
  return "";
}

}  // namespace

TEST_CASE("seccomp: every allowlist entry names a real system call and says why") {
  std::set<std::string_view> seen;
  for (const auto& rule : qemu_syscall_allowlist()) {
    CHECK_MESSAGE(!rule.reason.empty(), rule.name);
    CHECK_MESSAGE(seen.insert(rule.name).second, "listed twice: " << rule.name);
    CHECK_MESSAGE(seccomp_syscall_resolve_name(std::string(rule.name).c_str()) != __NR_SCMP_ERROR, rule.name);
  }
  for (const char* never : {"ptrace", "mount", "unshare", "setns", "bpf", "kexec_load", "init_module", "socket",
                            "fork", "vfork", "execveat", "keyctl", "add_key", "io_uring_setup", "userfaultfd",
                            "perf_event_open", "process_vm_writev", "setuid", "chroot", "pivot_root"})
    CHECK_MESSAGE(seen.count(never) == 0, never << " must not be allowed");
}

TEST_CASE("seccomp: the filter refuses what is not listed, keeps threads and blocks new processes") {
  auto prog = build_qemu_seccomp();
  REQUIRE_MESSAGE(prog.ok(), prog.error().describe());
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pfd[0]);
    sock_fprog fp{static_cast<unsigned short>(prog->size()), prog->data()};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp) != 0)
      ::_exit(2);
    std::string r;
    auto note = [&](const char* what, long rc) {
      r += std::string(what) + "=" + (rc < 0 ? std::to_string(errno) : "ok") + " ";
    };
    note("unshare", ::unshare(CLONE_NEWUTS));
    note("ptrace", ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
    note("socket", ::socket(AF_INET, SOCK_STREAM, 0));
    note("mount", ::syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, nullptr));
    note("fork", ::syscall(SYS_clone, SIGCHLD, 0, nullptr, nullptr, 0));
    note("clone3", ::syscall(SYS_clone3, nullptr, 0));
    note("getpid", ::getpid());
    pthread_t t;
    int prc = ::pthread_create(&t, nullptr, [](void*) -> void* { return nullptr; }, nullptr);
    if (prc == 0) ::pthread_join(t, nullptr);
    r += "thread=" + std::string(prc == 0 ? "ok" : std::to_string(prc));
    (void)!::write(pfd[1], r.data(), r.size());
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string got = read_all(pfd[0]);
  ::close(pfd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  // EPERM is 1, ENOSYS 38: clone3 is ENOSYS so that glibc falls back to
  // clone, whose flags the filter can see.
  CHECK(got == "unshare=1 ptrace=1 socket=1 mount=1 fork=1 clone3=38 getpid=ok thread=ok");
}

TEST_CASE("spawn: a confined child as another user has no capabilities, its own namespaces and PID 1") {
  if (::geteuid() != 0) {
    MESSAGE("SKIPPED: switching users and making namespaces needs root");
    return;
  }
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "cat /proc/self/status >&5; echo \"pid $$\" >&5; readlink /proc/self/ns/pid /proc/self/ns/mnt /proc/self/ns/net >&5"};
  o.confine = true;
  o.user = SpawnOptions::User{65534, 65534, {65534}};
  auto out = output_of(o);
  CHECK(field(out, "Uid") == "65534\t65534\t65534\t65534");
  CHECK(field(out, "Gid") == "65534\t65534\t65534\t65534");
  CHECK(field(out, "Groups") == "65534");
  CHECK(field(out, "CapEff") == "0000000000000000");
  CHECK(field(out, "CapPrm") == "0000000000000000");
  CHECK(field(out, "CapAmb") == "0000000000000000");
  CHECK(field(out, "NoNewPrivs") == "1");
  CHECK(out.find("\npid 1\n") != std::string::npos);
  for (const char* ns : {"pid", "mnt", "net"}) {
    auto mine = fs::read_symlink(std::string("/proc/self/ns/") + ns).string();
    CHECK_MESSAGE(out.find(mine) == std::string::npos, ns << " namespace shared");
  }
}

TEST_CASE("spawn: the seccomp program is in force when the program starts") {
  auto prog = build_qemu_seccomp();
  REQUIRE(prog.ok());
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status >&5"};
  o.confine = true;
  o.seccomp = &*prog;
  // sh forks grep: a new process, which the filter refuses.
  auto out = output_of(o);
  CHECK(out.empty());
  o.argv = {"/bin/cat", "/proc/self/status"};
  o.fds = {{1, -1}};
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  unique_fd r(pfd[0]), w(pfd[1]);
  o.fds = {{1, w.get()}};
  auto p = Process::spawn(o);
  REQUIRE(p.ok());
  w.reset();
  std::string status = read_all(r.get());
  p->wait();
  CHECK(field(status, "Seccomp") == "2");
  CHECK(field(status, "NoNewPrivs") == "1");
}

TEST_CASE("spawn: the child starts inside the given cgroup (live cgroup v2)") {
  std::stringstream mi, pc;
  mi << std::ifstream("/proc/self/mountinfo").rdbuf();
  pc << std::ifstream("/proc/self/cgroup").rdbuf();
  auto mount = cgroup2_mount(mi.str());
  auto own = cgroup2_path_of(pc.str());
  if (!mount || !own) {
    MESSAGE("SKIPPED: no cgroup v2 hierarchy here");
    return;
  }
  std::string rel = (*own == "/" ? "" : *own) + "/sandboxd-spawn-test-" + std::to_string(::getpid());
  std::string dir = *mount + rel;
  if (::mkdir(dir.c_str(), 0755) != 0) {
    MESSAGE("SKIPPED: cannot create a cgroup under " << *mount << *own << ": " << std::strerror(errno));
    return;
  }
  unique_fd cg(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  SpawnOptions o;
  o.argv = {"/bin/cat", "/proc/self/cgroup"};
  o.cgroup_fd = cg.get();
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  unique_fd r(pfd[0]), w(pfd[1]);
  o.fds = {{1, w.get()}};
  auto p = Process::spawn(o);
  REQUIRE_MESSAGE(p.ok(), p.error().describe());
  w.reset();
  std::string out = read_all(r.get());
  p->wait();
  cg.reset();
  ::rmdir(dir.c_str());
  CHECK(cgroup2_path_of(out) == rel);
}

TEST_CASE("recovery: leftover QEMUs are killed by pid and start time; records and cgroups go") {
  char tmpl[] = "/tmp/sandboxd-recovery.XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  std::string dir = tmpl;
  auto live = Process::spawn({{"sleep", "100"}, {}, true});
  auto other = Process::spawn({{"sleep", "100"}, {}, true});
  REQUIRE(live.ok());
  REQUIRE(other.ok());
  std::ofstream(dir + "/vm-1") << live->pid() << " " << process_start_time(live->pid()) << "\n";
  // Same pid, another start time: a reused pid is someone else's process.
  std::ofstream(dir + "/vm-2") << other->pid() << " 1\n";
  std::ofstream(dir + "/vm-3") << "garbage\n";
  fs::create_directories(dir + "/cg/svc");
  std::ofstream(dir + "/cg/svc/cgroup.controllers") << "memory pids cpu";
  auto cg = Cgroups::open({dir + "/cg", "/svc", false});
  REQUIRE(cg.enabled());
  REQUIRE(cg.create("vm-1", {1 << 30, 1 << 29, 64, 0}).ok());
  auto report = recover_leftovers(dir, cg);
  CHECK(report.killed == std::vector<std::string>{"vm-1 (pid " + std::to_string(live->pid()) + ")"});
  CHECK(report.records == std::vector<std::string>{"vm-1", "vm-2", "vm-3"});
  CHECK(report.cgroups == std::vector<std::string>{"vm-1"});
  auto st = live->try_wait();
  if (!st) st = live->wait();
  CHECK(WIFSIGNALED(*st));
  CHECK(other->running());
  CHECK(other->try_wait() == std::nullopt);
  CHECK_FALSE(fs::exists(dir + "/vm-1"));
  CHECK_FALSE(fs::exists(dir + "/vm-3"));
  CHECK_FALSE(fs::exists(dir + "/cg/svc/vms/vm-1"));
  fs::remove_all(dir);
}
