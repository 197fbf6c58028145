#include "agent/exec.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "agent/seccomp.h"
#include "agent/system.h"
#include "common/limits.h"

namespace sandbox::agent {
namespace {

// The interpreter waits on fd 3 for one byte (or EOF), then runs the code
// file as a script would run: its own __main__ / module, its own argv.
constexpr const char* kPythonLauncher = R"PY(
import os, sys, types
def _sandbox_main():
    os.read(3, 1)
    os.close(3)
    path = '/run/sandbox/main.py'
    with open(path, 'rb') as f:
        source = f.read()
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    module = types.ModuleType('__main__')
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    try:
        code = compile(source, path, 'exec', dont_inherit=True)
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        # Report as an uncaught exception of the script itself.
        tb = e.__traceback__.tb_next if e.__traceback__ else None
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        sys.exit(1)
_sandbox_main()
)PY";

constexpr const char* kNodeLauncher = R"JS(
const fs = require('fs');
try { fs.readSync(3, Buffer.alloc(1), 0, 1, null); } catch (e) {}
fs.closeSync(3);
const Module = require('module');
const path = '/run/sandbox/main.js';
const m = new Module(path, null);
m.filename = path;
m.paths = Module._nodeModulePaths('/run/sandbox');
process.argv[1] = path;
m._compile(fs.readFileSync(path, 'utf8'), path);
)JS";

constexpr const char* kBashLauncher = "read -r -N 1 -u 3 _; exec 3<&-; unset _; source /run/sandbox/main.sh";

struct Interpreter {
  const char* file;  // where the code is written
  std::vector<std::string> argv;
};

Interpreter interpreter_for(proto::Language language) {
  switch (language) {
    case proto::Language::python:
      // -u: unbuffered, so output streams while the code runs.
      return {"/run/sandbox/main.py", {"/usr/bin/python3", "-u", "-c", kPythonLauncher}};
    case proto::Language::javascript:
      return {"/run/sandbox/main.js", {"/usr/bin/node", "-e", kNodeLauncher}};
    case proto::Language::raw:
      return {"/run/sandbox/main.sh", {"/bin/bash", "-c", kBashLauncher, "main.sh"}};
  }
  return {"/run/sandbox/main.sh", {"/bin/false"}};
}

Result<void> write_file(const char* path, std::string_view data) {
  unique_fd fd(::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return Error::sys("open", path);
  while (!data.empty()) {
    ssize_t n = ::write(fd.get(), data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("write", path);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

void arm(int timer, std::chrono::milliseconds after) {
  itimerspec its{};
  auto ms = std::max<int64_t>(after.count(), 1);
  its.it_value.tv_sec = ms / 1000;
  its.it_value.tv_nsec = (ms % 1000) * 1'000'000;
  ::timerfd_settime(timer, 0, &its, nullptr);
}

// Async-signal-safe write of a message from a forked child.
void child_fail(const char* what) {
  const char prefix[] = "sandbox: cannot start program: ";
  (void)!::write(2, prefix, sizeof(prefix) - 1);
  (void)!::write(2, what, __builtin_strlen(what));
  (void)!::write(2, "\n", 1);
  ::_exit(127);
}

}  // namespace

Result<std::unique_ptr<Execution>> Execution::spawn(proto::Language language, const proto::EnvList& env_in,
                                                    const std::string& tree, const std::vector<sock_filter>& filter) {
  auto interp = interpreter_for(language);
  std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "HOME=" + std::string(kUserHome),
      "USER=sandbox",
      "LOGNAME=sandbox",
      "LANG=C.UTF-8",
  };
  for (const auto& [k, v] : env_in) {
    // The daemon validated these; refuse anything that would corrupt envp.
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos)
      return Error::make(ErrorCode::invalid_argument, "invalid environment variable");
    auto prefix = k + "=";
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
    env.push_back(prefix + v);
  }
  std::vector<char*> argv_p, env_p;
  for (auto& a : interp.argv) argv_p.push_back(a.data());
  argv_p.push_back(nullptr);
  for (auto& e : env) env_p.push_back(e.data());
  env_p.push_back(nullptr);

  unique_fd procs;
  if (!tree.empty()) {
    // Anything left from an earlier execution must not join this one.
    if (std::ofstream kill(tree + "/cgroup.kill"); kill) kill << "1";
    procs.reset(::open((tree + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!procs) return Error::sys("open", tree + "/cgroup.procs");
  }
  unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return Error::sys("open", "/dev/null");
  int out[2], err[2], go[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd err_r(err[0]), err_w(err[1]);
  if (::pipe2(go, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd go_r(go[0]), go_w(go[1]);
  unique_fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) return Error::sys("timerfd_create");

  auto self = std::unique_ptr<Execution>(new Execution());
  self->language_ = language;
  self->tree_ = tree;
  pid_t pid = ::fork();
  if (pid < 0) return Error::sys("fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls from here to execve.
    if (procs && ::write(procs.get(), "0", 1) != 1) child_fail("joining the exec cgroup");
    ::setsid();
    if (::dup2(devnull.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 || ::dup2(err_w.get(), 2) < 0 ||
        ::dup2(go_r.get(), 3) < 0)
      child_fail("dup2");
    if (::setgroups(0, nullptr) != 0 || ::setresgid(kUserGid, kUserGid, kUserGid) != 0 ||
        ::setresuid(kUserUid, kUserUid, kUserUid) != 0)
      child_fail("dropping privileges");
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail("no_new_privs");
    if (!filter.empty() && !install_filter(filter)) child_fail("seccomp");
    if (::chdir(kUserHome.data()) != 0) child_fail("chdir home");
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::close_range(4, ~0U, 0);
    ::execve(argv_p[0], argv_p.data(), env_p.data());
    child_fail(argv_p[0]);
  }
  self->pid_ = pid;
  self->out_ = std::move(out_r);
  self->err_ = std::move(err_r);
  self->go_ = std::move(go_w);
  self->timer_ = std::move(timer);
  ::fcntl(self->out_.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(self->err_.get(), F_SETFL, O_NONBLOCK);
  return self;
}

Result<void> Execution::go(const proto::Exec& exec) {
  if (started_) return Error::make(ErrorCode::internal, "execution already started");
  auto interp = interpreter_for(language_);
  if (auto r = write_file(interp.file, exec.code); !r) return r;
  if (!tree_.empty() && exec.pids_max > 0) {
    std::ofstream pids(tree_ + "/pids.max");
    if (!(pids << exec.pids_max << std::flush)) return Error::sys("write", tree_ + "/pids.max");
  }
  id_ = exec.id;
  grace_ = std::chrono::milliseconds(exec.grace_ms);
  limit_[0] = exec.stdout_limit;
  limit_[1] = exec.stderr_limit;
  started_ = true;
  started_at_ = Clock::now();
  // A dead interpreter makes this fail; its exit is then the result.
  (void)!::write(go_.get(), "g", 1);
  go_.reset();
  auto timeout = std::clamp(exec.timeout_ms, limits::kMinTimeoutMs, limits::kMaxTimeoutMs);
  arm(timer_.get(), std::chrono::milliseconds(timeout));
  return ok();
}

Execution::~Execution() {
  if (pid_ > 0 && !exit_status_) {
    signal_tree(SIGKILL);
    // Reap it here: a later execution must not mistake its exit for its own.
    ::waitpid(pid_, nullptr, 0);
  }
}

bool Execution::drain(int fd, const std::function<void(proto::Stream, std::string_view)>& sink) {
  unique_fd& pipe = fd == out_.get() ? out_ : err_;
  auto stream = fd == out_.get() ? proto::Stream::out : proto::Stream::err;
  int s = stream == proto::Stream::out ? 0 : 1;
  static char buf[limits::kOutputChunkBytes];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      // Past the limit the pipe is still drained, so the program runs on.
      uint64_t room = limit_[s] > sent_[s] ? limit_[s] - sent_[s] : 0;
      uint64_t keep = std::min<uint64_t>(room, static_cast<uint64_t>(n));
      if (keep < static_cast<uint64_t>(n)) truncated_[s] = true;
      if (keep > 0) sink(stream, std::string_view(buf, keep));
      sent_[s] += keep;
      // One chunk per wake-up keeps both streams and the host channel fair.
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    pipe.reset();
    return false;
  }
}

void Execution::signal_tree(int sig) {
  if (!tree_.empty()) {
    if (sig == SIGKILL) {
      if (std::ofstream kill(tree_ + "/cgroup.kill"); kill) {
        kill << "1";
        return;
      }
    }
    std::ifstream procs(tree_ + "/cgroup.procs");
    pid_t p;
    bool any = false;
    while (procs >> p) {
      ::kill(p, sig);
      any = true;
    }
    if (any) return;
  }
  if (pid_ > 0) ::kill(-pid_, sig);
}

void Execution::on_timer() {
  uint64_t expirations;
  (void)!::read(timer_.get(), &expirations, sizeof expirations);
  if (!term_sent_) {
    timed_out_ = !exit_status_.has_value();
    term_sent_ = true;
    signal_tree(SIGTERM);
    arm(timer_.get(), grace_);
  } else {
    signal_tree(SIGKILL);
  }
}

void Execution::on_main_exit(int status) {
  exit_status_ = status;
  ended_ = Clock::now();
  // Whatever the program left running would hold the pipes open.
  signal_tree(SIGKILL);
}

proto::ExecDone Execution::result() const {
  proto::ExecDone done;
  done.id = id_;
  done.timed_out = timed_out_;
  done.stdout_truncated = truncated_[0];
  done.stderr_truncated = truncated_[1];
  int st = exit_status_.value_or(0);
  if (WIFEXITED(st)) {
    done.exit_code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    done.signal = WTERMSIG(st);
    done.exit_code = 128 + done.signal;
  }
  done.duration_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(ended_ - started_at_).count());
  return done;
}

void reap_children(std::initializer_list<Execution*> executions) {
  int status;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0)
    for (Execution* e : executions)
      if (e && pid == e->pid()) e->on_main_exit(status);
}

}  // namespace sandbox::agent
