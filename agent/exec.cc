#include "agent/exec.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <vector>

#include "agent/seccomp.h"
#include "agent/system.h"
#include "common/limits.h"

namespace sandbox::agent {
namespace {

// The interpreter waits on fd 3 for one byte (or EOF). "g" (or anything
// else) runs the code file once, as a script would run: its own __main__
// module, its own argv. "s" starts a session: each line then read from fd 3
// runs the cell file in the same namespace, and its status goes back as a
// line on fd 4. An exception, SystemExit or KeyboardInterrupt (the agent's
// timeout) ends the cell, not the interpreter.
constexpr const char* kPythonLauncher = R"PY(
import os, sys, types
def _sandbox_session():
    import linecache
    module = types.ModuleType('__main__')
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    sys.argv = ['']
    sys.path[0] = ''
    pending = b''
    n = 0
    while True:
        try:
            while b'\n' not in pending:
                chunk = os.read(3, 64)
                if not chunk:
                    os._exit(0)
                pending += chunk
            pending = pending.split(b'\n', 1)[1]
        except KeyboardInterrupt:
            continue
        n += 1
        status = 0
        try:
            try:
                with open('/run/sandbox/cell.py', 'rb') as f:
                    source = f.read()
                name = '<exec %d>' % n
                linecache.cache[name] = (len(source), None, source.decode('utf-8', 'replace').splitlines(True), name)
                exec(compile(source, name, 'exec', dont_inherit=True), module.__dict__)
            except SystemExit as e:
                if e.code is None:
                    status = 0
                elif isinstance(e.code, int):
                    status = e.code & 0xff
                else:
                    print(e.code, file=sys.stderr)
                    status = 1
            except BaseException as e:
                tb = e.__traceback__.tb_next if e.__traceback__ else None
                sys.excepthook(type(e), e.with_traceback(tb), tb)
                status = 130 if isinstance(e, KeyboardInterrupt) else 1
        except KeyboardInterrupt:
            status = 130
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os.write(4, b'%d\n' % status)
def _sandbox_main():
    if os.read(3, 1) == b's':
        return _sandbox_session()
    os.close(3)
    os.close(4)
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

// Node: the same protocol. Cells run with vm.runInThisContext, so
// top-level const, let, functions and classes persist like in the REPL;
// SIGINT (the timeout) interrupts a cell, and errors thrown later by timers
// are printed rather than fatal.
constexpr const char* kNodeLauncher = R"JS(
const fs = require('fs');
const mode = Buffer.alloc(1);
try { fs.readSync(3, mode, 0, 1, null); } catch (e) {}
if (mode.toString() === 's') {
  const vm = require('vm');
  const util = require('util');
  globalThis.require = require;
  const report = (e) => { try { process.stderr.write(util.inspect(e) + '\n'); } catch (_) {} };
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
  process.on('SIGINT', () => {});
  let n = 0;
  let pending = '';
  const input = new (require('net').Socket)({ fd: 3, readable: true, writable: false });
  input.on('data', (d) => {
    pending += d.toString();
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      pending = pending.slice(i + 1);
      n += 1;
      let status = 0;
      try {
        const source = fs.readFileSync('/run/sandbox/cell.js', 'utf8');
        vm.runInThisContext(source, { filename: `<exec ${n}>`, breakOnSigint: true });
      } catch (e) {
        status = e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED' ? 130 : 1;
        report(e);
      }
      fs.writeSync(4, `${status}\n`);
    }
  });
  input.on('end', () => process.exit(0));
} else {
fs.closeSync(3);
fs.closeSync(4);
const Module = require('module');
const path = '/run/sandbox/main.js';
const m = new Module(path, null);
m.filename = path;
m.paths = Module._nodeModulePaths('/run/sandbox');
process.argv[1] = path;
m._compile(fs.readFileSync(path, 'utf8'), path);
}
)JS";

// Bash: cells are sourced by the same shell, so variables, functions and the
// working directory persist. SIGUSR1 (the timeout) returns from the cell;
// not SIGINT, whose special handling while bash waits for a foreground
// child leaves later traps undelivered.
constexpr const char* kBashLauncher = R"SH(read -r -N 1 -u 3 __sandbox_mode
if [[ $__sandbox_mode != s ]]; then exec 3<&- 4>&-; unset __sandbox_mode; source /run/sandbox/main.sh; exit; fi
unset __sandbox_mode
trap 'return 130 2>/dev/null' USR1
while IFS= read -r -u 3 __sandbox_cell; do
  source /run/sandbox/cell.sh
  printf '%d\n' "$?" >&4
done
exit 0)SH";

struct Interpreter {
  const char* file;  // where the code is written
  const char* cell;  // where a session's code is written
  std::vector<std::string> argv;
};

Interpreter interpreter_for(proto::Language language) {
  switch (language) {
    case proto::Language::python:
      // -u: unbuffered, so output streams while the code runs.
      return {"/run/sandbox/main.py", "/run/sandbox/cell.py", {"/usr/bin/python3", "-u", "-c", kPythonLauncher}};
    case proto::Language::javascript:
      return {"/run/sandbox/main.js", "/run/sandbox/cell.js", {"/usr/bin/node", "-e", kNodeLauncher}};
    case proto::Language::raw:
      return {"/run/sandbox/main.sh", "/run/sandbox/cell.sh", {"/bin/bash", "-c", kBashLauncher, "main.sh"}};
  }
  return {"/run/sandbox/main.sh", "/run/sandbox/cell.sh", {"/bin/false"}};
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

// A wait status as exit code and signal (128+N when killed by signal N).
void set_exit(int status, proto::ExecDone* done) {
  if (WIFEXITED(status)) {
    done->exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    done->signal = WTERMSIG(status);
    done->exit_code = 128 + done->signal;
  }
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
  int out[2], err[2], go[2], report[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd err_r(err[0]), err_w(err[1]);
  if (::pipe2(go, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd go_r(go[0]), go_w(go[1]);
  if (::pipe2(report, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd report_r(report[0]), report_w(report[1]);
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
        ::dup2(go_r.get(), 3) < 0 || ::dup2(report_w.get(), 4) < 0)
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
    ::close_range(5, ~0U, 0);
    ::execve(argv_p[0], argv_p.data(), env_p.data());
    child_fail(argv_p[0]);
  }
  self->pid_ = pid;
  self->out_ = std::move(out_r);
  self->err_ = std::move(err_r);
  self->go_ = std::move(go_w);
  self->report_ = std::move(report_r);
  self->timer_ = std::move(timer);
  ::fcntl(self->out_.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(self->err_.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(self->report_.get(), F_SETFL, O_NONBLOCK);
  return self;
}

Result<void> Execution::start_session() {
  if (started_ || session_) return Error::make(ErrorCode::internal, "execution already started");
  if (::write(go_.get(), "s", 1) != 1) return Error::sys("write", "interpreter command pipe");
  session_ = true;
  return ok();
}

namespace {

Result<void> write_line(const std::string& path, std::string_view value) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) return Error::sys("write", path);
  return ok();
}

}  // namespace

Result<void> Execution::run_cell(const proto::Exec& exec) {
  if (!session_ || cell_active_) return Error::make(ErrorCode::internal, "no session ready for a cell");
  if (!alive()) return Error::make(ErrorCode::guest_error, "the session's interpreter has exited");
  auto interp = interpreter_for(language_);
  if (auto r = write_file(interp.cell, exec.code); !r) return r;
  if (!tree_.empty()) {
    if (exec.pids_max > 0)
      if (auto r = write_line(tree_ + "/pids.max", std::to_string(exec.pids_max)); !r) return r;
    // Cgroups of earlier cells whose processes have all ended go away.
    if (DIR* d = ::opendir(tree_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::string_view(e->d_name).starts_with("cell-")) ::rmdir((tree_ + "/" + e->d_name).c_str());
      ::closedir(d);
    }
    cell_tree_ = tree_ + "/cell-" + std::to_string(cells_ + 1);
    if (::mkdir(cell_tree_.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir", cell_tree_);
    if (auto r = write_line(cell_tree_ + "/cgroup.procs", std::to_string(pid_)); !r) return r;
  }
  ++cells_;
  id_ = exec.id;
  grace_ = std::chrono::milliseconds(exec.grace_ms);
  limit_[0] = exec.stdout_limit;
  limit_[1] = exec.stderr_limit;
  sent_[0] = sent_[1] = 0;
  truncated_[0] = truncated_[1] = false;
  timed_out_ = term_sent_ = false;
  cell_status_.reset();
  cell_active_ = true;
  started_at_ = Clock::now();
  if (::write(go_.get(), "run\n", 4) != 4) {
    // The interpreter is gone; its exit ends this cell.
  }
  auto timeout = std::clamp(exec.timeout_ms, limits::kMinTimeoutMs, limits::kMaxTimeoutMs);
  arm(timer_.get(), std::chrono::milliseconds(timeout));
  return ok();
}

bool Execution::on_report() {
  char buf[256];
  bool open = true;
  for (;;) {
    ssize_t n = ::read(report_.get(), buf, sizeof buf);
    if (n > 0) {
      report_buf_.append(buf, static_cast<size_t>(n));
      if (report_buf_.size() > 4096) report_buf_.erase(0, report_buf_.size() - 64);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    open = n < 0 && errno == EAGAIN;
    break;
  }
  size_t nl;
  while ((nl = report_buf_.find('\n')) != std::string::npos) {
    std::string line = report_buf_.substr(0, nl);
    report_buf_.erase(0, nl + 1);
    // User code may write to fd 4 too; it then ends its own cell early with
    // a status of its choosing, which affects nothing beyond that cell.
    if (cell_active_ && !cell_status_) cell_status_ = std::atoi(line.c_str()) & 0xff;
  }
  if (!open) report_.reset();
  return open;
}

proto::ExecDone Execution::end_cell() {
  itimerspec off{};
  ::timerfd_settime(timer_.get(), 0, &off, nullptr);
  ended_ = Clock::now();
  cell_active_ = false;
  if (!cell_tree_.empty() && alive()) {
    // The interpreter leaves the cell's cgroup; what stays there is the
    // cell's background processes.
    (void)write_line(tree_ + "/cgroup.procs", std::to_string(pid_));
    ::rmdir(cell_tree_.c_str());
  }
  proto::ExecDone done;
  done.id = id_;
  done.timed_out = timed_out_;
  // Between cells, background output is kept (up to this much) for the next.
  limit_[0] = limit_[1] = kIdleOutputBytes;
  sent_[0] = sent_[1] = 0;
  done.stdout_truncated = truncated_[0];
  done.stderr_truncated = truncated_[1];
  done.duration_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(ended_ - started_at_).count());
  if (cell_status_) {
    done.exit_code = *cell_status_;
  } else {
    set_exit(exit_status_.value_or(0), &done);
    done.state_lost = true;
  }
  return done;
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
  if (session_) {
    if (!cell_active_ || !alive()) return;
    if (!term_sent_) {
      // The cell's own processes go; the interpreter is interrupted and keeps
      // its state if it comes back within the grace period.
      timed_out_ = true;
      term_sent_ = true;
      // The interrupt goes first: it must be pending when the cell's child
      // dies, or the interpreter runs the cell's next statement before it.
      ::kill(pid_, language_ == proto::Language::raw ? SIGUSR1 : SIGINT);
      if (!cell_tree_.empty()) {
        (void)write_line(tree_ + "/cgroup.procs", std::to_string(pid_));
        (void)write_line(cell_tree_ + "/cgroup.kill", "1");
      }
      arm(timer_.get(), grace_);
    } else {
      ::kill(pid_, SIGKILL);
    }
    return;
  }
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
  // Whatever the program left running would hold the pipes open; a session
  // whose interpreter died starts over clean.
  signal_tree(SIGKILL);
}

proto::ExecDone Execution::result() const {
  proto::ExecDone done;
  done.id = id_;
  done.timed_out = timed_out_;
  done.stdout_truncated = truncated_[0];
  done.stderr_truncated = truncated_[1];
  set_exit(exit_status_.value_or(0), &done);
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
