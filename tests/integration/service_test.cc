// sandboxd as a system service: start-up recovery after kill -9, the
// socket's group, configuration errors, and host-side cgroup limits.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string start_time_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string f;
  for (int i = 3; i <= 22 && rest >> f; ++i)
    if (i == 22) return f;
  return {};
}

// Gone, or a zombie waiting for whoever reaps orphans.
bool wait_gone(pid_t pid, std::chrono::seconds limit) {
  auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) return true;
    auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Runs `fn` in a child switched to uid/gid (no supplementary groups);
// returns what it wrote to the pipe.
std::string as_user(uid_t uid, gid_t gid, const std::function<std::string()>& fn) {
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pfd[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    auto out = fn();
    (void)!::write(pfd[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string got = read_all(pfd[0]);
  ::close(pfd[0]);
  ::waitpid(pid, nullptr, 0);
  return got;
}

}  // namespace

TEST_CASE("start-up recovery: after kill -9 the next daemon clears VMs, records, half-written snapshots and the socket") {
  TestDaemon first;
  REQUIRE(first.start());
  std::string state = first.dir() + "/state";
  auto running = std::async(std::launch::async, [&] {
    return Client(first.socket()).run(make_request(Language::raw, "sleep 60", 90'000));
  });
  auto until = Clock::now() + std::chrono::seconds(60);
  while (first.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(first.children().size() == 1);
  pid_t vm = first.children()[0];
  CHECK(list_dir(state + "/vms").size() == 1);
  REQUIRE(::kill(first.pid(), SIGKILL) == 0);
  first.stop();
  CHECK_FALSE(running.get().ok());
  // Its QEMU dies with it (PR_SET_PDEATHSIG)...
  CHECK(wait_gone(vm, std::chrono::seconds(10)));
  // ...but its record stays, and a harder crash could leave more: a QEMU
  // still running and a snapshot written halfway.
  CHECK(list_dir(state + "/vms").size() == 1);
  pid_t stray = ::fork();
  if (stray == 0) {
    ::setsid();
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
    ::execlp("qemu-system-x86_64", "qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none", "-S",
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(stray > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::ofstream(state + "/vms/vm-999") << stray << " " << start_time_of(stray) << "\n";
  fs::create_directories(state + "/snapshots/.tmp-0123-abcdef");
  std::ofstream(state + "/snapshots/.tmp-0123-abcdef/ram") << "partial";

  // The dead daemon's socket file is still there; the next one takes its place.
  CHECK(fs::is_socket(first.socket()));
  TestDaemon second;
  REQUIRE(second.start({"--state-dir", state, "--snapshots", "on", "--socket", first.socket()}));
  int status = 0;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (::waitpid(stray, &status, WNOHANG) == 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (!killed) {
    ::kill(stray, SIGKILL);
    ::waitpid(stray, nullptr, 0);
  }
  CHECK_MESSAGE(killed, "the leftover QEMU is still running");
  auto log = second.log();
  CHECK(log.find("recovery: killed QEMU left running: vm-999 (pid " + std::to_string(stray) + ")") != std::string::npos);
  CHECK(log.find("recovery: removed 2 VM records") != std::string::npos);
  CHECK(log.find(".tmp-0123-abcdef (unfinished)") != std::string::npos);
  CHECK_FALSE(fs::exists(state + "/snapshots/.tmp-0123-abcdef"));
  CHECK(list_dir(state + "/vms").empty());
  auto r = Client(second.socket()).run(make_request(Language::raw, "echo recovered", 30'000));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "recovered\n");
  second.stop();
  CHECK(list_dir(state + "/vms").empty());
}

TEST_CASE("restarts: a session of an earlier daemon answers session_closed, after kill -9 and after a clean stop") {
  TestDaemon first;
  REQUIRE(first.start());
  std::string state = first.dir() + "/state";
  auto s1 = Client(first.socket()).create_session();
  REQUIRE_MESSAGE(s1.ok(), s1.error().describe());
  REQUIRE(::kill(first.pid(), SIGKILL) == 0);
  first.stop();

  TestDaemon second;
  REQUIRE(second.start({"--state-dir", state, "--socket", first.socket()}));
  CHECK(second.log().find("1 sessions of an earlier sandboxd are gone") != std::string::npos);
  auto lost = Client(second.socket()).session(s1->id()).exec("print(1)");
  REQUIRE_FALSE(lost.ok());
  CHECK(lost.error().code == ErrorCode::session_closed);
  CHECK(lost.error().message.find("sandboxd restarted") != std::string::npos);
  auto s2 = Client(second.socket()).create_session();
  REQUIRE_MESSAGE(s2.ok(), s2.error().describe());
  second.stop();

  TestDaemon third;
  REQUIRE(third.start({"--state-dir", state, "--socket", first.socket()}));
  auto closed = Client(third.socket()).session(s2->id()).exec("print(1)");
  REQUIRE_FALSE(closed.ok());
  CHECK(closed.error().code == ErrorCode::session_closed);
  // Only the sessions the last daemon had: the first one is forgotten now.
  CHECK(Client(third.socket()).session(s1->id()).exec("print(1)").error().code == ErrorCode::not_found);
  third.stop();
}

TEST_CASE("the control socket belongs to socket_group: members connect, others are refused at connect") {
  if (::geteuid() != 0) {
    MESSAGE("SKIPPED: acting as other users needs root");
    return;
  }
  group* g = ::getgrnam("nogroup");
  REQUIRE(g);
  gid_t members = g->gr_gid;
  TestDaemon d;
  REQUIRE(d.start({"--socket_group", "nogroup"}));
  struct stat st{};
  REQUIRE(::stat(d.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0660);
  CHECK(st.st_gid == members);
  REQUIRE(::chmod(d.dir().c_str(), 0711) == 0);
  auto status_as = [&](gid_t gid) {
    return as_user(65534, gid, [&] {
      auto s = Client(d.socket()).status();
      return s.ok() ? std::string("ok ") + s->accelerator : std::string(error_code_name(s.error().code)) + ": " + s.error().message;
    });
  };
  CHECK(status_as(members).starts_with("ok "));
  auto refused = status_as(members - 1);
  CHECK_MESSAGE(refused.find("Permission denied") != std::string::npos, refused);
  ::chmod(d.dir().c_str(), 0700);
}

TEST_CASE("configuration errors stop the daemon and name the key") {
  auto run = [](std::vector<std::string> args) {
    std::vector<std::string> argv = {SANDBOXD_BIN, "--config", "/dev/null", "--images", images_dir()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, {}, std::chrono::seconds(60));
  };
  auto r = run({"--vm-pids-max", "2"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--vm_pids_max: vm_pids_max: 2 is outside 16-65536") != std::string::npos);
  r = run({"--require-cgroup-limits", "sometimes"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("require_cgroup_limits: 'sometimes' is not on or off") != std::string::npos);
  char tmpl[] = "/tmp/sandboxd-conf.XXXXXX";
  int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  std::string text = "# a comment\nqemu_user = no such user\n";
  REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fd);
  r = run_command({SANDBOXD_BIN, "--config", tmpl}, {}, std::chrono::seconds(30));
  ::unlink(tmpl);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(std::string(tmpl) + ":2: qemu_user: 'no such user' is not a user or group name") != std::string::npos);
  if (::geteuid() == 0) {
    r = run({"--qemu-user", "sandboxd-no-such-user", "--socket", "/tmp/sandboxd-never.sock"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("qemu_user: no user 'sandboxd-no-such-user'") != std::string::npos);
  }
}

TEST_CASE("cgroup limits: live where the host delegates memory, pids and cpu; else reported or refused") {
  TestDaemon d;
  bool started = d.start({"--require-cgroup-limits", "on"});
  if (!started) {
    // This host cannot limit VMs through cgroup v2: the daemon refused,
    // saying why, and without the switch it starts and reports the same.
    auto log = d.log();
    CHECK(log.find("refusing to start (require_cgroup_limits = on)") != std::string::npos);
    TestDaemon lax;
    REQUIRE(lax.start());
    auto st = Client(lax.socket()).status();
    REQUIRE(st.ok());
    CHECK(st->host_limits.starts_with("no host-side VM limits: "));
    CHECK(lax.log().find(st->host_limits) != std::string::npos);
    auto text = run_command({SANDBOXCTL_BIN, "status", "--socket", lax.socket()});
    CHECK(text.out.find("host limits: " + st->host_limits) != std::string::npos);
    MESSAGE("SKIPPED: live per-VM cgroup limits: " << st->host_limits);
    return;
  }
  auto st = Client(d.socket()).status();
  REQUIRE(st.ok());
  CHECK(st->host_limits.starts_with("per-VM cgroups in "));
  auto running = std::async(std::launch::async, [&] {
    return Client(d.socket()).run(make_request(Language::python, "import time; x = bytearray(32 << 20); time.sleep(2)", 30'000));
  });
  auto until = Clock::now() + std::chrono::seconds(60);
  while (d.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(d.children().size() == 1);
  std::ifstream pc("/proc/" + std::to_string(d.children()[0]) + "/cgroup");
  std::string line, path;
  while (std::getline(pc, line))
    if (line.starts_with("0::")) path = line.substr(3);
  REQUIRE(path.find("/vms/vm-") != std::string::npos);
  std::string mount;
  std::ifstream mi("/proc/self/mountinfo");
  while (std::getline(mi, line))
    if (auto dash = line.find(" - cgroup2 "); dash != std::string::npos) {
      std::istringstream f(line);
      std::string x;
      for (int i = 0; i < 5 && f >> x; ++i) mount = x;
    }
  std::string dir = mount + path;
  auto read = [&](const std::string& f) {
    std::ifstream in(dir + "/" + f);
    std::string v;
    std::getline(in, v);
    return v;
  };
  CHECK(read("memory.max") == std::to_string((256ull + 192) << 20));
  CHECK(read("pids.max") == "128");
  auto r = running.get();
  REQUIRE(r.ok());
  CHECK(r->memory_peak_mb >= 32);
  REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(20)));
  CHECK_FALSE(fs::exists(dir));
}
