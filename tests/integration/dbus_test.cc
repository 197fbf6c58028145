// D-Bus interface against a private dbus-daemon started by the test.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "harness.h"

using namespace sandbox::test;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

// A message bus of our own, with a permissive policy: sandboxd's own
// uid-based authorization is what the tests look at.
class TestBus {
 public:
  TestBus() {
    char tmpl[] = "/tmp/sandboxd-bus.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0711);  // a second uid must reach the socket
    address_ = "unix:path=" + dir_ + "/bus.sock";
    std::ofstream(dir_ + "/bus.conf")
        << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
           " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
           "<busconfig><type>custom</type><listen>" << address_ << "</listen><auth>EXTERNAL</auth>\n"
           "<policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\n"
           "<allow send_type=\"method_call\"/><allow send_type=\"signal\"/><allow send_type=\"method_return\"/>"
           "<allow send_type=\"error\"/><allow receive_type=\"method_call\"/><allow receive_type=\"signal\"/>"
           "<allow receive_type=\"method_return\"/><allow receive_type=\"error\"/></policy></busconfig>\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      // Gone with this test process, however it ends, and holding none of
      // its descriptors (a test runner's lock among them).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 1), ::dup2(null, 2);
      ::close_range(3, ~0U, 0);
      ::execlp("dbus-daemon", "dbus-daemon", ("--config-file=" + dir_ + "/bus.conf").c_str(), "--nofork",
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && !fs::exists(dir_ + "/bus.sock"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::chmod((dir_ + "/bus.sock").c_str(), 0777);
  }
  ~TestBus() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    fs::remove_all(dir_);
  }
  const std::string& address() const { return address_; }

 private:
  std::string dir_, address_;
  pid_t pid_ = -1;
};

struct Fixture {
  TestBus bus;
  TestDaemon daemon;
  Fixture() { REQUIRE(daemon.start({"--dbus", bus.address()})); }
};

Fixture& fixture() {
  static Fixture* f = [] {
    auto* created = new Fixture();
    at_suite_end([created] { delete created; });
    return created;
  }();
  return *f;
}

CmdResult busctl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"busctl", "--address=" + fixture().bus.address()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, {}, std::chrono::seconds(120));
}

// The <interface name="org.sandboxd1.Manager"> block, one trimmed line each.
std::vector<std::string> interface_lines(const std::string& xml) {
  std::vector<std::string> out;
  auto start = xml.find("<interface name=\"org.sandboxd1.Manager\">");
  auto end = xml.find("</interface>", start);
  if (start == std::string::npos || end == std::string::npos) return out;
  std::istringstream in(xml.substr(start, end - start));
  std::string line;
  while (std::getline(in, line)) {
    line.erase(0, line.find_first_not_of(" \t"));
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

struct Bus {
  sd_bus* bus = nullptr;
  explicit Bus(const std::string& address) {
    sd_bus_new(&bus);
    sd_bus_set_address(bus, address.c_str());
    sd_bus_set_bus_client(bus, 1);
    REQUIRE(sd_bus_start(bus) >= 0);
  }
  ~Bus() { sd_bus_flush_close_unref(bus); }
};

}  // namespace

TEST_CASE("D-Bus: Run for each language through busctl") {
  auto py = busctl({"--json=short", "call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run",
                    "ssa{sv}", "python", "print(6*7)", "0"});
  CHECK(py.exit_code == 0);
  // stdout "42\n" as bytes
  CHECK(py.out.find("\"data\":[0,[52,50,10],[]") != std::string::npos);
  CHECK(py.out.find("\"accelerator\":{\"type\":\"s\",\"data\":\"tcg\"}") != std::string::npos);
  auto js = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run", "ssa{sv}",
                    "javascript", "console.log('js')", "0"});
  CHECK(js.exit_code == 0);
  CHECK(js.out.starts_with("iayaya{sv} 0 3 106 115 10 0 "));
  auto sh = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run", "ssa{sv}", "raw",
                    "echo $GREETING >&2; exit 4", "2", "env", "a{ss}", "1", "GREETING", "hi", "timeout_ms", "u",
                    "10000"});
  CHECK(sh.exit_code == 0);
  CHECK(sh.out.starts_with("iayaya{sv} 4 0 3 104 105 10 "));
}

TEST_CASE("D-Bus: sessions keep state across SessionExec, are listed, and end with CloseSession") {
  auto created = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "CreateSession", "sa{sv}",
                         "python", "3", "env", "a{ss}", "1", "BASE", "40", "expose_ports", "a(uu)", "1", "8000", "0",
                         "expose_unix", "au", "1", "9000"});
  REQUIRE_MESSAGE(created.exit_code == 0, created.err);
  REQUIRE(created.out.starts_with("s \""));
  std::string id = created.out.substr(3, created.out.find('"', 3) - 3);
  REQUIRE(!id.empty());
  auto exec = [&](const std::string& code) {
    return busctl({"--json=short", "call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SessionExec",
                   "ssa{sv}", id, code, "0"});
  };
  auto set = exec("import os\nx = int(os.environ['BASE']) + 2");
  CHECK_MESSAGE(set.exit_code == 0, set.err);
  auto get = exec("print(x)");
  CHECK_MESSAGE(get.exit_code == 0, get.err);
  CHECK(get.out.find("\"data\":[0,[52,50,10],[]") != std::string::npos);  // "42\n"
  CHECK(get.out.find("\"state_lost\":{\"type\":\"b\",\"data\":false}") != std::string::npos);
  // Both forms of exposed port: loopback TCP, and a Unix socket of the caller's.
  CHECK(get.out.find("\"exposed_ports\":{\"type\":\"s\",\"data\":\"[{\\\"internal\\\":8000,") != std::string::npos);
  CHECK(get.out.find("\\\"url\\\":\\\"http://127.0.0.1:") != std::string::npos);
  CHECK(get.out.find("{\\\"internal\\\":9000,\\\"external\\\":0,\\\"host\\\":\\\"unix\\\",\\\"url\\\":\\\"unix:/") !=
        std::string::npos);
  CHECK(get.out.find("\"network\":{\"type\":\"s\",\"data\":\"{\\\"connections\\\":0,") != std::string::npos);
  auto net = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SetSessionNetwork", "sasb", id,
                     "1", "example.org", "false"});
  CHECK_MESSAGE(net.exit_code == 0, net.err);
  auto off = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SetSessionNetwork", "sasb", id,
                     "0", "false"});
  CHECK_MESSAGE(off.exit_code == 0, off.err);
  auto bad = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SetSessionNetwork", "sasb", id,
                     "1", "10.0.0.1", "false"});
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("IP address") != std::string::npos);
  auto ls = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "ListSessions"});
  CHECK(ls.exit_code == 0);
  CHECK(ls.out.starts_with("a(ssuutt) 1 \"" + id + "\" \"python\" 256 "));
  auto closed = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "CloseSession", "s", id});
  CHECK_MESSAGE(closed.exit_code == 0, closed.err);
  auto after = exec("print(x)");
  CHECK(after.exit_code != 0);
  CHECK(after.err.find("closed") != std::string::npos);
  auto unknown = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SessionExec", "ssa{sv}",
                         "no-such-session", "1", "0"});
  CHECK(unknown.exit_code != 0);
  CHECK(unknown.err.find("no session 'no-such-session'") != std::string::npos);
  REQUIRE(fixture().daemon.wait_children_at_most(0, std::chrono::seconds(20)));
}

TEST_CASE("D-Bus: an oversized SessionExec is refused by the service; the session goes on") {
  Bus b(fixture().bus.address());
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(b.bus, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "CreateSession", &err,
                             &reply, "sa{sv}", "python", 0);
  REQUIRE_MESSAGE(r >= 0, (err.message ? err.message : ""));
  const char* id = nullptr;
  REQUIRE(sd_bus_message_read(reply, "s", &id) >= 0);
  std::string session = id;
  sd_bus_message_unref(reply);
  // 5 MiB of code: past the 1 MiB limit, and past what one agent frame holds.
  std::string big(5 << 20, '#');
  reply = nullptr;
  r = sd_bus_call_method(b.bus, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SessionExec", &err,
                         &reply, "ssa{sv}", session.c_str(), big.c_str(), 0);
  CHECK(r < 0);
  CHECK(std::string(err.name ? err.name : "") == "org.sandboxd1.Error.InvalidArgument");
  CHECK(std::string(err.message ? err.message : "").find("the limit is 1048576") != std::string::npos);
  sd_bus_error_free(&err);
  sd_bus_message_unref(reply);
  auto ok = busctl({"--json=short", "call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "SessionExec",
                    "ssa{sv}", session, "print(6*7)", "0"});
  CHECK_MESSAGE(ok.exit_code == 0, ok.err);
  CHECK(ok.out.find("\"data\":[0,[52,50,10],[]") != std::string::npos);
  CHECK(busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "CloseSession", "s", session})
            .exit_code == 0);
}

TEST_CASE("D-Bus: errors carry the taxonomy's names") {
  Bus b(fixture().bus.address());
  auto call = [&](const char* language, const char* key, uint32_t value) {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(b.bus, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run", &err, &reply,
                               "ssa{sv}", language, "print(1)", 1, key, "u", value);
    std::string name = r < 0 && err.name ? err.name : "";
    std::string message = r < 0 && err.message ? err.message : "";
    sd_bus_error_free(&err);
    sd_bus_message_unref(reply);
    return name + ": " + message;
  };
  CHECK(call("cobol", "timeout_ms", 1000) ==
        "org.sandboxd1.Error.InvalidArgument: unknown language 'cobol' (python, javascript, raw)");
  CHECK(call("python", "memory_mb", 64).starts_with("org.sandboxd1.Error.InvalidArgument: memory 64 MB is outside"));
  CHECK(call("python", "frobnicate", 1).starts_with("org.sandboxd1.Error.InvalidArgument: unknown option 'frobnicate'"));
  // Packages travel as an "as" option; a refused one names its entry.
  sd_bus_error err = SD_BUS_ERROR_NULL;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(b.bus, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run", &err, &reply,
                             "ssa{sv}", "python", "import mypkg", 1, "packages", "as", 2, "ok==1.0", "mypkg");
  CHECK(r < 0);
  CHECK(std::string(err.name ? err.name : "") == "org.sandboxd1.Error.PackageNotAllowed");
  CHECK(std::string(err.message ? err.message : "").find("package 'mypkg': not pinned") != std::string::npos);
  sd_bus_error_free(&err);
  sd_bus_message_unref(reply);
}

TEST_CASE("D-Bus: a caller whose uid is not allowed is refused") {
  if (::getuid() != 0) {
    MESSAGE("SKIPPED: needs root to call as a second uid");
    return;
  }
  auto r = run_command({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busctl",
                        "--address=" + fixture().bus.address(), "call", "org.sandboxd1", "/org/sandboxd1",
                        "org.sandboxd1.Manager", "Run", "ssa{sv}", "python", "print(1)", "0"});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("uid 65534 is not allowed to use sandboxd") != std::string::npos);
  CHECK(fixture().daemon.children().empty());
}

TEST_CASE("D-Bus: introspection matches the shipped interface file") {
  auto r = busctl({"introspect", "--xml-interface", "org.sandboxd1", "/org/sandboxd1"});
  REQUIRE(r.exit_code == 0);
  std::ifstream in(std::string(SANDBOXD_SOURCE_DIR) + "/dbus/org.sandboxd1.Manager.xml");
  std::stringstream shipped;
  shipped << in.rdbuf();
  auto live = interface_lines(r.out);
  REQUIRE(live.size() > 10);
  CHECK(live == interface_lines(shipped.str()));
}

TEST_CASE("D-Bus: properties report the daemon's state") {
  auto r = busctl({"get-property", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Accelerator",
                   "Pool", "MaxVMs", "HostLimits"});
  CHECK(r.exit_code == 0);
  auto st = sandbox::Client(fixture().daemon.socket()).status();
  REQUIRE(st.ok());
  CHECK(r.out.find("s \"" + st->host_limits + "\"") != std::string::npos);
  CHECK(r.out.find("s \"tcg\"") != std::string::npos);
  CHECK(r.out.find("a(suuutt) 3 \"python\"") != std::string::npos);
}

TEST_CASE("D-Bus: Metrics returns the Prometheus text the socket serves") {
  auto r = busctl({"--json=short", "call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Metrics"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("# TYPE sandboxd_runs_total counter") != std::string::npos);
  CHECK(r.out.find("sandboxd_run_phase_seconds_bucket") != std::string::npos);
}

TEST_CASE("D-Bus: streamed output signals reach the caller before the reply") {
  Bus b(fixture().bus.address());
  struct State {
    std::vector<std::string> events;
    std::string streamed;
    bool replied = false;
    std::string stdout_data;
  } st;
  REQUIRE(sd_bus_match_signal(
              b.bus, nullptr, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Output",
              [](sd_bus_message* m, void* u, sd_bus_error*) {
                auto* s = static_cast<State*>(u);
                uint64_t request = 0;
                const char* stream = nullptr;
                const void* data = nullptr;
                size_t n = 0;
                if (sd_bus_message_read(m, "ts", &request, &stream) < 0 ||
                    sd_bus_message_read_array(m, 'y', &data, &n) < 0)
                  return 0;
                if (request == 77 && std::string(stream) == "stdout") {
                  s->events.push_back("signal");
                  s->streamed.append(static_cast<const char*>(data), n);
                }
                return 0;
              },
              &st) >= 0);
  REQUIRE(sd_bus_call_method_async(
              b.bus, nullptr, "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run",
              [](sd_bus_message* m, void* u, sd_bus_error*) {
                auto* s = static_cast<State*>(u);
                s->events.push_back("reply");
                s->replied = true;
                int32_t code;
                const void* data = nullptr;
                size_t n = 0;
                if (!sd_bus_message_is_method_error(m, nullptr) && sd_bus_message_read(m, "i", &code) >= 0 &&
                    sd_bus_message_read_array(m, 'y', &data, &n) >= 0)
                  s->stdout_data.assign(static_cast<const char*>(data), n);
                return 0;
              },
              &st, "ssa{sv}", "python", "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')", 2,
              "stream", "b", 1, "request", "t", uint64_t{77}) >= 0);
  auto until = Clock::now() + std::chrono::seconds(120);
  while (!st.replied && Clock::now() < until) {
    if (sd_bus_process(b.bus, nullptr) > 0) continue;
    sd_bus_wait(b.bus, 200'000);
  }
  REQUIRE(st.replied);
  REQUIRE(st.events.size() >= 2);
  CHECK(st.events.front() == "signal");
  CHECK(st.events.back() == "reply");
  CHECK(st.streamed == st.stdout_data);
  CHECK(st.stdout_data == "first\nsecond\n");
}

TEST_CASE("D-Bus: without a bus the daemon serves the socket and says why") {
  TestDaemon d;
  REQUIRE(d.start({"--dbus", "unix:path=/nonexistent/bus.sock"}));
  CHECK(d.log().find("D-Bus unavailable") != std::string::npos);
  auto st = run_command({SANDBOXCTL_BIN, "status", "--socket", d.socket()});
  CHECK(st.exit_code == 0);
  CHECK(st.out.find("accelerator: tcg") != std::string::npos);
}

TEST_CASE("D-Bus: the shipped system bus policy loads") {
  char tmpl[] = "/tmp/sandboxd-policy.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/bus.conf") << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                                      " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                                      "<busconfig><type>custom</type><listen>unix:path="
                                   << dir << "/bus.sock</listen><auth>EXTERNAL</auth><include>"
                                   << SANDBOXD_SOURCE_DIR << "/dbus/org.sandboxd1.conf</include></busconfig>\n";
  // --print-address: the bus prints its address once its configuration is loaded.
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out[1], 1);
    ::close_range(3, ~0U, 0);
    ::execlp("dbus-daemon", "dbus-daemon", ("--config-file=" + dir + "/bus.conf").c_str(), "--nofork",
             "--print-address=1", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  char buf[256] = {};
  ssize_t n = ::read(out[0], buf, sizeof buf - 1);
  ::close(out[0]);
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  fs::remove_all(dir);
  CHECK(n > 0);
  CHECK(std::string(buf).starts_with("unix:path="));
}

// Last of the cases on the shared daemon: it takes no new work after this.
TEST_CASE("D-Bus: Drain takes the daemon out of rotation, as sandboxctl drain does") {
  auto before = busctl({"get-property", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Draining"});
  REQUIRE(before.exit_code == 0);
  CHECK(before.out == "b false\n");
  auto r = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Drain", "u", "60000"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.out == "b true\n");
  auto after = busctl({"get-property", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Draining"});
  CHECK(after.out == "b true\n");
  auto refused = busctl({"call", "org.sandboxd1", "/org/sandboxd1", "org.sandboxd1.Manager", "Run", "ssa{sv}", "python",
                         "print(1)", "0"});
  CHECK(refused.exit_code != 0);
  CHECK(refused.err.find("draining") != std::string::npos);
}
