#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/framing.h"
#include <sandbox/limits.h>

namespace sandbox::test {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool connectable(const std::string& path) {
  unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, sizeof addr.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

CmdResult run_command(const std::vector<std::string>& argv, const std::string& input, std::chrono::seconds timeout) {
  CmdResult res;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) return res;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0), ::dup2(out[1], 1), ::dup2(err[1], 2);
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  ::close(in[0]), ::close(out[1]), ::close(err[1]);
  unique_fd win(in[1]), rout(out[0]), rerr(err[0]);
  ::fcntl(win.get(), F_SETFL, O_NONBLOCK);
  std::string_view pending = input;
  if (pending.empty()) win.reset();
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  while (rout || rerr) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      res.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p[3] = {{rout.get(), POLLIN, 0}, {rerr.get(), POLLIN, 0}, {win.get(), POLLOUT, 0}};
    if (::poll(p, 3, static_cast<int>(left)) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0)
        (i == 0 ? res.out : res.err).append(buf, static_cast<size_t>(n));
      else
        (i == 0 ? rout : rerr).reset();
    }
    if (win && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(win.get(), pending.data(), pending.size());
      if (n > 0) pending.remove_prefix(static_cast<size_t>(n));
      if (n < 0 || pending.empty()) win.reset();
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

RunRequest make_request(Language language, std::string code, int timeout_ms) {
  RunRequest r;
  r.language = language;
  r.code = std::move(code);
  r.timeout = std::chrono::milliseconds(timeout_ms);
  return r;
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::string images_dir() {
  const char* env = std::getenv("SANDBOXD_TEST_IMAGES");
  return env && *env ? env : SANDBOXD_DEFAULT_IMAGES;
}

namespace {
TestDaemon* g_shared = nullptr;
}

TestDaemon& TestDaemon::shared() {
  if (!g_shared) {
    g_shared = new TestDaemon();
    if (!g_shared->start()) {
      std::fprintf(stderr, "shared sandboxd failed to start:\n%s\n", g_shared->log().c_str());
      std::abort();
    }
  }
  return *g_shared;
}

TestDaemon* TestDaemon::shared_if_started() { return g_shared; }

TestDaemon::~TestDaemon() {
  if (running()) stop();
  if (!dir_.empty()) fs::remove_all(dir_);
}

bool TestDaemon::start(const std::vector<std::string>& extra_args, const std::string& images) {
  char tmpl[] = "/tmp/sandboxd-test.XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  socket_ = dir_ + "/sandboxd.sock";
  fs::create_directories(dir_ + "/state");
  std::vector<std::string> argv = {SANDBOXD_BIN,     "--config",    "/dev/null", "--socket", socket_,
                                   "--images",       images,        "--state-dir", dir_ + "/state",
                                   "--log-level",    "debug",
                                   // No warm pool or snapshots unless a test asks: most tests count
                                   // the daemon's VMs, and a snapshot template is one more.
                                   "--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0",
                                   "--snapshots", "off"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  // A test may put the socket elsewhere (the last flag wins in sandboxd too).
  for (size_t i = 0; i + 1 < extra_args.size(); ++i)
    if (extra_args[i] == "--socket") socket_ = extra_args[i + 1];
  int log = ::open((dir_ + "/sandboxd.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    // A test binary that dies (a timeout, a crash) takes its daemon along.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(log, 1), ::dup2(log, 2);
    // Something only the host knows; escape tests look for it in the guest.
    ::setenv("SANDBOX_TEST_MARKER", "host-only-value", 1);
    // The daemon reads SANDBOXD_* as configuration: the tests' own settings
    // are not its.
    ::unsetenv("SANDBOXD_TEST_IMAGES");
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  ::close(log);
  // Image verification hashes a few hundred MB: allow for a slow disk.
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (connectable(socket_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop();
  return false;
}

int TestDaemon::stop(std::chrono::seconds grace) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = Clock::now() + grace;
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (Clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
  return status;
}

std::string TestDaemon::log() const { return read_file(dir_ + "/sandboxd.log"); }

std::vector<pid_t> TestDaemon::children() const {
  std::vector<pid_t> out;
  if (pid_ <= 0) return out;
  std::istringstream in(read_file("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children"));
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

bool TestDaemon::wait_children_at_most(size_t n, std::chrono::seconds deadline) const {
  auto until = Clock::now() + deadline;
  while (children().size() > n) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

RawClient::RawClient(const std::string& socket) {
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  socket.copy(addr.sun_path, sizeof addr.sun_path - 1);
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) fd_.reset();
}

bool RawClient::send_bytes(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool RawClient::send(const proto::Message& m) { return send_bytes(frame_message(m)); }

std::optional<proto::Message> RawClient::receive(std::chrono::seconds timeout, bool* closed) {
  if (closed) *closed = false;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto m = reader_.next()) {
      if (!*m) return std::nullopt;
      return std::move(**m);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return std::nullopt;
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[65536];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      return std::nullopt;
    }
    reader_.feed({buf, static_cast<size_t>(n)});
  }
}

namespace {
std::vector<std::function<void()>>& suite_end() {
  static std::vector<std::function<void()>> fns;
  return fns;
}
}  // namespace

void at_suite_end(std::function<void()> fn) { suite_end().push_back(std::move(fn)); }

void run_suite_end() {
  auto fns = std::move(suite_end());
  for (auto it = fns.rbegin(); it != fns.rend(); ++it) (*it)();
}

std::vector<pid_t> processes_named(const std::string& prefix) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = read_file(e.path().string() + "/cmdline");
    if (cmd.starts_with(prefix)) out.push_back(std::stoi(name));
  }
  return out;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

LoopbackHosts::LoopbackHosts(const std::vector<std::string>& names, const std::string& index_dir) {
  char tmpl[] = "/tmp/sandboxd-net.XXXXXX";
  dir = ::mkdtemp(tmpl);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    skip = "no pipe";
    return;
  }
  std::vector<std::string> args = {"/usr/bin/python3", SANDBOXD_SOURCE_DIR "/tests/integration/net_hosts.py", dir};
  if (!index_dir.empty()) args.push_back("--index=" + index_dir);
  args.insert(args.end(), names.begin(), names.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(p[0], 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(p[0]);
  stdin_fd_ = p[1];
  for (int i = 0; i < 300 && !std::filesystem::exists(dir + "/ports"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::string ports = slurp(dir + "/ports");
  if (ports.empty()) {
    skip = "the loopback test hosts did not start (python3 and openssl needed)";
    return;
  }
  auto num = [&](const std::string& key) {
    auto at = ports.find("\"" + key + "\": ");
    return at == std::string::npos ? 0 : std::stoi(ports.substr(at + key.size() + 4));
  };
  dns = num("dns"), http = num("http"), https = num("https"), echo = num("echo");
  web_ports = num("https_web") == 443 && num("http_web") == 80;
}

LoopbackHosts::~LoopbackHosts() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::filesystem::remove_all(dir);
}

std::vector<std::string> LoopbackHosts::dns_queries() const {
  std::vector<std::string> out;
  std::istringstream in(slurp(dir + "/dns_queries"));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool LoopbackHosts::queried(const std::string& name) const {
  auto q = dns_queries();
  return std::find(q.begin(), q.end(), name) != q.end();
}

std::vector<std::string> LoopbackHosts::index_requests() const {
  std::vector<std::string> out;
  std::istringstream in(slurp(dir + "/index_requests"));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace sandbox::test
