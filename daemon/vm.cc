#include "daemon/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace sandbox::daemon {
namespace {

constexpr int kAgentFdInChild = 3;
constexpr int kQmpFdInChild = 4;
constexpr int kKernelFdInChild = 5;
constexpr int kInitrdFdInChild = 6;
constexpr int kRootfsFdInChild = 7;
constexpr int kMemoryFdInChild = 8;
// How often a migration's progress is polled.
constexpr uint64_t kMigrationPollMs = 5;

// One message with a descriptor attached (SCM_RIGHTS).
bool send_with_fd(int socket, const std::string& data, int fd) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  return ::sendmsg(socket, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

std::string tail_for_error(const std::string& console) {
  if (console.empty()) return "(no console output)";
  auto start = console.size() > 2048 ? console.size() - 2048 : 0;
  return console.substr(start);
}

}  // namespace

std::string_view vm_state_name(Vm::State state) {
  switch (state) {
    case Vm::State::booting: return "booting";
    case Vm::State::ready: return "ready";
    case Vm::State::executing: return "executing";
    case Vm::State::failed: return "failed";
  }
  return "unknown";
}

namespace {
// Names cgroups and records; unique within a daemon's life, and start-up
// recovery clears what an earlier daemon left.
std::atomic<uint64_t> next_vm_number{1};
}  // namespace

Result<std::unique_ptr<Vm>> Vm::start(uv_loop_t* loop, VmSpec spec, std::chrono::milliseconds boot_timeout,
                                      Events events, int migration_fd, int memory_fd) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Error::sys("socketpair");
  unique_fd host_end(sv[0]), guest_end(sv[1]);
  bool need_qmp = spec.incoming || spec.memory_shared;
  unique_fd qmp_host, qmp_guest;
  if (need_qmp) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Error::sys("socketpair");
    qmp_host.reset(sv[0]);
    qmp_guest.reset(sv[1]);
    if (migration_fd < 0) return Error::make(ErrorCode::internal, "a snapshot VM needs its state file");
  }
  int con[2];
  if (::pipe2(con, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd con_r(con[0]), con_w(con[1]);

  spec.agent_fd = kAgentFdInChild;
  spec.qmp_fd = need_qmp ? kQmpFdInChild : -1;
  SpawnOptions opts;
  opts.confine = true;
  opts.fds = {{1, con_w.get()}, {2, con_w.get()}, {kAgentFdInChild, guest_end.get()}};
  if (need_qmp) opts.fds.emplace_back(kQmpFdInChild, qmp_guest.get());
  const VmHost* host = spec.host;
  // QEMU opens nothing of the daemon's by path: the images and the memory
  // are inherited descriptors, named through /proc/self/fd.
  auto pass = [&](int host_fd, int child_fd) {
    opts.fds.emplace_back(child_fd, host_fd);
    return "/proc/self/fd/" + std::to_string(child_fd);
  };
  if (host && host->kernel_fd >= 0) spec.kernel = pass(host->kernel_fd, kKernelFdInChild);
  if (host && host->initrd_fd >= 0) spec.initrd = pass(host->initrd_fd, kInitrdFdInChild);
  if (host && host->rootfs_fd >= 0) {
    pass(host->rootfs_fd, kRootfsFdInChild);
    spec.rootfs_fd = kRootfsFdInChild;
  }
  if (memory_fd >= 0) spec.memory_file = pass(memory_fd, kMemoryFdInChild);
  auto argv = qemu_argv(spec);
  if (!argv) return std::move(argv).error();
  opts.argv = std::move(*argv);

  auto vm = std::unique_ptr<Vm>(new Vm());
  vm->events_ = std::move(events);
  vm->started_ = Clock::now();
  vm->host_ = host;
  vm->name_ = "vm-" + std::to_string(next_vm_number++);
  unique_fd cgroup;
  if (host && host->cgroups && host->cgroups->enabled()) {
    CgroupLimits limits;
    limits.memory_max = (uint64_t{spec.memory_mb} + host->memory_overhead_mb) << 20;
    limits.memory_high = limits.memory_max - (uint64_t{host->memory_overhead_mb} << 20) / 4;
    limits.pids_max = host->pids_max;
    limits.cpu_percent = host->cpu_percent;
    auto fd = host->cgroups->create(vm->name_, limits);
    if (!fd) return std::move(fd).error().context("creating the VM's cgroup");
    cgroup = std::move(*fd);
    vm->has_cgroup_ = true;
    opts.cgroup_fd = cgroup.get();
  }
  if (host) {
    opts.user = host->user;
    opts.seccomp = host->seccomp;
  }
  auto proc = Process::spawn(opts);
  if (!proc) return std::move(proc).error().context("starting QEMU");
  vm->process_ = std::move(*proc);
  if (host && !host->records_dir.empty()) {
    // Written after the spawn: a crash in between leaves a QEMU that dies
    // with the daemon (PR_SET_PDEATHSIG) and, if any, a cgroup to recover.
    std::ofstream(host->records_dir + "/" + vm->name_)
        << vm->process_.pid() << " " << process_start_time(vm->process_.pid()) << "\n";
  }
  guest_end.reset();
  con_w.reset();
  qmp_guest.reset();

  Vm* self = vm.get();
  vm->agent_ = UvHandle<uv_pipe_t>::make(self, [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  vm->console_pipe_ = UvHandle<uv_pipe_t>::make(self, [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  vm->exit_watch_ = UvHandle<uv_poll_t>::make(self, [&](uv_poll_t* p) { return uv_poll_init(loop, p, vm->process_.pidfd()); });
  vm->boot_timer_ = UvHandle<uv_timer_t>::make(self, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
  if (!vm->agent_ || !vm->console_pipe_ || !vm->exit_watch_ || !vm->boot_timer_)
    return Error::make(ErrorCode::internal, "cannot create event handles for the VM");
  if (int rc = uv_pipe_open(vm->agent_.get(), host_end.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  host_end.release();
  if (int rc = uv_pipe_open(vm->console_pipe_.get(), con_r.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  con_r.release();
  if (need_qmp) {
    vm->qmp_ = UvHandle<uv_pipe_t>::make(self, [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
    vm->poll_timer_ = UvHandle<uv_timer_t>::make(self, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
    if (!vm->qmp_ || !vm->poll_timer_) return Error::make(ErrorCode::internal, "cannot create QMP handles");
    if (int rc = uv_pipe_open(vm->qmp_.get(), qmp_host.get()); rc != 0) return uv_error("uv_pipe_open", rc);
    qmp_host.release();
    uv_read_start(reinterpret_cast<uv_stream_t*>(vm->qmp_.get()), uv_alloc_buffer,
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                    std::unique_ptr<char[]> owned(buf->base);
                    Vm* vm = owner_of<Vm>(s);
                    if (!vm) return;
                    if (n > 0) return vm->on_qmp_bytes({buf->base, static_cast<size_t>(n)});
                    if (n < 0) uv_read_stop(s);
                  });
    // QEMU takes the migration stream's descriptor over QMP (getfd, with
    // SCM_RIGHTS): a number inherited at exec is not a name `fd:` accepts.
    uv_os_fd_t qfd;
    uv_fileno(reinterpret_cast<uv_handle_t*>(vm->qmp_.get()), &qfd);
    std::string caps = "{\"execute\":\"qmp_capabilities\"}\n";
    std::string getfd = "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"migration\"}}\n";
    if (::send(qfd, caps.data(), caps.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(caps.size()) ||
        !send_with_fd(qfd, getfd, migration_fd))
      return Error::sys("handing QEMU the snapshot file");
    vm->qmp_pending_.push_back([](bool, const std::string&) {});
    vm->qmp_pending_.push_back([vm = vm.get()](bool ok, const std::string& line) {
      if (!ok) vm->fail(Error::make(ErrorCode::vm_boot_failed, "QEMU refused the snapshot file: " + line.substr(0, 200)));
    });
    vm->warm_up_ = spec.warm_up;
    if (spec.incoming) vm->restore();
  }

  auto read_cb = [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    std::unique_ptr<char[]> owned(buf->base);
    Vm* vm = owner_of<Vm>(s);
    if (!vm) return;
    if (n > 0) return vm->on_agent_bytes({buf->base, static_cast<size_t>(n)});
    if (n >= 0 || vm->state_ == State::failed) return;
    uv_read_stop(s);
    // During boot the channel closes because QEMU is exiting: its exit
    // status (or the boot deadline) makes the better report.
    if (vm->state_ != State::booting)
      vm->fail(Error::make(ErrorCode::communication, std::string("agent channel closed: ") + uv_strerror(static_cast<int>(n))));
  };
  uv_read_start(reinterpret_cast<uv_stream_t*>(vm->agent_.get()), uv_alloc_buffer, read_cb);

  auto console_cb = [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    std::unique_ptr<char[]> owned(buf->base);
    Vm* vm = owner_of<Vm>(s);
    if (!vm || n <= 0) {
      if (n < 0) uv_read_stop(s);
      return;
    }
    vm->console_.append(buf->base, static_cast<size_t>(n));
    if (vm->console_.size() > kConsoleTailBytes) vm->console_.erase(0, vm->console_.size() - kConsoleTailBytes);
  };
  uv_read_start(reinterpret_cast<uv_stream_t*>(vm->console_pipe_.get()), uv_alloc_buffer, console_cb);

  uv_poll_start(vm->exit_watch_.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
    Vm* vm = owner_of<Vm>(p);
    if (!vm) return;
    uv_poll_stop(p);
    auto status = vm->process_.try_wait();
    if (vm->state_ == State::failed) return;
    std::string how = status ? describe_wait_status(*status) : "exited";
    if (vm->state_ == State::booting)
      vm->fail(Error::make(ErrorCode::vm_boot_failed, "QEMU " + how + " during boot; console: " + tail_for_error(vm->console_)));
    else
      vm->fail(Error::make(ErrorCode::communication, "VM " + how + " unexpectedly"));
  });

  uv_timer_start(
      vm->boot_timer_.get(),
      [](uv_timer_t* t) {
        Vm* vm = owner_of<Vm>(t);
        if (vm && vm->state_ == State::booting)
          vm->fail(Error::make(ErrorCode::timeout, "VM did not boot within the deadline; console: " + tail_for_error(vm->console_)));
      },
      static_cast<uint64_t>(boot_timeout.count()), 0);
  return vm;
}

Vm::~Vm() {
  // Handles first so no callback runs during the kill.
  qmp_.reset();
  poll_timer_.reset();
  agent_.reset();
  console_pipe_.reset();
  exit_watch_.reset();
  boot_timer_.reset();
  process_.kill_and_wait();
  if (has_cgroup_) host_->cgroups->remove(name_);
  if (host_ && !host_->records_dir.empty()) ::unlink((host_->records_dir + "/" + name_).c_str());
}

ProcessUsage Vm::usage() const {
  if (has_cgroup_) {
    auto u = host_->cgroups->usage(name_);
    if (u.cpu_usec && u.memory_peak_bytes) return {*u.cpu_usec / 1000, *u.memory_peak_bytes / 1024};
  }
  return read_process_usage(process_.pid()).value_or(ProcessUsage{});
}

Result<void> Vm::exec(const proto::Exec& exec) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "exec is not legal in state " + std::string(vm_state_name(state_)));
  if (int rc = uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(exec)); rc != 0)
    return uv_error("writing to the agent", rc);
  exec_id_ = exec.id;
  state_ = State::executing;
  return ok();
}

Result<void> Vm::file_request(uint64_t id, const std::vector<proto::Message>& frames) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "a file request is not legal in state " + std::string(vm_state_name(state_)));
  for (const auto& f : frames)
    if (int rc = uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(f)); rc != 0)
      return uv_error("writing to the agent", rc);
  exec_id_ = id;
  state_ = State::executing;
  return ok();
}

Result<void> Vm::ping(uint64_t seq) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "ping is not legal in state " + std::string(vm_state_name(state_)));
  if (int rc = uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(proto::Ping{seq})); rc != 0)
    return uv_error("writing to the agent", rc);
  return ok();
}

void Vm::qmp(std::string command, QmpReply reply) {
  if (!qmp_) return reply(false, "no QMP channel");
  command.push_back('\n');
  if (uv_write_string(reinterpret_cast<uv_stream_t*>(qmp_.get()), std::move(command)) != 0)
    return reply(false, "QMP write failed");
  qmp_pending_.push_back(std::move(reply));
}

void Vm::on_qmp_bytes(std::string_view bytes) {
  qmp_buffer_.append(bytes);
  // QMP speaks one JSON object per line; only replies matter here, and they
  // come in command order. Asynchronous events are skipped.
  size_t nl;
  while ((nl = qmp_buffer_.find('\n')) != std::string::npos) {
    std::string line = qmp_buffer_.substr(0, nl);
    qmp_buffer_.erase(0, nl + 1);
    if (!qmp_greeted_) {
      qmp_greeted_ = line.find("\"QMP\"") != std::string::npos;
      continue;
    }
    bool is_return = line.find("\"return\"") != std::string::npos;
    bool is_error = line.find("\"error\"") != std::string::npos;
    if ((!is_return && !is_error) || qmp_pending_.empty()) continue;
    auto reply = std::move(qmp_pending_.front());
    qmp_pending_.pop_front();
    reply(is_return, line);
  }
  if (qmp_buffer_.size() > (64 << 10)) qmp_buffer_.clear();  // a runaway line is not ours
}

void Vm::await_migration(std::function<void(Result<void>)> done) {
  qmp("{\"execute\":\"query-migrate\"}", [this, done](bool ok, const std::string& line) {
    if (state_ == State::failed) return;
    if (!ok || line.find("\"failed\"") != std::string::npos || line.find("\"cancelled\"") != std::string::npos)
      return done(Error::make(ErrorCode::vm_boot_failed, "migration failed: " + line.substr(0, 300)));
    if (line.find("\"completed\"") != std::string::npos) return done(sandbox::ok());
    uv_timer_start(poll_timer_.get(), [](uv_timer_t* t) {
      // The timer's owner re-issues the query; `done` travels in a member.
      if (auto* vm = owner_of<Vm>(t); vm && vm->migration_done_) vm->await_migration(std::move(vm->migration_done_));
    }, kMigrationPollMs, 0);
    migration_done_ = done;
  });
}

void Vm::restore() {
  restored_ = true;
  qmp("{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"x-ignore-shared\","
      "\"state\":true}]}}",
      [](bool, const std::string&) {});
  qmp("{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"fd:migration\"}}",
      [this](bool ok, const std::string& line) {
        if (!ok) return fail(Error::make(ErrorCode::vm_boot_failed, "migrate-incoming refused: " + line.substr(0, 300)));
        await_migration([this](Result<void> r) {
          if (!r) return fail(std::move(r).error());
          qmp("{\"execute\":\"cont\"}", [this](bool, const std::string&) {
            // Fresh entropy, clock and name before the agent says hello.
            proto::Resume resume;
            resume.seed.resize(64);
            unique_fd urandom(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
            if (!urandom || ::read(urandom.get(), resume.seed.data(), resume.seed.size()) != 64)
              return fail(Error::make(ErrorCode::internal, "cannot read host entropy"));
            timespec now{};
            ::clock_gettime(CLOCK_REALTIME, &now);
            resume.realtime_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(now.tv_nsec);
            static constexpr char kHex[] = "0123456789abcdef";
            resume.warm_up = warm_up_;
            resume.hostname = "sandbox-";
            for (int i = 0; i < 4; ++i) resume.hostname += kHex[static_cast<unsigned char>(resume.seed[i]) & 15];
            if (uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(resume)) != 0)
              fail(Error::make(ErrorCode::communication, "cannot reach the restored agent"));
          });
        });
      });
}

void Vm::snapshot(std::function<void(Result<void>)> done) {
  if (state_ != State::ready || !qmp_) return done(Error::make(ErrorCode::internal, "snapshot is not legal now"));
  qmp("{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"x-ignore-shared\","
      "\"state\":true}]}}",
      [](bool, const std::string&) {});
  qmp("{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"fd:migration\"}}",
      [this, done](bool ok, const std::string& line) {
        if (!ok) return done(Error::make(ErrorCode::internal, "migrate refused: " + line.substr(0, 300)));
        await_migration(done);
      });
}

void Vm::on_agent_bytes(std::string_view bytes) {
  if (state_ == State::failed) return;
  if (auto r = decoder_.feed(bytes); !r) return fail(Error::make(ErrorCode::communication, "agent sent " + r.error().message));
  std::string payload;
  while (state_ != State::failed && decoder_.next(&payload)) {
    auto m = proto::decode(payload);
    if (!m) return fail(Error::make(ErrorCode::communication, "agent sent a " + m.error().message));
    on_message(std::move(*m));
  }
}

void Vm::on_message(proto::Message&& m) {
  if (auto* hello = std::get_if<proto::Hello>(&m); hello && state_ == State::booting) {
    if (hello->version != proto::kProtocolVersion)
      return fail(Error::make(ErrorCode::vm_boot_failed, "agent speaks protocol " + std::to_string(hello->version) +
                                                             ", the daemon " + std::to_string(proto::kProtocolVersion)));
    prestarted_ = proto::language_from_name(hello->prestarted);
    state_ = State::ready;
    ready_at_ = Clock::now();
    uv_timer_stop(boot_timer_.get());
    if (events_.ready) events_.ready();
    return;
  }
  if (auto* pong = std::get_if<proto::Pong>(&m); pong && state_ != State::booting) {
    if (events_.pong) events_.pong(pong->seq);
    return;
  }
  if (state_ == State::executing) {
    if (auto* out = std::get_if<proto::Output>(&m); out && out->id == exec_id_) {
      if (events_.output) events_.output(std::move(*out));
      return;
    }
    if (auto* done = std::get_if<proto::ExecDone>(&m); done && done->id == exec_id_) {
      state_ = State::ready;
      if (events_.done) events_.done(std::move(*done));
      return;
    }
    if (auto* err = std::get_if<proto::ErrorReply>(&m); err && err->id == exec_id_) {
      state_ = State::ready;
      if (events_.exec_error) events_.exec_error(std::move(*err));
      return;
    }
    if (auto* chunk = std::get_if<proto::FileChunk>(&m); chunk && chunk->id == exec_id_) {
      if (events_.file) events_.file(std::move(m));
      return;
    }
    auto* fd = std::get_if<proto::FileDone>(&m);
    auto* fl = std::get_if<proto::FileList>(&m);
    if ((fd && fd->id == exec_id_) || (fl && fl->id == exec_id_)) {
      state_ = State::ready;
      if (events_.file) events_.file(std::move(m));
      return;
    }
  }
  fail(Error::make(ErrorCode::communication, "agent sent an unexpected message in state " + std::string(vm_state_name(state_))));
}

void Vm::fail(Error e) {
  if (state_ == State::failed) return;
  state_ = State::failed;
  if (boot_timer_) uv_timer_stop(boot_timer_.get());
  // Kill now; the exit watch or the destructor reaps.
  (void)process_.signal(SIGKILL);
  if (events_.failed) events_.failed(std::move(e));
}

}  // namespace sandbox::daemon
