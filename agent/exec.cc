#include "agent/exec.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <sandbox/limits.h>

#include "agent/launchers.h"
#include "agent/system.h"
#include "common/io.h"

namespace sandbox::agent {
namespace {

struct Interpreter {
  const char* file;  // where the code is written
  const char* cell;  // where a session's code is written
  std::vector<std::string> argv;
};

Interpreter interpreter_for(Language language) {
  switch (language) {
    case Language::python:
      // -u: unbuffered, so output streams while the code runs.
      return {"/run/sandbox/main.py", "/run/sandbox/cell.py", {"/usr/bin/python3", "-u", "-c", launchers::kPython}};
    case Language::javascript:
      return {"/run/sandbox/main.js", "/run/sandbox/cell.js", {"/usr/bin/node", "-e", launchers::kNode}};
    case Language::raw:
      return {"/run/sandbox/main.sh", "/run/sandbox/cell.sh", {"/bin/bash", "-c", launchers::kBash, "main.sh"}};
  }
  return {"/run/sandbox/main.sh", "/run/sandbox/cell.sh", {"/bin/false"}};
}

constexpr const char* kCodeEnvFile = "/run/sandbox/env";

// Written over in place and then cut to length: truncating first frees the
// file's page and allocates another, ~2 ms under TCG in a VM fresh from a
// snapshot, where such pages are cold.
Result<void> write_file(const char* path, std::string_view data) {
  unique_fd fd(::open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return Error::sys("open", path);
  if (auto r = write_all(fd.get(), data, path); !r) return r;
  if (::ftruncate(fd.get(), static_cast<off_t>(data.size())) != 0) return Error::sys("ftruncate", path);
  return ok();
}

// The variables a waiting interpreter sets itself before the code runs
// (proto::Exec::code_env): NUL-separated KEY=VALUE. False when there are none.
Result<bool> write_code_env(const EnvList& vars) {
  if (vars.empty()) return false;
  std::string data;
  for (const auto& [k, v] : vars) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos)
      return Error::make(ErrorCode::invalid_argument, "invalid environment variable");
    data += k + "=" + v;
    data += '\0';
  }
  if (auto r = write_file(kCodeEnvFile, data); !r) return r.error();
  return true;
}

Result<void> write_line(const std::string& path, std::string_view value) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  return write_all(fd.get(), value, path);
}

// The exec tree's pids.max as the agent last wrote it (its only writer):
// a run asking for the limit already set has nothing to write, which saves
// three system calls and a cgroup update (about 0.35 ms under TCG).
struct {
  std::string path, value;
} g_pids_max_written;

Result<void> set_pids_max(const std::string& tree, std::string_view value) {
  std::string path = tree + "/pids.max";
  if (g_pids_max_written.path == path && g_pids_max_written.value == value) return ok();
  g_pids_max_written = {};
  if (auto r = write_line(path, value); !r) return r;
  g_pids_max_written = {std::move(path), std::string(value)};
  return ok();
}

void arm(int timer, std::chrono::milliseconds after) {
  itimerspec its{};
  auto ms = std::max<int64_t>(after.count(), 1);
  its.it_value.tv_sec = ms / 1000;
  its.it_value.tv_nsec = (ms % 1000) * 1'000'000;
  ::timerfd_settime(timer, 0, &its, nullptr);
}

void disarm(int timer) {
  itimerspec off{};
  ::timerfd_settime(timer, 0, &off, nullptr);
}

uint64_t ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  if (b <= a) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
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

struct Pipe {
  unique_fd read, write;
};
Result<Pipe> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe2");
  return Pipe{unique_fd(p[0]), unique_fd(p[1])};
}

}  // namespace

Result<std::unique_ptr<Execution>> Execution::spawn(Language language, const EnvList& env_in,
                                                    const std::string& tree, const std::vector<sock_filter>& filter) {
  auto interp = interpreter_for(language);
  std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "HOME=" + std::string(kUserHome),
      "USER=sandbox",
      "LOGNAME=sandbox",
      "LANG=C.UTF-8",
  };
  // The package layer, for the language it was built for. Set here, after
  // nothing a caller sends (PYTHON* and NODE_* are refused by the daemon).
  if (mounted_layer() == language) {
    if (language == Language::python) env.push_back("PYTHONPATH=" + std::string(proto::kLayerPythonDir));
    if (language == Language::javascript) env.push_back("NODE_PATH=" + std::string(proto::kLayerNodeDir));
  }
  for (const auto& [k, v] : env_in) {
    // The daemon validated these; refuse anything that would corrupt envp.
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos)
      return Error::make(ErrorCode::invalid_argument, "invalid environment variable");
    auto prefix = k + "=";
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
    env.push_back(prefix + v);
  }

  unique_fd cgroup;
  if (!tree.empty()) {
    // Anything left from an earlier execution must not join this one.
    (void)write_line(tree + "/cgroup.kill", "1");
    cgroup.reset(::open(tree.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cgroup) return Error::sys("open", tree);
  }
  unique_fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return Error::sys("open", "/dev/null");
  auto out = make_pipe(), err = make_pipe(), go = make_pipe(), report = make_pipe();
  for (auto* p : {&out, &err, &go, &report})
    if (!*p) return std::move(*p).error();
  unique_fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) return Error::sys("timerfd_create");

  SpawnOptions opts;
  opts.argv = interp.argv;
  opts.fds = {{0, devnull.get()},      {1, out->write.get()},   {2, err->write.get()},
              {3, go->read.get()},     {4, report->write.get()}};
  opts.die_with_parent = false;  // the agent is PID 1
  opts.user = SpawnOptions::User{kUserUid, kUserGid, {}};
  opts.no_new_privs = true;
  opts.seccomp = filter.empty() ? nullptr : &filter;
  opts.cgroup_fd = cgroup ? cgroup.get() : -1;
  opts.env = std::move(env);
  opts.cwd = std::string(kUserHome);
  // The hand-over's byte wakes the interpreter: were it to preempt the
  // agent there, the agent would hear the code's end only once the
  // interpreter had exited. Its own processes inherit the policy.
  opts.batch_scheduling = true;
  auto process = Process::spawn(opts);
  if (!process) return std::move(process).error().context("starting the interpreter");

  auto self = std::unique_ptr<Execution>(new Execution());
  self->language_ = language;
  self->tree_ = tree;
  self->process_ = std::move(*process);
  self->out_ = std::move(out->read);
  self->err_ = std::move(err->read);
  self->go_ = std::move(go->write);
  self->report_ = std::move(report->read);
  self->timer_ = std::move(timer);
  for (int fd : {self->out_.get(), self->err_.get(), self->report_.get()}) ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return self;
}

Result<void> Execution::start_session() {
  if (started_ || session_) return Error::make(ErrorCode::internal, "execution already started");
  if (::write(go_.get(), "s", 1) != 1) return Error::sys("write", "interpreter command pipe");
  session_ = true;
  return ok();
}

bool Execution::wait_ready(std::chrono::milliseconds bound) { return await_report(ready_, bound); }

bool Execution::await_report(const bool& flag, std::chrono::milliseconds bound) {
  auto until = Clock::now() + bound;
  while (!flag && report_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{report_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !on_report()) break;
  }
  return flag;
}

Result<void> Execution::warm(const proto::Exec& exec, std::chrono::milliseconds bound) {
  if (language_ != Language::python || started_ || session_ || !go_ || !report_)
    return Error::make(ErrorCode::internal, "no waiting Python interpreter to warm up");
  // A run's own hand-over. The tree's pids limit is set to the one runs
  // ask for by default, or written back as it stands: the run that follows
  // may set none.
  std::string pids_max = exec.pids_max > 0 ? std::to_string(exec.pids_max) : std::string();
  if (!tree_.empty() && pids_max.empty()) {
    auto current = read_file(tree_ + "/pids.max", 64);
    if (!current) return current.error();
    pids_max = current->substr(0, current->find('\n'));
  }
  if (auto r = stage(interpreter_for(language_).file, exec, pids_max); !r) return r.error();
  if (::write(go_.get(), "w", 1) != 1) return Error::sys("write", "interpreter command pipe");
  // Armed and disarmed only to take the path a run's timer takes.
  arm(timer_.get(), bound);
  warmed_ = false;
  bool done = await_report(warmed_, bound);
  disarm(timer_.get());
  if (!done) return Error::make(ErrorCode::timeout, "no answer within " + std::to_string(bound.count()) + " ms");
  return ok();
}

Result<bool> Execution::stage(const char* path, const proto::Exec& exec, std::string_view pids_max) {
  if (auto r = write_file(path, exec.code); !r) return r.error();
  auto with_env = write_code_env(exec.code_env);
  if (!with_env) return with_env.error();
  if (!tree_.empty() && !pids_max.empty())
    if (auto r = set_pids_max(tree_, pids_max); !r) return r.error();
  return *with_env;
}

void Execution::arm_after_handover(const proto::Exec& exec) {
  handed_at_ = Clock::now();
  timeout_ = std::chrono::milliseconds(std::clamp(exec.timeout_ms, limits::kMinTimeoutMs, limits::kMaxTimeoutMs));
  startup_timeout_ = std::chrono::milliseconds(std::max<uint32_t>(exec.startup_timeout_ms, 1'000));
  clock_running_ = false;
  // An interpreter not yet known ready may have said so since: its line is
  // waiting. One known ready is not read again (a quarter of a millisecond
  // under TCG).
  if (report_ && !can_run()) on_report();
  if (can_run())
    start_clock();
  else
    arm(timer_.get(), startup_timeout_);
}

void Execution::start_clock() {
  if (clock_running_) return;
  clock_running_ = true;
  clock_start_ = Clock::now();
  arm(timer_.get(), timeout_);
}

Result<void> Execution::run_cell(const proto::Exec& exec) {
  if (!session_ || cell_active_) return Error::make(ErrorCode::internal, "no session ready for a cell");
  if (!alive()) return Error::make(ErrorCode::guest_error, "the session's interpreter has exited");
  auto with_env = stage(interpreter_for(language_).cell, exec,
                        exec.pids_max > 0 ? std::to_string(exec.pids_max) : std::string());
  if (!with_env) return with_env.error();
  if (!tree_.empty()) {
    // Cgroups of earlier cells whose processes have all ended go away.
    if (auto d = Dir::open(tree_))
      for (const auto& name : d->names())
        if (name.starts_with("cell-")) ::rmdir((tree_ + "/" + name).c_str());
    cell_tree_ = tree_ + "/cell-" + std::to_string(cells_ + 1);
    if (::mkdir(cell_tree_.c_str(), 0755) != 0 && errno != EEXIST) return Error::sys("mkdir", cell_tree_);
    if (auto r = write_line(cell_tree_ + "/cgroup.procs", std::to_string(process_.pid())); !r) return r;
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
  // A dead interpreter makes this fail; its exit then ends the cell.
  if (*with_env)
    (void)!::write(go_.get(), "env\n", 4);
  else
    (void)!::write(go_.get(), "run\n", 4);
  arm_after_handover(exec);
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
    if (!ready_ && line == "r") {
      ready_ = true;
      ready_at_ = Clock::now();
      if (started_) start_clock();
      continue;
    }
    if (!started_ && !session_ && line.starts_with("w ")) {
      warmed_ = true;
      continue;
    }
    if (session_ && !session_ready_ && line == "s") {
      session_ready_ = true;
      ready_at_ = Clock::now();
      if (cell_active_) start_clock();
      continue;
    }
    // User code may write to fd 4 too; it then ends its own cell (or run)
    // early with a status of its choosing, which affects nothing beyond it.
    if (!session_) {
      // A one-shot run's exit status, unless the timeout's signal went out:
      // then the process's own end says how it died.
      if (started_ && !term_sent_ && !reported_status_ && line.starts_with("x ")) {
        reported_status_ = std::atoi(line.c_str() + 2) & 0xff;
        ended_ = Clock::now();
        disarm(timer_.get());
      }
      continue;
    }
    if (cell_active_ && !cell_status_) cell_status_ = std::atoi(line.c_str()) & 0xff;
  }
  if (!open) report_.reset();
  return open;
}

proto::ExecDone Execution::end_cell() {
  disarm(timer_.get());
  ended_ = Clock::now();
  cell_active_ = false;
  if (!cell_tree_.empty() && alive()) {
    // The interpreter leaves the cell's cgroup; what stays there is the
    // cell's background processes.
    (void)write_line(tree_ + "/cgroup.procs", std::to_string(process_.pid()));
    ::rmdir(cell_tree_.c_str());
  }
  proto::ExecDone done = result();
  // Between cells, background output is kept (up to this much) for the next.
  limit_[0] = limit_[1] = kIdleOutputBytes;
  sent_[0] = sent_[1] = 0;
  if (cell_status_) {
    done.exit_code = *cell_status_;
    done.signal = 0;
  } else {
    done.state_lost = true;
  }
  return done;
}

Result<void> Execution::go(const proto::Exec& exec) {
  if (started_) return Error::make(ErrorCode::internal, "execution already started");
  auto with_env = stage(interpreter_for(language_).file, exec,
                        exec.pids_max > 0 ? std::to_string(exec.pids_max) : std::string());
  if (!with_env) return with_env.error();
  id_ = exec.id;
  grace_ = std::chrono::milliseconds(exec.grace_ms);
  limit_[0] = exec.stdout_limit;
  limit_[1] = exec.stderr_limit;
  started_ = true;
  // A dead interpreter makes this fail; its exit is then the result. The
  // pipe closes with the execution: the interpreter has closed its end.
  (void)!::write(go_.get(), *with_env ? "e" : "g", 1);
  arm_after_handover(exec);
  return ok();
}

Execution::~Execution() {
  if (alive()) signal_tree(SIGKILL);
  // The handle reaps it: a later execution must not mistake its exit for its own.
}

void Execution::drain_available(const std::function<void(Stream, std::string_view)>& sink) {
  for (bool more = true; more;) {
    more = false;
    for (int fd : {out_.get(), err_.get()}) {
      if (fd < 0) continue;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0 && drain(fd, sink)) more = true;
    }
  }
}

void Execution::end_tree() { signal_tree(SIGKILL); }

bool Execution::drain(int fd, const std::function<void(Stream, std::string_view)>& sink) {
  unique_fd& pipe = fd == out_.get() ? out_ : err_;
  auto stream = fd == out_.get() ? Stream::out : Stream::err;
  int s = stream == Stream::out ? 0 : 1;
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
    if (sig == SIGKILL && write_line(tree_ + "/cgroup.kill", "1")) return;
    bool any = false;
    if (auto procs = read_file(tree_ + "/cgroup.procs", 1 << 20)) {
      size_t pos = 0;
      while (pos < procs->size()) {
        size_t nl = procs->find('\n', pos);
        pid_t p = std::atoi(procs->substr(pos, nl - pos).c_str());
        if (p > 0) any = signal_process(p, sig) || any;
        pos = nl == std::string::npos ? procs->size() : nl + 1;
      }
    }
    if (any) return;
  }
  if (process_.running()) (void)process_.signal(sig);
}

void Execution::interrupt() {
  term_sent_ = true;
  if (session_) {
    // The cell's own processes go; the interpreter is interrupted and keeps
    // its state if it comes back within the grace period. The interrupt goes
    // first: it must be pending when the cell's child dies, or the
    // interpreter runs the cell's next statement before it.
    (void)process_.signal(language_ == Language::raw ? SIGUSR1 : SIGINT);
    if (!cell_tree_.empty()) {
      (void)write_line(tree_ + "/cgroup.procs", std::to_string(process_.pid()));
      (void)write_line(cell_tree_ + "/cgroup.kill", "1");
    }
  } else {
    signal_tree(SIGTERM);
  }
  arm(timer_.get(), grace_);
}

void Execution::on_timer() {
  // An event with nothing expired is stale (a descriptor number reused
  // since it was reported): no bound has passed.
  uint64_t expirations;
  if (::read(timer_.get(), &expirations, sizeof expirations) != sizeof expirations) return;
  if (!alive() || (session_ && !cell_active_)) return;
  if (!clock_running_) {
    // The interpreter did not come up in time: nothing of the code ran.
    startup_failed_ = true;
    if (session_) (void)process_.signal(SIGKILL);
    signal_tree(SIGKILL);
    return;
  }
  if (!term_sent_) {
    timed_out_ = true;
    return interrupt();
  }
  if (session_)
    (void)process_.signal(SIGKILL);
  else
    signal_tree(SIGKILL);
}

void Execution::cancel() {
  if (!alive() || term_sent_ || (session_ && !cell_active_)) return;
  if (!clock_running_) {
    // Still starting: nothing to keep.
    if (session_) (void)process_.signal(SIGKILL);
    signal_tree(SIGKILL);
    return;
  }
  interrupt();
}

void Execution::on_exit() {
  if (auto status = process_.try_wait()) reaped(*status);
}

void Execution::reaped(int status) {
  if (exit_status_) return;
  exit_status_ = status;
  ended_ = Clock::now();
  // Whatever the program left running would hold the pipes open; a session
  // whose interpreter died starts over clean.
  signal_tree(SIGKILL);
}

std::string Execution::startup_error() const {
  return "the " + std::string(language_name(language_)) + " interpreter did not start within " +
         std::to_string(startup_timeout_.count()) + " ms";
}

proto::ExecDone Execution::result() const {
  proto::ExecDone done;
  done.id = id_;
  done.timed_out = timed_out_;
  done.stdout_truncated = truncated_[0];
  done.stderr_truncated = truncated_[1];
  if (reported_status_)
    done.exit_code = *reported_status_;
  else
    set_exit(exit_status_.value_or(0), &done);
  // Start-up the exec waited for; a prestarted interpreter was ready before.
  done.startup_ms = can_run() ? ms_between(handed_at_, ready_at_) : ms_between(handed_at_, Clock::now());
  auto end = ended_ > clock_start_ ? ended_ : Clock::now();
  done.duration_ms = clock_running_ ? ms_between(clock_start_, end) : 0;
  return done;
}

void reap_children(std::initializer_list<Execution*> executions) {
  for (;;) {
    // Look first, reap second: an execution's own child is reaped through
    // its handle, which must see the exit status.
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
    bool reaped = false;
    for (Execution* e : executions)
      if (e && e->pid() == info.si_pid) {
        e->on_exit();
        reaped = !e->alive();
      }
    // An orphan (or, should its handle fail, one of ours): never left to
    // block the loop.
    if (!reaped) ::waitpid(info.si_pid, nullptr, WNOHANG);
  }
}

}  // namespace sandbox::agent
