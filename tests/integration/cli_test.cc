// sandboxctl as a user meets it: options before the verb, many sources
// within the daemon's per-user limit, one JSON object per source, notices
// on lines of their own, truncated listings said so, and a Ctrl-C that
// really stops a session exec.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <fstream>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using Clock = std::chrono::steady_clock;

namespace {

CmdResult ctl(const std::vector<std::string>& args, std::chrono::seconds limit = std::chrono::seconds(180)) {
  std::vector<std::string> argv = {SANDBOXCTL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, {}, limit);
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// Closes a test's session whatever the test's outcome: the shared daemon
// must be left with no VM.
struct Closer {
  std::optional<Session>& s;
  ~Closer() {
    if (s) (void)s->close();
  }
};

}  // namespace

TEST_CASE("cli: --socket, --json and -q work before the verb as after it") {
  auto& d = TestDaemon::shared();
  auto r = ctl({"--socket", d.socket(), "--json", "run", "-l", "raw", "echo hi"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\"stdout\":\"hi\\n\"") != std::string::npos);
  CHECK(r.out.find("\"language\":\"raw\"") != std::string::npos);
  auto st = ctl({"--socket=" + d.socket(), "status"});
  CHECK(st.exit_code == 0);
  CHECK(st.out.find("accelerator:") != std::string::npos);
  auto bad = ctl({"--frobnicate", "status"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("unknown option '--frobnicate'") != std::string::npos);
}

TEST_CASE("cli: ten sources at the default concurrency all run within a per-user limit of three") {
  TestDaemon d;
  REQUIRE(d.start({"--max-runs-per-uid", "3"}));
  std::vector<std::string> args = {"run", "--socket", d.socket(), "-q", "-l", "raw"};
  for (int i = 0; i < 10; ++i) args.push_back("echo source" + std::to_string(i));
  auto r = ctl(args, std::chrono::seconds(600));
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  for (int i = 0; i < 10; ++i) CHECK(r.out.find("source" + std::to_string(i) + "\n") != std::string::npos);
  CHECK(r.err.find("capacity") == std::string::npos);
  // The CLI never asked for more than the daemon takes from one user.
  CHECK(d.log().find("per-user limit") == std::string::npos);
}

TEST_CASE("cli: notices start on a line of their own") {
  auto& d = TestDaemon::shared();
  // 200 KB of stderr without a final newline: truncated to 100 KB.
  auto r = ctl({"run", "--socket", d.socket(), "import sys; sys.stderr.write('e' * 200000)"});
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("e\nsandboxctl: output truncated") != std::string::npos);
}

TEST_CASE("cli: a run with a missing download prints one JSON object, with the error") {
  auto& d = TestDaemon::shared();
  std::string dir = std::filesystem::temp_directory_path() / "sandboxd-cli-dl";
  std::filesystem::create_directories(dir);
  auto r = ctl({"run", "--socket", d.socket(), "--json", "--download", "nope.txt:" + dir + "/nope.txt", "print(1)"});
  CHECK(r.exit_code == 125);
  CHECK(count(r.out, "\n") == 1);
  CHECK(count(r.out, "\"source\"") == 1);
  CHECK(r.out.find("\"stdout\":\"1\\n\"") != std::string::npos);
  CHECK(r.out.find("\"error\":{\"code\":\"not_found\"") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/nope.txt"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("cli: session exec --json names the session's own language; ls says when it is truncated") {
  auto& d = TestDaemon::shared();
  auto created = ctl({"session", "create", "--socket", d.socket(), "-l", "raw"});
  REQUIRE(created.exit_code == 0);
  std::string id = created.out.substr(0, created.out.find('\n'));
  auto r = ctl({"session", "exec", id, "--socket", d.socket(), "--json", "mkdir many; cd many; touch $(seq 1 1001); echo made"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\"language\":\"raw\"") != std::string::npos);
  auto ls = ctl({"session", "ls", id, "many", "--socket", d.socket()});
  CHECK(ls.exit_code == 0);
  CHECK(count(ls.out, "\n") == 1000);
  CHECK(ls.err.find("only the first 1000 entries are listed") != std::string::npos);
  auto json = ctl({"--json", "--socket", d.socket(), "session", "ls", id, "many"});
  CHECK(json.out.find("\"truncated\":true") != std::string::npos);
  auto listing = Client(d.socket()).session(id).list_files("many");
  REQUIRE(listing.ok());
  CHECK(listing->truncated);
  CHECK(listing->entries.size() == 1000);
  CHECK(ctl({"session", "close", id, "--socket", d.socket()}).exit_code == 0);
}

TEST_CASE("cli: Ctrl-C on session exec stops the exec; the session goes on at once") {
  auto& d = TestDaemon::shared();
  Client c(d.socket());
  auto created = c.create_session({});
  REQUIRE_MESSAGE(created.ok(), created.error().describe());
  std::optional<Session> s = *created;
  Closer closer{s};
  REQUIRE(s->exec("x = 'kept'").ok());
  // An exec that would run for two minutes, from a CLI process we then
  // interrupt once its output shows the loop has begun.
  int out[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::execl(SANDBOXCTL_BIN, SANDBOXCTL_BIN, "session", "exec", s->id().c_str(), "--socket", d.socket().c_str(), "-t",
            "120", "print('looping', flush=True)\nwhile True: pass", nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string seen;
  auto until = Clock::now() + std::chrono::seconds(120);
  while (seen.find("looping") == std::string::npos && Clock::now() < until) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[256];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  CHECK(seen.starts_with("looping"));
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  auto start = Clock::now();
  auto next = s->exec("print(x)");
  auto waited = Clock::now() - start;
  REQUIRE_MESSAGE(next.ok(), next.error().describe());
  CHECK(next->stdout_data == "kept\n");
  // Without the cancel it would have waited for the first exec's two minutes.
  CHECK(waited < std::chrono::seconds(100));
  CHECK(d.log().find("(caller gone)") != std::string::npos);
}

TEST_CASE("cli: a write that fails in the guest leaves no directories behind") {
  auto& d = TestDaemon::shared();
  auto created = Client(d.socket()).create_session({});
  REQUIRE(created.ok());
  std::optional<Session> s = *created;
  Closer closer{s};
  // Fill the home to within 4 MB of full, then a write that needs new
  // directories fails.
  // In 1 MB writes: one bytes object the size of the home would itself
  // take as much memory again as the files.
  auto fill = s->exec("import os\nst = os.statvfs('.')\nleft = st.f_bavail * st.f_frsize - (4 << 20)\n"
                      "with open('fill.bin', 'wb') as f:\n"
                      "    while left > 0:\n"
                      "        left -= f.write(b'x' * min(left, 1 << 20))");
  REQUIRE(fill.ok());
  REQUIRE(fill->exit_code == 0);
  std::string noise(8 << 20, '\0');
  uint32_t v = 7;
  for (auto& ch : noise) ch = static_cast<char>(v = v * 1103515245 + 12345, v >> 16);
  auto w = s->write_file("new/deeper/f.bin", noise);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == ErrorCode::capacity);
  auto home = s->list_files();
  REQUIRE(home.ok());
  for (const auto& e : home->entries) CHECK(e.name != "new");
}

TEST_CASE("cli: a download writes through no symlink and truncates nothing it did not create") {
  auto& d = TestDaemon::shared();
  auto created = Client(d.socket()).create_session({});
  REQUIRE(created.ok());
  std::optional<Session> s = *created;
  Closer closer{s};
  REQUIRE(s->write_file("out.txt", "fresh").ok());
  std::string dir = std::filesystem::temp_directory_path() / "sandboxd-cli-get";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/victim") << "keep me";
  // The temp names a download used to take, planted as links to a victim.
  std::filesystem::create_symlink(dir + "/victim", dir + "/out.txt.sandboxctl-part");
  auto r = ctl({"session", "get", s->id(), "out.txt", dir + "/out.txt", "--socket", d.socket()});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  std::ifstream got(dir + "/out.txt"), victim(dir + "/victim");
  std::string a, b;
  std::getline(got, a);
  std::getline(victim, b);
  CHECK(a == "fresh");
  CHECK(b == "keep me");
  CHECK(std::filesystem::is_symlink(dir + "/out.txt.sandboxctl-part"));
  std::filesystem::remove_all(dir);
}
