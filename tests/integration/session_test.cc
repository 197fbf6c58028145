// Sessions: state across execs, crash and timeout semantics, files, paths,
// ownership, limits and idle timeout. The language sessions are shared by
// the cases of this file (a boot each) and closed by the last one.
#include <doctest/doctest.h>
#include <grp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "common/files.h"
#include "common/framing.h"
#include <sandbox/limits.h>
#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using Clock = std::chrono::steady_clock;

namespace {

Client client() { return Client(TestDaemon::shared().socket()); }

Session& shared_session(Language language) {
  static std::map<Language, std::unique_ptr<Session>> sessions;
  auto& s = sessions[language];
  if (!s) {
    SessionOptions o;
    o.language = language;
    auto created = client().create_session(o);
    REQUIRE_MESSAGE(created.ok(), created.error().describe());
    s = std::make_unique<Session>(*created);
    static bool registered = false;
    if (!registered) {
      registered = true;
      at_suite_end([] {
        for (auto& [l, sess] : sessions)
          if (sess) (void)sess->close();
      });
    }
  }
  return *s;
}

RunResult exec_ok(const Session& s, std::string_view code, int timeout_ms = 0) {
  auto r = s.exec(code, {}, std::chrono::milliseconds(timeout_ms));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  return *r;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  char b[3];
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(b, sizeof b, "%02x", md[i]);
    hex += b;
  }
  return hex;
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// The file's SHA-256 as the guest computes it.
std::string guest_sha256(const Session& s, const std::string& path) {
  auto r = exec_ok(s, "import hashlib\nprint(hashlib.sha256(open('" + path + "','rb').read()).hexdigest())");
  REQUIRE(r.exit_code == 0);
  return r.stdout_data.substr(0, r.stdout_data.find('\n'));
}

bool has_entry(const FileListing& listing, const std::string& name) {
  for (const auto& e : listing.entries)
    if (e.name == name) return true;
  return false;
}

bool has_temp_file(const FileListing& listing) {
  for (const auto& e : listing.entries)
    if (e.name.starts_with(".sandbox-upload")) return true;
  return false;
}

}  // namespace

TEST_CASE("sessions: Python keeps variables, imports, functions and classes; errors and exits do not end it") {
  auto& s = shared_session(Language::python);
  CHECK(s.id().starts_with("s-"));
  auto r = exec_ok(s, "x = 41\nimport math\ndef f(v):\n    return v * 2\nclass C:\n    k = 3\n");
  CHECK(r.exit_code == 0);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "print(f(x) + C.k, math.floor(math.pi))");
  CHECK(r.stdout_data == "85 3\n");

  // An exception or a syntax error ends the exec, not the state.
  r = exec_ok(s, "raise ValueError('boom')");
  CHECK(r.exit_code == 1);
  CHECK(r.stderr_data.find("ValueError: boom") != std::string::npos);
  r = exec_ok(s, "def broken(:\n");
  CHECK(r.exit_code == 1);
  CHECK(r.stderr_data.find("SyntaxError") != std::string::npos);
  r = exec_ok(s, "import sys\nsys.exit(5)");
  CHECK(r.exit_code == 5);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "print(x)");
  CHECK(r.stdout_data == "41\n");
  CHECK_FALSE(r.state_lost);
}

TEST_CASE("sessions: a short cell after a long one runs alone") {
  // A cell's file is written over the last one in place and cut to length:
  // a tail left behind would run again.
  auto& s = shared_session(Language::python);
  auto r = exec_ok(s, "long_cells = 1\n" + std::string(3 * 4096, '#') + "\nprint('long')\n");
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data == "long\n");
  r = exec_ok(s, "long_cells += 1\nprint(long_cells)");
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data == "2\n");
}

TEST_CASE("sessions: a timeout interrupts the exec and keeps the state; a dead interpreter is restarted") {
  auto& s = shared_session(Language::python);
  exec_ok(s, "y = 'kept'");
  auto r = exec_ok(s, "while True:\n    pass\n", 1000);
  CHECK(r.timed_out);
  CHECK_FALSE(r.state_lost);
  CHECK(r.stderr_data.find("KeyboardInterrupt") != std::string::npos);
  // The exec's child processes go with the timeout.
  r = exec_ok(s, "import subprocess\nsubprocess.run(['sleep', '60'])\n", 1000);
  CHECK(r.timed_out);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "print(y)");
  CHECK(r.stdout_data == "kept\n");

  // Code that ignores the interrupt loses the interpreter after the grace.
  r = exec_ok(s, "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass\n",
              1000);
  CHECK(r.timed_out);
  CHECK(r.state_lost);
  r = exec_ok(s, "print('y' in globals())");
  CHECK(r.stdout_data == "False\n");
  CHECK_FALSE(r.state_lost);

  exec_ok(s, "z = 1");
  r = exec_ok(s, "import os\nprint('bye', flush=True)\nos._exit(3)");
  CHECK(r.exit_code == 3);
  CHECK(r.stdout_data == "bye\n");
  CHECK(r.state_lost);
  // The new interpreter's first cell times out: its clock started once the
  // session loop was set up, so its first line is out and the interrupt
  // ends the cell, not the interpreter, however slow the host.
  r = exec_ok(s, "print('first', flush=True)\nimport time\ntime.sleep(60)", 1000);
  CHECK(r.timed_out);
  CHECK(r.stdout_data == "first\n");
  CHECK(r.exit_code == 130);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "print('z' in globals())");
  CHECK(r.stdout_data == "False\n");

  auto list = client().sessions();
  REQUIRE(list.ok());
  bool found = false;
  for (const auto& info : *list)
    if (info.id == s.id()) {
      found = true;
      CHECK(info.exec_count >= 8);
      CHECK(info.language == Language::python);
      CHECK(info.last_activity_unix_ms >= info.created_unix_ms);
    }
  CHECK(found);
}

TEST_CASE("sessions: JavaScript keeps const, let, functions and classes across execs") {
  auto& s = shared_session(Language::javascript);
  auto r = exec_ok(s, "const a = 5; let b = 6; function f(x) { return x * 2 } class K { v() { return 7 } }");
  CHECK(r.exit_code == 0);
  r = exec_ok(s, "console.log(a + b, f(4), new K().v())");
  CHECK(r.stdout_data == "11 8 7\n");
  r = exec_ok(s, "throw new Error('boom')");
  CHECK(r.exit_code == 1);
  CHECK(r.stderr_data.find("boom") != std::string::npos);
  r = exec_ok(s, "while (true) {}", 1000);
  CHECK(r.timed_out);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "console.log(a, typeof f)");
  CHECK(r.stdout_data == "5 function\n");
  // The launcher's own names are not in the cells' scope.
  r = exec_ok(s, "const fs = require('fs'); const mode = fs.existsSync('/'); console.log(mode)");
  CHECK(r.stdout_data == "true\n");
}

TEST_CASE("sessions: the shell keeps variables, cwd and functions; background processes live on, zombies are reaped") {
  auto& s = shared_session(Language::raw);
  auto r = exec_ok(s, "export FOO=bar; mkdir -p d && cd d; greet() { echo \"hi $1\"; }\n"
                      "sleep 120 >/dev/null 2>&1 & echo $! > ~/bg.pid\n");
  CHECK(r.exit_code == 0);
  r = exec_ok(s, "echo $FOO; pwd; greet you; kill -0 $(cat ~/bg.pid) && echo bg-alive");
  CHECK(r.stdout_data == "bar\n/home/sandbox/d\nhi you\nbg-alive\n");

  // A timeout ends this exec's processes, not the shell nor older ones.
  r = exec_ok(s, "sleep 60; echo after", 1000);
  CHECK(r.timed_out);
  CHECK(r.stdout_data.find("after") == std::string::npos);
  r = exec_ok(s, "while :; do :; done", 1000);
  CHECK(r.timed_out);
  CHECK_FALSE(r.state_lost);
  r = exec_ok(s, "echo $FOO; kill -0 $(cat ~/bg.pid) && echo bg-alive");
  CHECK(r.stdout_data == "bar\nbg-alive\n");

  // An orphan that exits is reaped by the guest's init.
  r = exec_ok(s, "(sleep 0.2 &); sleep 3\n"
                 "n=0; for f in /proc/[0-9]*/stat; do read -r _ _ st _ < $f 2>/dev/null; [ \"$st\" = Z ] && n=$((n+1)); done\n"
                 "echo zombies=$n");
  CHECK(r.stdout_data == "zombies=0\n");
}

TEST_CASE("sessions: files round-trip byte for byte, with SHA-256 checked in the guest") {
  auto& s = shared_session(Language::python);
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  // Crosses chunk boundaries, and ends mid-chunk.
  std::string rnd = random_bytes(3 * limits::kFileChunkBytes + 17, 1);
  std::string big = random_bytes(limits::kMaxFileBytes, 2);
  struct Case {
    std::string path, data;
  } cases[] = {{"all-bytes.bin", all}, {"data/nested/random.bin", rnd}, {"empty", ""}, {"big.bin", big}};
  for (const auto& c : cases) {
    INFO(c.path);
    auto w = s.write_file(c.path, c.data);
    REQUIRE_MESSAGE(w.ok(), w.error().describe());
    CHECK(guest_sha256(s, c.path) == sha256_hex(c.data));
    auto back = s.read_file(c.path);
    REQUIRE_MESSAGE(back.ok(), back.error().describe());
    CHECK(back->size() == c.data.size());
    CHECK(*back == c.data);
  }
  // A file written by the code comes back as written.
  exec_ok(s, "open('made.txt', 'w').write('from the guest\\n' * 1000)");
  auto made = s.read_file("made.txt");
  REQUIRE(made.ok());
  CHECK(made->size() == 15000);

  auto home = s.list_files();
  REQUIRE(home.ok());
  CHECK_FALSE(home->truncated);
  for (const auto& e : home->entries) {
    if (e.name == "big.bin") CHECK(e.size == limits::kMaxFileBytes);
    if (e.name == "data") CHECK(e.is_dir);
  }
  CHECK(has_entry(*home, "all-bytes.bin"));
  CHECK(has_entry(*home, "empty"));
  auto nested = s.list_files("data/nested");
  REQUIRE(nested.ok());
  REQUIRE(nested->entries.size() == 1);
  CHECK(nested->entries.at(0).name == "random.bin");
  CHECK(nested->entries.at(0).size == rnd.size());

  // Executable bit on request; an overwrite replaces the file whole.
  REQUIRE(s.write_file("bin/tool.sh", "#!/bin/sh\necho tool-ran\n", true).ok());
  auto r = exec_ok(s, "import subprocess\nprint(subprocess.run(['./bin/tool.sh'], capture_output=True, text=True).stdout, end='')");
  CHECK(r.stdout_data == "tool-ran\n");
  REQUIRE(s.write_file("all-bytes.bin", "short").ok());
  CHECK(s.read_file("all-bytes.bin").value() == "short");
  exec_ok(s, "import os\nos.remove('big.bin')");
}

TEST_CASE("sessions: paths that leave home are refused by the daemon and by the guest") {
  auto& s = shared_session(Language::python);
  for (const std::string& bad : std::vector<std::string>{"../x", "/etc/passwd", "a/../../x", "", std::string(256, 'a'),
                                                          std::string("a\0b", 3)}) {
    INFO(bad);
    auto w = s.write_file(bad, "x");
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().code == ErrorCode::invalid_argument);
  }
  // The daemon checks too, whatever a client sends.
  RawClient raw(TestDaemon::shared().socket());
  REQUIRE(raw.send(proto::FileWrite{7, s.id(), "../../etc/x", 1, false}));
  REQUIRE(raw.send(proto::FileChunk{7, compress_chunk("x")}));
  auto m = raw.receive(std::chrono::seconds(30));
  REQUIRE(m.has_value());
  auto* err = std::get_if<proto::ErrorReply>(&*m);
  REQUIRE(err != nullptr);
  CHECK(err->code == ErrorCode::invalid_argument);

  // Symlinks planted by user code: leaving home is refused, staying inside works.
  exec_ok(s, "import os\nos.makedirs('inside', exist_ok=True)\nopen('inside/f','w').write('in')\n"
             "os.symlink('/etc', 'etc-link')\nos.symlink('/tmp', 'tmp-link')\nos.symlink('../..', 'up')\n"
             "os.symlink('inside', 'ok-link')\nos.mkfifo('fifo')");
  for (const char* path : {"etc-link/passwd", "up/etc/passwd", "tmp-link/x"}) {
    INFO(path);
    auto rd = s.read_file(path);
    REQUIRE_FALSE(rd.ok());
    CHECK(rd.error().code == ErrorCode::permission_denied);
  }
  auto w = s.write_file("tmp-link/planted", "x");
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == ErrorCode::permission_denied);
  CHECK(exec_ok(s, "import os\nprint(os.path.exists('/tmp/planted'))").stdout_data == "False\n");
  auto ls = s.list_files("etc-link");
  REQUIRE_FALSE(ls.ok());
  CHECK(ls.error().code == ErrorCode::permission_denied);
  CHECK(s.read_file("ok-link/f").value() == "in");
  // A FIFO must not hang the agent; a directory is not a file.
  auto fifo = s.read_file("fifo");
  REQUIRE_FALSE(fifo.ok());
  CHECK(fifo.error().code == ErrorCode::invalid_argument);
  CHECK(s.read_file("inside").error().code == ErrorCode::invalid_argument);
  CHECK(s.read_file("missing").error().code == ErrorCode::not_found);
  CHECK(exec_ok(s, "print('alive')").stdout_data == "alive\n");
}

TEST_CASE("sessions: an aborted or failed transfer leaves no partial file and the session goes on") {
  auto& s = shared_session(Language::python);
  // A client that vanishes halfway through sending a file.
  {
    RawClient raw(TestDaemon::shared().socket());
    REQUIRE(raw.send(proto::FileWrite{1, s.id(), "half.bin", 4 << 20, false}));
    auto chunks = compress_chunks(random_bytes(4 << 20, 3));
    for (size_t i = 0; i < chunks.size() / 2; ++i) REQUIRE(raw.send(proto::FileChunk{1, chunks[i]}));
    // Half a frame of the next chunk, too.
    std::string next = frame_message(proto::FileChunk{1, chunks[chunks.size() / 2]});
    REQUIRE(raw.send_bytes(std::string_view(next).substr(0, next.size() / 2)));
    raw.close();
  }
  // Declared sizes that do not match the data, or exceed the limit.
  RawClient raw(TestDaemon::shared().socket());
  REQUIRE(raw.send(proto::FileWrite{2, s.id(), "lie.bin", 5, false}));
  REQUIRE(raw.send(proto::FileChunk{2, compress_chunk("1234567890")}));
  REQUIRE(raw.send(proto::FileWrite{3, s.id(), "huge.bin", limits::kMaxFileBytes + 1, false}));
  for (int i = 0; i < 2; ++i) {
    auto m = raw.receive(std::chrono::seconds(30));
    REQUIRE(m.has_value());
    auto* err = std::get_if<proto::ErrorReply>(&*m);
    REQUIRE(err != nullptr);
    CHECK(err->code == ErrorCode::invalid_argument);
  }
  // The guest runs out of space halfway: the home, sized from the VM's
  // memory, is first filled to within 20 MB of full.
  exec_ok(s, "import os\nst = os.statvfs('.')\nleft = st.f_bavail * st.f_frsize - (20 << 20)\n"
             "with open('fill1.bin', 'wb') as f:\n"
             "    while left > 0:\n"
             "        left -= f.write(b'x' * min(left, 1 << 20))");
  std::string big = random_bytes(limits::kMaxFileBytes, 4);
  auto w = s.write_file("fill2.bin", big);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == ErrorCode::capacity);
  auto home = s.list_files();
  REQUIRE(home.ok());
  CHECK_FALSE(has_entry(*home, "half.bin"));
  CHECK_FALSE(has_entry(*home, "lie.bin"));
  CHECK_FALSE(has_entry(*home, "huge.bin"));
  CHECK_FALSE(has_entry(*home, "fill2.bin"));
  CHECK_FALSE(has_temp_file(*home));
  exec_ok(s, "import os\nos.remove('fill1.bin')");
  REQUIRE(s.write_file("after.txt", "fine").ok());
  CHECK(s.read_file("after.txt").value() == "fine");
}

TEST_CASE("sessions: sandboxctl session verbs and run --upload/--download") {
  auto& s = shared_session(Language::python);
  char tmpl[] = "/tmp/sandboxctl-files.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  at_suite_end([dir] { std::filesystem::remove_all(dir); });
  std::string sock = "--socket=" + TestDaemon::shared().socket();
  { std::ofstream(dir + "/in.txt") << "hello files\n"; }

  auto put = run_command({SANDBOXCTL_BIN, "session", "put", sock, s.id(), dir + "/in.txt", "cli/in.txt"});
  CHECK_MESSAGE(put.exit_code == 0, put.err);
  auto exec = run_command({SANDBOXCTL_BIN, "session", "exec", sock, s.id(),
                           "open('cli/out.txt','w').write(open('cli/in.txt').read().upper())"});
  CHECK_MESSAGE(exec.exit_code == 0, exec.err);
  auto ls = run_command({SANDBOXCTL_BIN, "session", "ls", sock, s.id(), "cli"});
  CHECK(ls.out == "in.txt\t12\nout.txt\t12\n");
  auto get = run_command({SANDBOXCTL_BIN, "session", "get", sock, s.id(), "cli/out.txt", "-"});
  CHECK(get.out == "HELLO FILES\n");
  auto sessions = run_command({SANDBOXCTL_BIN, "session", "ls", sock});
  CHECK(sessions.out.find(s.id()) != std::string::npos);
  auto missing = run_command({SANDBOXCTL_BIN, "session", "exec", sock, "s-000000000000000000000000", "print(1)"});
  CHECK(missing.exit_code == 125);
  CHECK(missing.err.find("not_found") != std::string::npos);

  // A run with files is a one-exec session under the hood, closed after.
  auto before = client().sessions();
  REQUIRE(before.ok());
  auto run = run_command({SANDBOXCTL_BIN, "run", sock, "--upload", dir + "/in.txt:data/in.txt", "--download",
                          "result.txt:" + dir + "/result.txt", "-c",
                          "import os\nprint(sorted(os.listdir('data')))\n"
                          "open('result.txt','w').write(open('data/in.txt').read()[::-1])"});
  CHECK_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out == "['in.txt']\n");
  std::ifstream result(dir + "/result.txt");
  std::string got((std::istreambuf_iterator<char>(result)), std::istreambuf_iterator<char>());
  CHECK(got == "\nselif olleh");
  auto after = client().sessions();
  REQUIRE(after.ok());
  CHECK(after->size() == before->size());
  auto nodl = run_command({SANDBOXCTL_BIN, "run", sock, "--download", "nothing.txt:" + dir + "/n.txt", "-c", "pass"});
  CHECK(nodl.exit_code == 125);
  CHECK(nodl.err.find("not_found") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/n.txt"));
}

TEST_CASE("sessions: another uid cannot see or use a session; per-uid limit; a dead VM closes the session") {
  TestDaemon d;
  REQUIRE(d.start({"--allowed_uids", "65534", "--max_sessions_per_uid", "1"}));
  // A listed uid passes the check but must also be able to open the socket.
  CHECK(d.log().find("allowed_uids: the socket is mode 0660") != std::string::npos);
  Client c(d.socket());
  SessionOptions o;
  auto s = c.create_session(o);
  REQUIRE_MESSAGE(s.ok(), s.error().describe());
  REQUIRE(s->write_file("secret.txt", "mine").ok());

  auto second = c.create_session(o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == ErrorCode::capacity);

  if (::geteuid() != 0) {
    MESSAGE("SKIPPED: the second-uid part needs root to switch to uid 65534");
  } else {
    // The socket's group is opened to nobody's group, as an operator would
    // with the sandbox group.
    REQUIRE(::chmod(d.dir().c_str(), 0755) == 0);
    REQUIRE(::chown(d.socket().c_str(), 0, 65534) == 0);
    int pipefd[2];
    REQUIRE(::pipe(pipefd) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(pipefd[0]);
      std::string report;
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(3);
      Client other(d.socket());
      auto theirs = other.session(s->id());
      auto code = [](auto r) { return r.ok() ? std::string("ok") : std::string(error_code_name(r.error().code)); };
      report += "exec=" + code(theirs.exec("print(1)")) + "\n";
      report += "read=" + code(theirs.read_file("secret.txt")) + "\n";
      report += "write=" + code(theirs.write_file("x", "y")) + "\n";
      report += "list=" + code(theirs.list_files()) + "\n";
      report += "close=" + code(theirs.close()) + "\n";
      auto mine = other.sessions();
      report += "sessions=" + (mine.ok() ? std::to_string(mine->size()) : std::string("error")) + "\n";
      (void)!::write(pipefd[1], report.data(), report.size());
      _exit(0);
    }
    ::close(pipefd[1]);
    std::string report;
    char buf[512];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(report == "exec=not_found\nread=not_found\nwrite=not_found\nlist=not_found\nclose=not_found\nsessions=0\n");
  }
  // Still the owner's, untouched.
  CHECK(s->read_file("secret.txt").value() == "mine");

  // The session's VM dies: the session closes, and says so.
  auto kids = d.children();
  REQUIRE(kids.size() == 1);
  ::kill(kids[0], SIGKILL);
  REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(30)));
  auto after = s->exec("print(1)");
  for (int i = 0; i < 50 && after.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = s->exec("print(1)");
  }
  REQUIRE_FALSE(after.ok());
  CHECK(after.error().code == ErrorCode::session_closed);
  auto listed = c.sessions();
  REQUIRE(listed.ok());
  CHECK(listed->empty());
  // The per-uid slot is free again.
  o.idle_timeout = std::chrono::seconds(10);
  auto idle = c.create_session(o);
  REQUIRE_MESSAGE(idle.ok(), idle.error().describe());
  CHECK(idle->exec("v = 1").ok());

  // Idle past its timeout: closed, VM gone. Watched through the listing,
  // which does not count as activity, for however long a slow host takes.
  auto listed_now = [&] {
    auto l = c.sessions();
    return l.ok() && !l->empty();
  };
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (listed_now() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  auto late = idle->exec("print(v)");
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().code == ErrorCode::session_closed);
  CHECK(late.error().message.find("idle") != std::string::npos);
  CHECK(d.wait_children_at_most(0, std::chrono::seconds(10)));
  auto bad_idle = c.create_session(SessionOptions{.idle_timeout = std::chrono::seconds(5)});
  REQUIRE_FALSE(bad_idle.ok());
  CHECK(bad_idle.error().code == ErrorCode::invalid_argument);
}

TEST_CASE("sessions: closing ends the session; unknown and closed ids get clear errors") {
  auto& s = shared_session(Language::javascript);
  REQUIRE(s.close().ok());
  auto r = s.exec("1");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::session_closed);
  auto rd = s.read_file("x");
  REQUIRE_FALSE(rd.ok());
  CHECK(rd.error().code == ErrorCode::session_closed);
  auto unknown = client().session("s-ffffffffffffffffffffffff").exec("1");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code == ErrorCode::not_found);
  auto list = client().sessions();
  REQUIRE(list.ok());
  for (const auto& info : *list) CHECK(info.id != s.id());
}
