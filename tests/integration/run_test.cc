// Runs real code in real VMs through sandboxctl and libsandbox.
#include <doctest/doctest.h>
#include <pwd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using Clock = std::chrono::steady_clock;

namespace {

CmdResult ctl(std::vector<std::string> args, const std::string& input = {}) {
  std::vector<std::string> argv = {SANDBOXCTL_BIN, "run", "--socket", TestDaemon::shared().socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, input, std::chrono::seconds(120));
}

Client client() { return Client(TestDaemon::shared().socket()); }

RunRequest req(Language l, std::string code, int timeout_ms = 30'000) {
  return make_request(l, std::move(code), timeout_ms);
}

}  // namespace

TEST_CASE("sandboxctl runs Python and prints its output") {
  auto r = ctl({"print(\"Hello from sandbox\")"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "Hello from sandbox\n");
  CHECK(r.err.empty());
}

TEST_CASE("sandboxctl runs JavaScript") {
  auto r = ctl({"-l", "javascript", "console.log(6*7)"});
  CHECK(r.exit_code == 0);
  CHECK(r.out == "42\n");
}

TEST_CASE("sandboxctl runs shell in the guest kernel with the caller's environment") {
  auto r = ctl({"-l", "raw", "-e", "GREETING=hi there", "echo $((6*7)); uname -r; echo \"$GREETING\"; id -u"});
  CHECK(r.exit_code == 0);
  std::istringstream lines(r.out);
  std::string answer, kernel, greeting, uid;
  std::getline(lines, answer), std::getline(lines, kernel), std::getline(lines, greeting), std::getline(lines, uid);
  CHECK(answer == "42");
  // The images' kernel inside the guest, whatever the host runs.
  auto images = client().images();
  REQUIRE(images.ok());
  CHECK(kernel == images->kernel_release);
  CHECK(greeting == "hi there");
  CHECK(uid != "0");
}

TEST_CASE("code from stdin, and sandboxctl exits with the code's status") {
  auto r = ctl({"-"}, "import sys; print(\"x\"); sys.exit(3)\n");
  CHECK(r.exit_code == 3);
  CHECK(r.out == "x\n");
}

TEST_CASE("several files run concurrently, language from the extension") {
  auto dir = TestDaemon::shared().dir();
  std::ofstream(dir + "/script.py") << "import sys\nprint('python', sys.version_info.major)\n";
  std::ofstream(dir + "/app.js") << "console.log('node', typeof process.version)\n";
  auto start = Clock::now();
  auto r = ctl({"-q", dir + "/script.py", dir + "/app.js"});
  auto elapsed = Clock::now() - start;
  std::filesystem::remove(dir + "/script.py");
  std::filesystem::remove(dir + "/app.js");
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("python 3\n") != std::string::npos);
  CHECK(r.out.find("node string\n") != std::string::npos);
  MESSAGE("two sources took " << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms");
}

TEST_CASE("--json prints one object with the result fields") {
  auto r = ctl({"--json", "print(1)"});
  CHECK(r.exit_code == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  for (const char* field : {"\"stdout\":\"1\\n\"", "\"stderr\":\"\"", "\"exit_code\":0", "\"signal\":0",
                            "\"timed_out\":false", "\"stdout_truncated\":false", "\"execution_time_ms\":",
                            "\"timing\":{\"setup_ms\":", "\"boot_ms\":", "\"execute_ms\":", "\"total_ms\":",
                            "\"warm_pool_hit\":false", "\"accelerator\":\"tcg\""})
    CHECK_MESSAGE(r.out.find(field) != std::string::npos, field << " in " << r.out);
}

TEST_CASE("stderr and exit codes are reported separately") {
  auto r = client().run(req(Language::python, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(42)"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "to out\n");
  CHECK(r->stderr_data == "to err\n");
  CHECK(r->exit_code == 42);
  CHECK(r->signal == 0);
  CHECK_FALSE(r->timed_out);
  CHECK(r->accelerator == "tcg");
  CHECK(r->timing.boot_ms > 0);
  CHECK(r->timing.total_ms >= r->timing.boot_ms);
}

TEST_CASE("a process killed by a signal reports the signal") {
  auto r = client().run(req(Language::raw, "echo started; kill -9 $$"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "started\n");
  CHECK(r->signal == 9);
  CHECK(r->exit_code == 137);
  CHECK_FALSE(r->timed_out);
}

TEST_CASE("output streams while the code runs") {
  std::mutex mu;
  std::vector<std::pair<Clock::time_point, std::string>> chunks;
  auto r = client().run(req(Language::python, "import time\nprint('first')\ntime.sleep(3)\nprint('second')"),
                        [&](Stream s, std::string_view d) {
                          std::lock_guard l(mu);
                          if (s == Stream::out) chunks.emplace_back(Clock::now(), std::string(d));
                        });
  auto finished = Clock::now();
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  REQUIRE(chunks.size() >= 2);
  // "first\n" was complete on our side while the program still slept.
  std::string joined;
  Clock::time_point first_seen{};
  for (auto& c : chunks) {
    joined += c.second;
    if (first_seen == Clock::time_point{} && joined.starts_with("first\n")) first_seen = c.first;
  }
  REQUIRE(first_seen != Clock::time_point{});
  // The program slept 3 s after it: the chunk came well before the end.
  CHECK(finished - first_seen >= std::chrono::milliseconds(1000));
  CHECK(joined == r->stdout_data);
  CHECK(r->stdout_data == "first\nsecond\n");
}

TEST_CASE("a timeout kills a busy loop and keeps the output written before it") {
  // Timeouts count from the moment the interpreter has the code, so a
  // few seconds are plenty on any host.
  auto r = client().run(req(Language::python, "print('before', flush=True)\nwhile True: pass", 3000));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->timed_out);
  CHECK(r->stdout_data == "before\n");
  CHECK(r->signal != 0);
  auto c = ctl({"-l", "raw", "-t", "2", "echo tick; sleep 30"});
  CHECK(c.exit_code == 124);
  CHECK(c.out == "tick\n");
  CHECK(c.err.find("timed out") != std::string::npos);
}

TEST_CASE("a SIGTERM-proof process tree is still killed at the timeout") {
  // The shell ignores TERM and leaves a background child that ignores it too.
  auto r = client().run(req(Language::raw, "trap '' TERM; (trap '' TERM; sleep 100) & echo up; sleep 100", 3000));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->timed_out);
  CHECK(r->stdout_data == "up\n");
  CHECK(r->signal == 9);
}

TEST_CASE("a client that disconnects mid-run leaves no QEMU process") {
  auto& d = TestDaemon::shared();
  REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(15)));
  RawClient raw(d.socket());
  REQUIRE(raw.connected());
  REQUIRE(raw.send(proto::Run{1, {Language::raw, "sleep 60", {}, std::chrono::seconds(60), 256}}));
  auto until = Clock::now() + std::chrono::seconds(30);
  while (d.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(d.children().size() == 1);
  // Wait until the VM is running the code, then vanish.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  raw.close();
  CHECK(d.wait_children_at_most(0, std::chrono::seconds(10)));
  CHECK(d.log().find("cancelled: caller went away") != std::string::npos);
}

TEST_CASE("binary output survives unchanged") {
  auto r = client().run(req(Language::python, "import sys\nsys.stdout.buffer.write(bytes(range(256)))"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  CHECK(r->stdout_data == all);
}

extern "C" int c_api_check(const char* socket_path, char* why, size_t why_len);

TEST_CASE("the C API runs code and reports typed errors") {
  char why[512] = "";
  CHECK_MESSAGE(c_api_check(TestDaemon::shared().socket().c_str(), why, sizeof why) == 0, why);
}

extern "C" int c_api_session_check(const char* socket_path, char* why, size_t why_len);

TEST_CASE("the C API drives sessions: state, files both ways, a handle by id, typed errors, close") {
  char why[512] = "";
  CHECK_MESSAGE(c_api_session_check(TestDaemon::shared().socket().c_str(), why, sizeof why) == 0, why);
}

TEST_CASE("output past the caps is truncated and flagged while the run completes") {
  auto r = client().run(req(Language::python,
                            "import sys\n"
                            "sys.stdout.write('o' * (2 << 20))\n"
                            "sys.stderr.write('e' * (200 << 10))\n"
                            "sys.stdout.flush(); sys.stderr.flush()\n"
                            "sys.exit(7)\n"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->exit_code == 7);  // the program ran to its end
  CHECK(r->stdout_truncated);
  CHECK(r->stderr_truncated);
  CHECK(r->stdout_data == std::string(1 << 20, 'o'));
  CHECK(r->stderr_data == std::string(100 << 10, 'e'));
}

TEST_CASE("a SIGTERM handler runs at the timeout and its output is kept") {
  auto r = client().run(req(Language::python,
                            "import signal, sys, time\n"
                            "def bye(*_):\n"
                            "    print('got TERM', flush=True); sys.exit(3)\n"
                            "signal.signal(signal.SIGTERM, bye)\n"
                            "print('waiting', flush=True)\n"
                            "time.sleep(60)\n",
                            3000));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->timed_out);
  CHECK(r->stdout_data == "waiting\ngot TERM\n");
  CHECK(r->exit_code == 3);
  CHECK(r->signal == 0);
}

TEST_CASE("environment variables are a real process environment") {
  RunRequest r = req(Language::python,
                     "import os\n"
                     "env = open('/proc/self/environ','rb').read().split(b'\\0')\n"
                     "print(os.environ['V0'], os.environ['V99'], b'V42=value 42' in env, len([e for e in env if e.startswith(b'V')]))\n");
  for (int i = 0; i < 100; ++i) r.env.emplace_back("V" + std::to_string(i), "value " + std::to_string(i));
  auto res = client().run(r);
  REQUIRE_MESSAGE(res.ok(), res.error().describe());
  CHECK(res->stdout_data == "value 0 value 99 True 100\n");
}

TEST_CASE("results carry host-measured CPU time and memory") {
  // The monotonic clock, as the agent's: the wall clock may be stepped.
  auto r = client().run(
      req(Language::python, "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1: pass\n"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  // An interpreter that was still starting at hand-over runs the code as
  // soon as it is ready; the agent's clock starts when it reads that "ready"
  // line, which on a loaded host comes a few milliseconds later.
  CHECK(r->execution_time_ms >= 900);
  CHECK(r->cpu_time_ms >= 500);
  CHECK(r->memory_peak_mb > 0);
  CHECK(r->timing.execute_ms >= r->execution_time_ms);
}

TEST_CASE("each QEMU runs as qemu-vm with no capabilities, its own seccomp filter and namespaces, and only its fds") {
  auto& d = TestDaemon::shared();
  REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(15)));
  auto running = std::async(std::launch::async, [&] { return client().run(req(Language::raw, "sleep 4", 20'000)); });
  auto until = Clock::now() + std::chrono::seconds(30);
  while (d.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(d.children().size() == 1);
  std::string q = "/proc/" + std::to_string(d.children()[0]);
  std::ifstream status(q + "/status");
  std::map<std::string, std::string> st;
  std::string line;
  while (std::getline(status, line)) {
    auto colon = line.find(':');
    auto v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    v.erase(v.find_last_not_of(" \t") + 1);
    st[line.substr(0, colon)] = v;
  }
  CHECK(st["NoNewPrivs"] == "1");
  CHECK(st["Seccomp"] == "2");
  std::string self = "/proc/" + std::to_string(d.pid());
  if (::geteuid() == 0) {
    passwd* pw = ::getpwnam("qemu-vm");
    REQUIRE_MESSAGE(pw, "user qemu-vm missing: setup.sh creates it with systemd-sysusers");
    auto id = std::to_string(pw->pw_uid), gid = std::to_string(pw->pw_gid);
    CHECK(st["Uid"] == id + "\t" + id + "\t" + id + "\t" + id);
    CHECK(st["Gid"] == gid + "\t" + gid + "\t" + gid + "\t" + gid);
    CHECK(st["CapEff"] == "0000000000000000");
    CHECK(st["CapPrm"] == "0000000000000000");
    CHECK(st["CapAmb"] == "0000000000000000");
    for (const char* ns : {"net", "mnt", "pid", "ipc", "uts"})
      CHECK_MESSAGE(std::filesystem::read_symlink(q + "/ns/" + ns) != std::filesystem::read_symlink(self + "/ns/" + ns),
                    ns << " namespace shared with the daemon");
    // QEMU is PID 1 of its namespace: it sees no other process.
    std::ifstream qs(q + "/status");
    while (std::getline(qs, line))
      if (line.starts_with("NSpid:")) CHECK(line.ends_with("\t1"));
  } else {
    MESSAGE("SKIPPED: the user switch and namespaces need a root daemon");
  }
  // Its descriptors: the console pipe, the agent socket, the images and
  // what QEMU made itself. No socket of the daemon's (its end of each
  // channel, the control socket, connections) and no file it did not pass.
  std::set<std::string> daemon_sockets;
  for (const auto& e : std::filesystem::directory_iterator(self + "/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (target.starts_with("socket:")) daemon_sockets.insert(target);
  }
  auto images = std::filesystem::canonical(images_dir()).string();
  auto fds = [&] {
    std::map<std::string, std::string> out;  // number -> target
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(q + "/fd", ec))
      out[e.path().filename().string()] = std::filesystem::read_symlink(e.path(), ec).string();
    return out;
  };
  auto first = fds();
  int sockets = 0;
  std::map<std::string, std::string> unexpected;
  for (const auto& [n, target] : first) {
    CHECK_MESSAGE(daemon_sockets.count(target) == 0, "QEMU shares a socket with the daemon: " << target);
    sockets += target.starts_with("socket:");
    if (target.starts_with("/") &&
        !(target == "/dev/null" || target.starts_with(images + "/") || target.starts_with("/memfd:")))
      unexpected[n] = target;
  }
  // QEMU, still starting, may hold a file it opened itself for a moment
  // (/sys/devices/system/cpu/possible, read once): only one that stays
  // open counts.
  if (!unexpected.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto again = fds();
    for (const auto& [n, target] : unexpected)
      CHECK_MESSAGE((again.count(n) == 0 || again[n] != target), "unexpected file in QEMU: " << target);
  }
  CHECK(sockets == 2);  // the agent channel and the network channel
  auto r = running.get();
  REQUIRE(r.ok());
}

TEST_CASE("a run answers as soon as its exit is done, with everything an exit does done first") {
  // Python: non-daemon threads joined, atexit handlers run, exit status kept.
  auto py = client().run(req(Language::python,
                             "import atexit, sys, threading, time\n"
                             "atexit.register(lambda: print('atexit', flush=True))\n"
                             "threading.Thread(target=lambda: (time.sleep(0.5), print('thread', flush=True))).start()\n"
                             "print('main', flush=True)\n"
                             "sys.exit(4)\n"));
  REQUIRE_MESSAGE(py.ok(), py.error().describe());
  CHECK(py->stdout_data == "main\nthread\natexit\n");
  CHECK(py->exit_code == 4);
  CHECK(py->signal == 0);
  // Node: the event loop drains, 'exit' listeners run, process.exitCode is the status.
  auto js = client().run(req(Language::javascript,
                             "setTimeout(() => console.log('timer'), 300);\n"
                             "process.on('exit', (c) => console.log('exit', c));\n"
                             "process.exitCode = 3;\n"));
  REQUIRE_MESSAGE(js.ok(), js.error().describe());
  CHECK(js->stdout_data == "timer\nexit 3\n");
  CHECK(js->exit_code == 3);
  // os._exit skips all of that, as it does anywhere.
  auto hard = client().run(req(Language::python,
                               "import atexit, os\natexit.register(lambda: print('never'))\nprint('x', flush=True)\n"
                               "os._exit(9)\n"));
  REQUIRE_MESSAGE(hard.ok(), hard.error().describe());
  CHECK(hard->stdout_data == "x\n");
  CHECK(hard->exit_code == 9);
  // Processes the code left behind do not outlive its answer.
  auto bg = client().run(req(Language::python,
                             "import subprocess\nsubprocess.Popen(['sleep', '100'])\nprint('left one', flush=True)\n"));
  REQUIRE_MESSAGE(bg.ok(), bg.error().describe());
  CHECK(bg->stdout_data == "left one\n");
  CHECK(bg->exit_code == 0);
}
