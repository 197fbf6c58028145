// sandbox-agent: PID 1 of every guest. Brings the system up, says hello to
// the host over its virtio-serial port, and runs exec requests.
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <memory>
#include <optional>

#include "agent/exec.h"
#include "agent/files.h"
#include "agent/log.h"
#include "agent/net.h"
#include "agent/seccomp.h"
#include <sandbox/limits.h>

#include "agent/system.h"
#include "common/framing.h"
#include "common/io.h"

namespace sandbox::agent {
namespace {

constexpr const char* kExecTree = "/sys/fs/cgroup/exec";
// How long hello waits for a prestarted interpreter: well inside the
// daemon's boot deadline, so a slow host is late, not failed.
constexpr std::chrono::milliseconds kPrestartWait{10'000};

// "sandbox.prestart=python" on the kernel command line asks for a warm
// interpreter before hello; "sandbox.template" says the VM is a snapshot
// template, whose interpreter preloads modules for every clone;
// "sandbox.warm_up" asks for a warm-up before hello (a booted pool VM under
// TCG), "sandbox.pids_max=N" for the pids limit runs ask for by default.
struct Prestart {
  std::optional<Language> language;
  bool template_vm = false;
  bool warm_up = false;
  uint32_t pids_max = 0;
};

class Agent {
 public:
  Agent(unique_fd port, unique_fd sigchld, unique_fd epoll, std::vector<sock_filter> filter)
      : port_(std::move(port)),
        sigchld_(std::move(sigchld)),
        epoll_(std::move(epoll)),
        filter_(std::move(filter)),
        files_([this](const proto::Message& m) { return send(m); }) {}

  Result<void> run(Prestart prestart) {
    if (auto r = watch(port_.get()); !r) return r;
    if (auto r = watch(sigchld_.get()); !r) return r;
    if (auto r = setup_exec_cgroup(kExecTree); r)
      tree_ = kExecTree;
    else
      log("no exec cgroup (%s): process trees are tracked by session", r.error().message.c_str());
    if (!tree_.empty()) {
      if (auto stall = watch_memory_stall(tree_); stall) {
        stall_ = std::move(*stall);
        if (auto r = watch(stall_.get(), EPOLLPRI); !r) return r;
      } else {
        log("no memory stall watch (%s)", stall.error().message.c_str());
      }
    }
    std::string prestarted;
    if (prestart.language) {
      // The interpreter comes up now and waits: a run pays only for its code.
      EnvList env;
      if (prestart.template_vm) env.emplace_back("SANDBOX_PRELOAD", "1");
      auto p = spawn_watched(*prestart.language, env);
      if (p) {
        prepared_ = std::move(*p);
        // Hello waits for the interpreter: a snapshot template is saved when
        // it says hello, and a clone of one still starting would finish its
        // start-up with an empty TCG translation cache, on a caller's time.
        // Bounded, so a slow host still says hello within the boot deadline.
        bool ready = prepared_->wait_ready(kPrestartWait);
        if (!ready)
          log("the %s interpreter is not ready yet; saying hello anyway",
              std::string(language_name(*prestart.language)).c_str());
        // A booted pool VM's first run would translate its whole path (60-90
        // ms under TCG instead of 10-20): warmed up now, as a restored one
        // is. Python only, where that is a fork of the waiting interpreter;
        // any other would start a second interpreter, most of a boot again.
        // Not after a start-up that already took the wait: hello is due.
        if (ready && prestart.warm_up && !prestart.template_vm && *prestart.language == Language::python)
          if (auto w = warm_up(*prestart.language, prestart.pids_max); !w) {
            log("warm-up: %s; starting another interpreter", w.error().message.c_str());
            prepared_.reset();
            if (auto again = spawn_watched(*prestart.language, env); again) prepared_ = std::move(*again);
          }
        if (prepared_) prestarted = language_name(*prestart.language);
      } else {
        log("cannot prestart %s: %s", std::string(language_name(*prestart.language)).c_str(),
            p.error().message.c_str());
      }
    }
    if (auto r = send(proto::Hello{proto::kProtocolVersion, kernel_release(), prestarted}); !r) return r;
    epoll_event events[8];
    for (;;) {
      int n = ::epoll_wait(epoll_.get(), events, 8, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::sys("epoll_wait");
      for (int i = 0; i < n; ++i)
        if (auto r = dispatch(events[i].data.fd); !r) return r;
    }
  }

 private:
  Result<void> watch(int fd, uint32_t events = EPOLLIN) {
    if (fd < 0) return ok();
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) return Error::sys("epoll_ctl");
    return ok();
  }
  // A descriptor already closed has left the epoll set by itself.
  void unwatch(int fd) {
    if (fd >= 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }

  // Every execution the agent keeps (prepared_, exec_, session_) has its
  // descriptors in the epoll set from its spawn on. Registering them costs
  // about a millisecond under TCG: a prestarted interpreter pays it while
  // the VM waits in the pool, not on a run's way to its code.
  Result<std::unique_ptr<Execution>> spawn_watched(Language language, const EnvList& env) {
    auto e = Execution::spawn(language, env, tree_, filter_);
    if (!e) return e;
    for (int fd : {(*e)->stdout_fd(), (*e)->stderr_fd(), (*e)->timer_fd(), (*e)->report_fd()})
      if (auto r = watch(fd); !r) return r.error();
    return e;
  }

  // An event of the interpreter waiting for a run: a late "ready", or its
  // end. One that writes output before it has code, or closes a pipe, is
  // not fit to serve a run (its output would open the run's): it goes, and
  // the run starts an interpreter of its own.
  void on_prepared(int fd) {
    if (fd == prepared_->timer_fd()) {
      uint64_t expirations;  // not armed while waiting; a stale expiry is dropped
      (void)!::read(fd, &expirations, sizeof expirations);
      return;
    }
    if (fd == prepared_->report_fd() && prepared_->on_report()) return;
    log("the waiting %s interpreter %s; dropping it", std::string(language_name(prepared_->language())).c_str(),
        fd == prepared_->report_fd() ? "closed its status pipe" : "wrote or closed its output");
    prepared_.reset();
  }
  bool is_prepared_fd(int fd) const {
    return prepared_ && (fd == prepared_->stdout_fd() || fd == prepared_->stderr_fd() ||
                         fd == prepared_->timer_fd() || fd == prepared_->report_fd());
  }

  // A VM restored from a snapshot under TCG has an empty translation cache,
  // and a booted one has translated only its boot: every code path is slow
  // the first time it runs. This runs one trivial program of `language` to
  // its end, paying that for the exec path (agent, kernel, interpreter)
  // before a caller is waiting. A prestarted Python runs it in a child of
  // its own and stays as it was (an error: it did not finish, and is no
  // longer fit to serve); it also leaves the exec tree at `pids_max`, the
  // limit runs ask for by default (0: as it is). Other languages run it in
  // an interpreter of their own, in a process group outside the exec
  // cgroup. Bounded well within the daemon's boot deadline (20 s by
  // default), so that a failed warm-up still ends in a hello.
  static constexpr std::chrono::milliseconds kWarmUpBound{8'000};

  Result<void> warm_up(Language language, uint32_t pids_max) {
    static constexpr const char* kWarmCode[] = {"import sys\nprint('warm')\n", "console.log('warm')\n",
                                                "echo warm\n"};
    proto::Exec x;
    x.language = language;
    x.code = kWarmCode[static_cast<size_t>(language)];
    x.timeout_ms = kWarmUpBound.count();
    x.startup_timeout_ms = kWarmUpBound.count();
    x.pids_max = pids_max;
    if (language == Language::python && prepared_) {
      // The request and its answer go through the codec as a run's do.
      MessageReader reader{limits::kMaxFrameBytes, FrameDecoder::Oversize::skip};
      reader.feed(frame_message(x));
      auto decoded = reader.next();
      if (!decoded || !*decoded || !std::holds_alternative<proto::Exec>(**decoded))
        return Error::make(ErrorCode::internal, "the warm-up request does not decode");
      if (auto r = prepared_->warm(std::get<proto::Exec>(**decoded), kWarmUpBound); !r) return r;
      (void)frame_message(proto::Output{x.id, Stream::out, "warm\n"});
      (void)frame_message(proto::ExecDone{});
      return ok();
    }
    auto e = Execution::spawn(language, {}, "", filter_);
    if (!e) return ok();
    if (!(*e)->go(x)) return ok();
    auto discard = [](Stream, std::string_view) {};
    while ((*e)->stdout_fd() >= 0 || (*e)->stderr_fd() >= 0) {
      pollfd fds[2] = {{(*e)->stdout_fd(), POLLIN, 0}, {(*e)->stderr_fd(), POLLIN, 0}};
      if (::poll(fds, 2, kWarmUpBound.count()) <= 0) break;
      for (auto& f : fds)
        if (f.fd >= 0 && f.revents) (*e)->drain(f.fd, discard);
    }
    // Its pipes are closed: the program is done or about to be.
    for (int i = 0; i < 3000 && (*e)->alive(); ++i) {
      (*e)->on_exit();
      if ((*e)->alive()) ::usleep(1000);
    }
    return ok();
  }

  Result<void> dispatch(int fd) {
    if (fd == port_.get()) return on_port();
    if (fd == stall_.get()) {
      // User code thrashes at its memory limit: its processes die as in an
      // OOM kill, and each exec reports SIGKILL when it is reaped.
      log("user code stalled on memory; killing its processes");
      if (auto r = kill_tree(tree_); !r) log("%s", r.error().message.c_str());
      return ok();
    }
    if (is_prepared_fd(fd)) {
      on_prepared(fd);
      return ok();
    }
    if (fd == sigchld_.get()) {
      signalfd_siginfo info;
      while (::read(sigchld_.get(), &info, sizeof info) == sizeof info) {
      }
      reap_children({exec_.get(), prepared_.get(), session_.get()});
      for (auto& e : exiting_) reap_children({e.get()});
      std::erase_if(exiting_, [](const auto& e) { return !e->alive(); });
      if (auto r = maybe_finish_cell(); !r) return r;
      return maybe_finish();
    }
    if (session_) {
      if (fd == session_->timer_fd()) {
        session_->on_timer();
        return ok();
      }
      if (fd == session_->report_fd()) {
        if (!session_->on_report()) unwatch(fd);
        return maybe_finish_cell();
      }
      if (fd == session_->stdout_fd() || fd == session_->stderr_fd()) {
        if (auto r = drain_session(fd); !r) return r;
        return maybe_finish_cell();
      }
    }
    if (!exec_) return ok();
    if (fd == exec_->timer_fd()) {
      exec_->on_timer();
      return ok();
    }
    if (fd == exec_->report_fd()) {
      if (!exec_->on_report()) unwatch(fd);
      return maybe_finish();
    }
    if (fd == exec_->stdout_fd() || fd == exec_->stderr_fd()) {
      Result<void> sent;
      bool open = exec_->drain(fd, [&](Stream s, std::string_view data) {
        if (sent) sent = send(proto::Output{exec_->id(), s, std::string(data)});
      });
      if (!open) unwatch(fd);
      if (!sent) return sent;
      return maybe_finish();
    }
    return ok();
  }

  Result<void> on_port() {
    char buf[64 << 10];
    ssize_t n = ::read(port_.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return ok();
    if (n <= 0) {
      // Host not connected (yet or any more): wait rather than spin.
      ::usleep(10'000);
      return ok();
    }
    reader_.feed({buf, static_cast<size_t>(n)});
    while (auto msg = reader_.next()) {
      if (!*msg) {
        // An oversize or malformed frame: skipped, and said so. The request
        // it carried gets no other answer; the host treats id 0 as the
        // current request's.
        log("dropping a host frame: %s", msg->error().message.c_str());
        if (auto r = send(proto::ErrorReply{0, ErrorCode::invalid_argument, msg->error().message}); !r) return r;
        continue;
      }
      if (auto r = on_message(std::move(**msg)); !r) return r;
    }
    return ok();
  }

  Result<void> on_message(proto::Message&& msg) {
    if (auto* exec = std::get_if<proto::Exec>(&msg)) return exec->session ? start_cell(*exec) : start(*exec);
    if (auto* cancel = std::get_if<proto::Cancel>(&msg)) {
      if (exec_ && exec_->id() == cancel->id) exec_->cancel();
      if (session_ && session_->cell_active() && session_->id() == cancel->id) session_->cancel();
      return ok();
    }
    if (auto* w = std::get_if<proto::FileWrite>(&msg)) return files_.on_write(*w);
    if (auto* c = std::get_if<proto::FileChunk>(&msg)) return files_.on_chunk(*c);
    if (auto* rd = std::get_if<proto::FileRead>(&msg)) return files_.on_read(*rd);
    if (auto* ls = std::get_if<proto::FileListRequest>(&msg)) return files_.on_list(*ls);
    if (auto* resume = std::get_if<proto::Resume>(&msg)) return on_resume(*resume);
    if (auto* trust = std::get_if<proto::Trust>(&msg)) {
      if (auto r = install_extra_cas(trust->pem); !r) {
        log("extra CA certificates: %s", r.error().message.c_str());
        return send(proto::ErrorReply{0, ErrorCode::internal, r.error().message});
      }
      return send(proto::Ack{0});
    }
    if (auto* ping = std::get_if<proto::Ping>(&msg)) return send(proto::Pong{ping->seq});
    log("ignoring an unexpected '%s' message from the host", std::string(proto::type_name(msg)).c_str());
    return ok();
  }

  // This VM is a clone of a snapshot: everything that must differ between
  // clones is renewed before it says hello again.
  Result<void> on_resume(const proto::Resume& r) {
    if (auto res = reseed(r.seed); !res) log("reseeding the RNG: %s", res.error().message.c_str());
    timespec ts{static_cast<time_t>(r.realtime_ns / 1'000'000'000), static_cast<long>(r.realtime_ns % 1'000'000'000)};
    if (r.realtime_ns && ::clock_settime(CLOCK_REALTIME, &ts) != 0) log("clock_settime failed");
    if (!r.hostname.empty()) ::sethostname(r.hostname.data(), r.hostname.size());
    // An interpreter started in the template has the template's random
    // state (bash $RANDOM, V8's Math.random): start a fresh one. Python
    // seeds its random module on first import, after this point.
    std::string prestarted;
    if (prepared_ && prepared_->alive()) {
      auto language = prepared_->language();
      // The template's Python keeps its modules (and seeds random only when
      // imported).
      bool respawn = language != Language::python;
      if (respawn) prepared_.reset();
      if (r.warm_up)
        if (auto w = warm_up(language, r.pids_max); !w) {
          log("warm-up: %s; starting another interpreter", w.error().message.c_str());
          prepared_.reset();
          respawn = true;
        }
      if (respawn)
        if (auto p = spawn_watched(language, {}); p) prepared_ = std::move(*p);
      if (prepared_) prestarted = language_name(language);
    }
    return send(proto::Hello{proto::kProtocolVersion, kernel_release(), prestarted});
  }

  // A session's exec: the interpreter is started on the first (or after it
  // died), with the session's environment, and keeps its state between cells.
  Result<void> start_cell(const proto::Exec& exec) {
    if (exec_ || (session_ && session_->cell_active()))
      return send(proto::ErrorReply{exec.id, ErrorCode::guest_error, "an exec is already running"});
    if (session_ && !session_->alive()) {
      drop_session();
      session_lost_ = true;
    }
    if (!session_) {
      if (prepared_ && prepared_->alive() && prepared_->language() == exec.language && exec.env.empty()) {
        session_ = std::move(prepared_);
      } else {
        prepared_.reset();
        auto spawned = spawn_watched(exec.language, exec.env);
        if (!spawned) return send(proto::ErrorReply{exec.id, spawned.error().code, spawned.error().message});
        session_ = std::move(*spawned);
      }
      if (auto r = session_->start_session(); !r) {
        session_.reset();
        return send(proto::ErrorReply{exec.id, r.error().code, r.error().message});
      }
    }
    if (auto r = session_->run_cell(exec); !r) return send(proto::ErrorReply{exec.id, r.error().code, r.error().message});
    // Output of background processes since the last cell opens this one.
    for (int s = 0; s < 2; ++s)
      if (!idle_output_[s].empty())
        if (auto r = send(proto::Output{exec.id, static_cast<Stream>(s), std::exchange(idle_output_[s], {})}); !r)
          return r;
    // A quick cell may have ended already: run_cell reads the status pipe
    // while the session's loop is not yet known ready, and the interpreter
    // can run before the agent does.
    return maybe_finish_cell();
  }

  Result<void> drain_session(int fd) {
    Result<void> sent;
    bool open = session_->drain(fd, [&](Stream s, std::string_view data) {
      if (session_->cell_active()) {
        if (sent) sent = send(proto::Output{session_->id(), s, std::string(data)});
      } else {
        idle_output_[static_cast<size_t>(s)].append(data);
      }
    });
    if (!open) unwatch(fd);
    return sent;
  }

  Result<void> maybe_finish_cell() {
    if (!session_ || !session_->cell_finished()) return ok();
    // Everything the interpreter wrote before its status line is in the
    // pipes: take it all before the cell's end.
    for (int fd : {session_->stdout_fd(), session_->stderr_fd()}) {
      pollfd p{fd, POLLIN, 0};
      while (fd >= 0 && ::poll(&p, 1, 0) > 0) {
        if (auto r = drain_session(fd); !r) return r;
        if (fd != session_->stdout_fd() && fd != session_->stderr_fd()) break;  // at EOF
      }
    }
    if (session_->startup_failed()) {
      auto id = session_->id();
      auto why = session_->startup_error();
      session_->end_cell();
      drop_session();
      session_lost_ = true;
      return send(proto::ErrorReply{id, ErrorCode::timeout, why});
    }
    auto done = session_->end_cell();
    done.state_lost = done.state_lost || std::exchange(session_lost_, false);
    if (!session_->alive()) drop_session();
    return send(done);
  }

  void drop_session() {
    if (!session_) return;
    for (int fd : {session_->stdout_fd(), session_->stderr_fd(), session_->report_fd(), session_->timer_fd()})
      if (fd >= 0) unwatch(fd);
    session_.reset();
    idle_output_[0].clear();
    idle_output_[1].clear();
  }

  Result<void> start(const proto::Exec& exec) {
    if (exec_ || session_) return send(proto::ErrorReply{exec.id, ErrorCode::guest_error, "an exec is already running"});
    // The prepared interpreter serves only a request it fits: same language,
    // no extra environment (that must be the process's own from the start).
    if (prepared_ && prepared_->alive() && prepared_->language() == exec.language && exec.env.empty()) {
      exec_ = std::move(prepared_);
    } else {
      prepared_.reset();
      auto spawned = spawn_watched(exec.language, exec.env);
      if (!spawned) return send(proto::ErrorReply{exec.id, spawned.error().code, spawned.error().message});
      exec_ = std::move(*spawned);
    }
    // Its descriptors are watched since its spawn: the hand-over is the
    // last thing done before the agent waits again. (A failed one closes
    // them, which takes them out of the epoll set.)
    if (auto r = exec_->go(exec); !r) {
      exec_.reset();
      return send(proto::ErrorReply{exec.id, r.error().code, r.error().message});
    }
    return ok();
  }

  Result<void> maybe_finish() {
    if (!exec_ || !exec_->finished()) return ok();
    auto exec = std::move(exec_);
    Result<void> sent;
    bool reaped_later = false;
    if (exec->startup_failed()) {
      sent = send(proto::ErrorReply{exec->id(), ErrorCode::timeout, exec->startup_error()});
    } else if (exec->reported()) {
      // The interpreter said it is done, after flushing: what it wrote is
      // in the pipes. The answer goes now, its frames written together;
      // its process is reaped later.
      std::string frames;
      exec->drain_available([&](Stream s, std::string_view data) {
        frames += frame_message(proto::Output{exec->id(), s, std::string(data)});
      });
      frames += frame_message(exec->result());
      sent = write_all(port_.get(), frames, "agent port");
      // Its threads and children have no more to do for this run; killed
      // after the answer, off the caller's wait.
      exec->end_tree();
      reaped_later = exec->alive();
    } else {
      sent = send(exec->result());
    }
    if (reaped_later) {
      // After the answer: under TCG each of these calls costs a quarter of
      // a millisecond. (Otherwise the descriptors close with `exec`, which
      // takes them out of the epoll set.)
      for (int fd : {exec->timer_fd(), exec->report_fd(), exec->stdout_fd(), exec->stderr_fd()}) unwatch(fd);
      exiting_.push_back(std::move(exec));
    }
    return sent;
  }

  Result<void> send(const proto::Message& m) { return write_all(port_.get(), frame_message(m), "agent port"); }

  unique_fd port_, sigchld_, epoll_;
  unique_fd stall_;  // memory stall trigger on the exec tree
  // Oversize frames are skipped, not fatal: the agent must stay reachable.
  MessageReader reader_{limits::kMaxFrameBytes, FrameDecoder::Oversize::skip};
  std::unique_ptr<Execution> exec_;
  std::vector<std::unique_ptr<Execution>> exiting_;  // answered, not yet reaped
  std::unique_ptr<Execution> prepared_;  // spawned, waiting for its code
  std::unique_ptr<Execution> session_;   // a session's interpreter
  bool session_lost_ = false;            // it died while no cell ran
  std::string idle_output_[2];
  std::string tree_;
  std::vector<sock_filter> filter_;
  FileService files_;
};

// The kernel command line's prestart words.
Prestart prestart_from_cmdline() {
  std::ifstream in("/proc/cmdline");
  std::string word;
  constexpr std::string_view kKey = "sandbox.prestart=";
  constexpr std::string_view kPids = "sandbox.pids_max=";
  Prestart p;
  while (in >> word) {
    std::string_view w = word;
    if (w.starts_with(kKey)) p.language = schema::EnumNames<Language>::parse(w.substr(kKey.size()));
    if (w == "sandbox.template") p.template_vm = true;
    if (w == "sandbox.warm_up") p.warm_up = true;
    if (w.starts_with(kPids)) {
      // A malformed value leaves the limit as it is (0), never a guess.
      uint32_t n = 0;
      auto v = w.substr(kPids.size());
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      p.pids_max = ec == std::errc{} && end == v.data() + v.size() ? n : 0;
    }
  }
  return p;
}

Result<void> serve() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  unique_fd sigchld(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigchld) return Error::sys("signalfd");
  auto path = find_agent_port(10'000);
  if (!path) return std::move(path).error();
  unique_fd port(::open(path->c_str(), O_RDWR | O_CLOEXEC));
  if (!port) return Error::sys("open", *path);
  unique_fd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return Error::sys("epoll_create1");
  // Its device node goes with lock-down; without it the VM has no network.
  if (::getpid() == 1)
    if (auto r = start_net_relay(); !r) log("no network relay: %s", r.error().message.c_str());
  if (::getpid() == 1)
    if (auto r = lock_down(); !r) return std::move(r).error().context("locking down the guest");
  auto filter = build_user_filter();
  if (!filter) return std::move(filter).error();
  Agent agent(std::move(port), std::move(sigchld), std::move(epoll), std::move(*filter));
  return agent.run(prestart_from_cmdline());
}

}  // namespace
}  // namespace sandbox::agent

int main() {
  using namespace sandbox::agent;
  if (::getpid() == 1) {
    if (auto r = setup_system(); !r) {
      log("system setup failed: %s", r.error().message.c_str());
      power_off();
    }
  }
  auto r = serve();
  log("fatal: %s", r ? "agent loop ended" : r.error().message.c_str());
  if (::getpid() == 1) power_off();
  return 1;
}
