// Bad input at every entry point: a clear error or a closed connection,
// never a crash, and nothing left behind.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/framing.h"
#include <sandbox/limits.h>
#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;

namespace {

CmdResult ctl(std::vector<std::string> args, const std::string& input = {}) {
  std::vector<std::string> argv = {SANDBOXCTL_BIN, "run", "--socket", TestDaemon::shared().socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, input, std::chrono::seconds(60));
}

// Sends one raw request and returns the daemon's error reply.
proto::ErrorReply raw_error(const proto::Run& request) {
  RawClient raw(TestDaemon::shared().socket());
  REQUIRE(raw.connected());
  REQUIRE(raw.send(request));
  auto m = raw.receive(std::chrono::seconds(10));
  REQUIRE(m.has_value());
  REQUIRE(std::holds_alternative<proto::ErrorReply>(*m));
  return std::get<proto::ErrorReply>(*m);
}

proto::Run good() { return proto::Run{5, {Language::python, "print(1)", {}, std::chrono::milliseconds(10'000), 256}}; }

// The daemon still serves a real run after whatever a test threw at it.
void daemon_still_works() {
  auto r = Client(TestDaemon::shared().socket()).run(RunRequest{Language::raw, "echo alive", {}, std::chrono::seconds(30), 256});
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "alive\n");
}

}  // namespace

TEST_CASE("the daemon refuses invalid requests that a client library would not send") {
  auto& d = TestDaemon::shared();
  auto r = good();
  r.request.code = "";
  auto e = raw_error(r);
  CHECK(e.id == 5);
  CHECK(e.code == ErrorCode::invalid_argument);
  CHECK(e.message == "code is empty");
  // Whitespace-only code and code with a NUL byte, for every language.
  for (auto lang : {Language::python, Language::javascript, Language::raw}) {
    r = good();
    r.request.language = lang;
    r.request.code = " \n\t ";
    CHECK(raw_error(r).message == "code is only white space");
    r.request.code = std::string("echo a\0echo b", 13);
    CHECK(raw_error(r).message == "code contains a NUL byte");
  }

  r = good();
  r.request.timeout = std::chrono::milliseconds(301'000);
  CHECK(raw_error(r).message.find("timeout 301000 ms is outside") != std::string::npos);
  r = good();
  r.request.memory_mb = 64;
  CHECK(raw_error(r).message.find("memory 64 MB is outside") != std::string::npos);
  // Refused by class: the loader, interpreter start-up, shell hooks, PATH.
  for (const char* name : {"LD_PRELOAD", "LD_AUDIT", "PYTHONHOME", "NODE_PATH", "PROMPT_COMMAND", "SHELLOPTS", "PS4",
                           "IFS", "PATH", "HOME"}) {
    r = good();
    r.request.env = {{name, "/tmp/x"}};
    CHECK_MESSAGE(raw_error(r).message.find("'" + std::string(name) + "' is not allowed") != std::string::npos, name);
  }
  r = good();
  r.request.code.assign(limits::kMaxCodeBytes + 1, '#');
  auto big = raw_error(r);
  CHECK(big.code == ErrorCode::invalid_argument);
  CHECK(big.message.find("longer than") != std::string::npos);
  CHECK(d.children().empty());
}

TEST_CASE("malformed and oversized frames close the connection and nothing else") {
  auto& d = TestDaemon::shared();
  {
    // Not msgpack at all: an error frame, then the connection closes.
    RawClient raw(d.socket());
    REQUIRE(raw.send_bytes(frame("\xc1\xc1\xc1 garbage")));
    auto m = raw.receive(std::chrono::seconds(5));
    REQUIRE(m.has_value());
    CHECK(std::get<proto::ErrorReply>(*m).code == ErrorCode::invalid_argument);
    bool closed = false;
    CHECK_FALSE(raw.receive(std::chrono::seconds(5), &closed).has_value());
    CHECK(closed);
  }
  {
    // A header announcing 4 GiB.
    RawClient raw(d.socket());
    REQUIRE(raw.send_bytes(std::string("\xff\xff\xff\xff", 4)));
    auto m = raw.receive(std::chrono::seconds(5));
    REQUIRE(m.has_value());
    CHECK(std::get<proto::ErrorReply>(*m).message.find("exceeds the limit") != std::string::npos);
  }
  {
    // An unknown language and a message type a client may not send.
    RawClient raw(d.socket());
    REQUIRE(raw.send(proto::Hello{1, "x"}));
    auto m = raw.receive(std::chrono::seconds(5));
    REQUIRE(m.has_value());
    CHECK(std::get<proto::ErrorReply>(*m).message.find("only run, session, file, status, snapshot, image, layer, metrics and drain requests") !=
          std::string::npos);
  }
  {
    // Half a frame, then the client vanishes.
    RawClient raw(d.socket());
    REQUIRE(raw.send_bytes(frame(proto::encode(good())).substr(0, 10)));
  }
  daemon_still_works();
}

TEST_CASE("sandboxctl reports bad usage clearly") {
  auto r = ctl({"-l", "cobol", "x"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown language 'cobol'") != std::string::npos);
  r = ctl({"-c", ""});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("invalid_argument: code is empty") != std::string::npos);
  r = ctl({"-t", "0", "print(1)"});
  CHECK(r.exit_code == 2);
  r = ctl({"-t", "301", "print(1)"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("outside") != std::string::npos);
  r = ctl({"-m", "4096", "print(1)"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("memory 4096 MB") != std::string::npos);
  r = ctl({"-e", "NODE_OPTIONS=--require=x", "print(1)"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("not allowed") != std::string::npos);
  r = ctl({});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("nothing to run") != std::string::npos);
  r = ctl({"--json", "-m", "64", "print(1)"});
  CHECK(r.exit_code == 2);
  CHECK(r.out.find("\"error\":{\"code\":\"invalid_argument\"") != std::string::npos);
  auto big = std::string(limits::kMaxCodeBytes + 10, '#');
  r = ctl({"-"}, big);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("limit is 1048576") != std::string::npos);
}

TEST_CASE("a daemon that is not there is a communication error") {
  auto r = run_command({SANDBOXCTL_BIN, "run", "--socket", "/nonexistent/sandboxd.sock", "print(1)"});
  CHECK(r.exit_code == 125);
  CHECK(r.err.find("communication") != std::string::npos);
  CHECK(r.err.find("is sandboxd running?") != std::string::npos);
}

TEST_CASE("a uid that is not allowed gets permission_denied") {
  if (::getuid() != 0) {
    MESSAGE("SKIPPED: needs root to act as a second uid");
    return;
  }
  auto& d = TestDaemon::shared();
  // Let the socket's mode admit everyone so the peer-credential check decides.
  REQUIRE(::chmod(d.socket().c_str(), 0666) == 0);
  REQUIRE(::chmod(d.dir().c_str(), 0711) == 0);
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pfd[0]);
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    auto r = Client(d.socket()).run(RunRequest{Language::python, "print(1)", {}, std::chrono::seconds(10), 256});
    std::string msg = r.ok() ? "ran" : std::string(error_code_name(r.error().code)) + ": " + r.error().message;
    (void)!::write(pfd[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string got = read_all(pfd[0]);
  ::close(pfd[0]);
  int status;
  ::waitpid(pid, &status, 0);
  ::chmod(d.socket().c_str(), 0660);
  ::chmod(d.dir().c_str(), 0700);
  CHECK(got == "permission_denied: uid 65534 is not allowed to use sandboxd");
  CHECK(d.children().empty());
}

TEST_CASE("a corrupted image stops the daemon at start-up") {
  // A copy of the manifest whose rootfs hash is wrong, over the real files.
  char tmpl[] = "/tmp/sandboxd-images.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::ifstream in(images_dir() + "/manifest");
  std::ofstream out(dir + "/manifest");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" rootfs ") != std::string::npos) line[0] = line[0] == '0' ? '1' : '0';
    out << line << "\n";
  }
  out.close();
  for (auto f : {"vmlinux", "initramfs.cpio", "rootfs.erofs", "packages"})
    std::filesystem::create_symlink(std::filesystem::canonical(images_dir() + "/" + f), dir + "/" + f);
  TestDaemon bad;
  CHECK_FALSE(bad.start({}, dir));
  CHECK(bad.log().find("image_corrupt") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("an unknown config key stops the daemon with its name") {
  auto r = run_command({SANDBOXD_BIN, "--config", "/dev/null", "--no-such-key", "1"}, {}, std::chrono::seconds(10));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown key 'no_such_key'") != std::string::npos);
}

TEST_CASE("a VM that cannot boot is a vm_boot_failed error, end to end") {
  // /bin/false stands in for a QEMU that dies at once.
  TestDaemon broken;
  REQUIRE(broken.start({"--qemu", "/bin/false"}));
  auto r = run_command({SANDBOXCTL_BIN, "run", "--socket", broken.socket(), "--json", "print(1)"});
  CHECK(r.exit_code == 125);
  CHECK(r.out.find("\"code\":\"vm_boot_failed\"") != std::string::npos);
  CHECK(r.out.find("\"retryable\":true") != std::string::npos);
  auto plain = run_command({SANDBOXCTL_BIN, "run", "--socket", broken.socket(), "print(1)"});
  CHECK(plain.exit_code == 125);
  CHECK(plain.err.find("sandboxctl: vm_boot_failed: QEMU exited with status 1 during boot") != std::string::npos);
  CHECK(broken.children().empty());
  CHECK(broken.log().find("retrying") != std::string::npos);
}
