#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/process.h"

using namespace sandbox;


namespace {

bool is_zombie_or_gone(pid_t pid) {
  return ::waitpid(pid, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

}  // namespace

TEST_CASE("the destructor kills and reaps the child") {
  pid_t pid;
  {
    auto p = Process::spawn({{"sleep", "100"}, {}, true});
    REQUIRE(p.ok());
    pid = p->pid();
    CHECK(p->running());
    CHECK(::kill(pid, 0) == 0);
  }
  // Reaped: not even a zombie is left for us to wait for.
  CHECK(is_zombie_or_gone(pid));
}

TEST_CASE("the pidfd becomes readable on exit and try_wait reports the status") {
  auto p = Process::spawn({{"sh", "-c", "exit 7"}, {}, true});
  REQUIRE(p.ok());
  pollfd pfd{p->pidfd(), POLLIN, 0};
  REQUIRE(::poll(&pfd, 1, 10'000) == 1);
  auto st = p->try_wait();
  REQUIRE(st.has_value());
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 7);
  CHECK(describe_wait_status(*st) == "exited with status 7");
}

TEST_CASE("a non-blocking pidfd is still reaped by kill_and_wait") {
  auto p = Process::spawn({{"sleep", "100"}, {}, true});
  REQUIRE(p.ok());
  ::fcntl(p->pidfd(), F_SETFL, O_NONBLOCK);
  pid_t pid = p->pid();
  p->kill_and_wait();
  CHECK(is_zombie_or_gone(pid));
  auto st = p->try_wait();
  REQUIRE(st.has_value());
  CHECK(WIFSIGNALED(*st));
  CHECK(WTERMSIG(*st) == SIGKILL);
}

TEST_CASE("only the listed descriptors reach the child") {
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  unique_fd r(pfd[0]), w(pfd[1]);
  // Without O_CLOEXEC on purpose, and above the numbers the child uses.
  int stray = ::fcntl(::open("/dev/null", O_RDONLY), F_DUPFD, 20);
  REQUIRE(stray >= 0);
  // fd 5 in the child is our pipe; the stray descriptor must be closed.
  std::string script = "ls /proc/self/fd | sort -n | tr '\\n' ' ' >&5";
  auto p = Process::spawn({{"sh", "-c", script}, {{5, w.get()}}, true});
  ::close(stray);
  REQUIRE(p.ok());
  w.reset();
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  // 0-2 (/dev/null), 5, and the descriptor ls itself opens for /proc/self/fd.
  CHECK(out.starts_with("0 1 2 "));
  CHECK(out.find(" 5 ") != std::string::npos);
  bool stray_closed = out.find(" " + std::to_string(stray) + " ") == std::string::npos;
  CHECK(stray_closed);
}

TEST_CASE("a missing program is reported as exit 127") {
  auto p = Process::spawn({{"/nonexistent/binary"}, {}, true});
  REQUIRE(p.ok());
  pollfd pfd{p->pidfd(), POLLIN, 0};
  REQUIRE(::poll(&pfd, 1, 10'000) == 1);
  CHECK(WEXITSTATUS(*p->try_wait()) == 127);
}
