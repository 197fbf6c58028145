#include "daemon/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <time.h>

#include "common/io.h"

namespace sandbox::daemon {
namespace {

// How often a migration's progress is polled.
constexpr uint64_t kMigrationPollMs = 5;
// QEMU's migration capability that leaves RAM in the shared memory file.
constexpr std::string_view kIgnoreShared =
    R"({"capabilities":[{"capability":"x-ignore-shared","state":true}]})";

std::string tail_for_error(const std::string& console) {
  if (console.empty()) return "(no console output)";
  auto start = console.size() > 2048 ? console.size() - 2048 : 0;
  return console.substr(start);
}

}  // namespace

std::string_view vm_state_name(VmHandle::State state) {
  switch (state) {
    case VmHandle::State::booting: return "booting";
    case VmHandle::State::ready: return "ready";
    case VmHandle::State::busy: return "busy";
    case VmHandle::State::failed: return "failed";
  }
  return "unknown";
}

Result<std::unique_ptr<VmHandle>> QemuVmFactory::start(VmLaunch launch, VmEvents events) {
  auto vm = Vm::start(loop_, config_, std::move(launch), std::move(events), &reaper_);
  if (!vm) return std::move(vm).error();
  return std::unique_ptr<VmHandle>(std::move(*vm));
}

Result<std::unique_ptr<Vm>> Vm::start(uv_loop_t* loop, const VmConfig& config, VmLaunch launch, VmEvents events,
                                      Reaper* reaper) {
  auto qemu = launch_qemu(config, launch);
  if (!qemu) return std::move(qemu).error();
  auto vm = std::unique_ptr<Vm>(new Vm());
  vm->events_ = std::move(events);
  vm->config_ = &config;
  vm->reaper_ = reaper;
  vm->started_ = Clock::now();
  vm->warm_up_ = launch.shape.warm_up;
  vm->qemu_ = std::move(*qemu);
  if (auto r = vm->watch(loop, config.boot_timeout); !r) return std::move(r).error();
  if (vm->qemu_.qmp) {
    auto qmp = QmpClient::open(loop, std::move(vm->qemu_.qmp));
    if (!qmp) return std::move(qmp).error();
    vm->qmp_ = std::move(*qmp);
    auto& snapshot = launch.restore ? launch.restore : launch.make_template;
    // QEMU takes the device state's descriptor over QMP (getfd, with
    // SCM_RIGHTS): a number inherited at exec is not a name `fd:` accepts.
    Vm* self = vm.get();
    vm->qmp_->execute("getfd", R"({"fdname":"migration"})", [self](Result<JsonValue> r) {
      if (!r) self->fail(Error::make(ErrorCode::vm_boot_failed, "QEMU refused the snapshot file: " + r.error().message));
    }, snapshot->state.get());
    vm->poll_timer_ = UvHandle<uv_timer_t>::make(self, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
    if (!vm->poll_timer_) return Error::make(ErrorCode::internal, "cannot create a QMP poll timer");
    if (launch.restore) vm->restore();
  }
  return vm;
}

Result<void> Vm::watch(uv_loop_t* loop, std::chrono::milliseconds boot_timeout) {
  agent_ = UvHandle<uv_pipe_t>::make(this, [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  console_pipe_ = UvHandle<uv_pipe_t>::make(this, [&](uv_pipe_t* p) { return uv_pipe_init(loop, p, 0); });
  exit_watch_ = UvHandle<uv_poll_t>::make(this, [&](uv_poll_t* p) { return uv_poll_init(loop, p, qemu_.process.pidfd()); });
  boot_timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
  if (!agent_ || !console_pipe_ || !exit_watch_ || !boot_timer_)
    return Error::make(ErrorCode::internal, "cannot create event handles for the VM");
  if (int rc = uv_pipe_open(agent_.get(), qemu_.agent.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  qemu_.agent.release();
  if (int rc = uv_pipe_open(console_pipe_.get(), qemu_.console.get()); rc != 0) return uv_error("uv_pipe_open", rc);
  qemu_.console.release();
  if (qemu_.net) {
    net_ = std::make_unique<NetRelay>(loop, &config_->net, qemu_.name);
    if (auto r = net_->open(std::move(qemu_.net)); !r) return r;
  }

  uv_read_start(reinterpret_cast<uv_stream_t*>(agent_.get()), uv_alloc_buffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  std::unique_ptr<char[]> owned(buf->base);
                  Vm* vm = owner_of<Vm>(s);
                  if (!vm) return;
                  if (n > 0) return vm->on_agent_bytes({buf->base, static_cast<size_t>(n)});
                  if (n >= 0 || vm->state_ == State::failed) return;
                  uv_read_stop(s);
                  // During boot the channel closes because QEMU is exiting: its
                  // exit status (or the boot deadline) makes the better report.
                  if (vm->state_ != State::booting)
                    vm->fail(Error::make(ErrorCode::communication,
                                         std::string("agent channel closed: ") + uv_strerror(static_cast<int>(n))));
                });
  uv_read_start(reinterpret_cast<uv_stream_t*>(console_pipe_.get()), uv_alloc_buffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  std::unique_ptr<char[]> owned(buf->base);
                  Vm* vm = owner_of<Vm>(s);
                  if (!vm || n <= 0) {
                    if (n < 0) uv_read_stop(s);
                    return;
                  }
                  vm->console_.append(buf->base, static_cast<size_t>(n));
                  if (vm->console_.size() > kConsoleTailBytes)
                    vm->console_.erase(0, vm->console_.size() - kConsoleTailBytes);
                });
  uv_poll_start(exit_watch_.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
    if (Vm* vm = owner_of<Vm>(p)) {
      uv_poll_stop(p);
      vm->on_exit();
    }
  });
  uv_timer_start(boot_timer_.get(), [](uv_timer_t* t) {
    Vm* vm = owner_of<Vm>(t);
    if (vm && vm->state_ == State::booting)
      vm->fail(Error::make(ErrorCode::timeout, "VM did not boot within the deadline; console: " +
                                                   tail_for_error(vm->console_)));
  }, static_cast<uint64_t>(boot_timeout.count()), 0);
  return ok();
}

Vm::~Vm() {
  // Handles first so no callback runs during the kill.
  qmp_.reset();
  net_.reset();
  poll_timer_.reset();
  agent_.reset();
  console_pipe_.reset();
  exit_watch_.reset();
  boot_timer_.reset();
  if (reaper_) {
    reaper_->reap(std::move(qemu_));
    return;
  }
  qemu_.process.kill_and_wait();
  if (qemu_.has_cgroup) config_->host.cgroups->remove(qemu_.name);
}

ProcessUsage Vm::usage() const {
  if (qemu_.has_cgroup) {
    auto u = config_->host.cgroups->usage(qemu_.name);
    if (u.cpu_usec && u.memory_peak_bytes) return {*u.cpu_usec / 1000, *u.memory_peak_bytes / 1024};
  }
  return read_process_usage(qemu_.process.pid()).value_or(ProcessUsage{});
}

Result<void> Vm::configure_network(const NetPolicy& policy, std::string who, std::function<void(Result<void>)> done) {
  if (state_ != State::ready && state_ != State::busy)
    return Error::make(ErrorCode::internal, "network changes are not legal in state " + std::string(vm_state_name(state_)));
  if (!net_) return VmHandle::configure_network(policy, std::move(who), std::move(done));
  return net_->configure(policy, std::move(who), std::move(done));
}

std::vector<ExposedPort> Vm::exposed_ports() const { return net_ ? net_->exposed() : std::vector<ExposedPort>{}; }

NetworkStats Vm::take_network_stats() { return net_ ? net_->take_stats() : NetworkStats{}; }

Result<void> Vm::write(const proto::Message& m) {
  if (int rc = uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(m)); rc != 0)
    return uv_error("writing to the agent", rc);
  return ok();
}

Result<void> Vm::start_job(uint64_t id, const std::vector<proto::Message>& frames) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "a job is not legal in state " + std::string(vm_state_name(state_)));
  for (const auto& f : frames)
    if (auto r = write(f); !r) return r;
  job_id_ = id;
  state_ = State::busy;
  return ok();
}

Result<void> Vm::send(const proto::Message& message) {
  if (state_ != State::busy)
    return Error::make(ErrorCode::internal, "sending is not legal in state " + std::string(vm_state_name(state_)));
  return write(message);
}

Result<void> Vm::ping(uint64_t seq) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "ping is not legal in state " + std::string(vm_state_name(state_)));
  return write(proto::Ping{seq});
}

void Vm::await_migration(std::function<void(Result<void>)> done) {
  qmp_->execute("query-migrate", "", [this, done](Result<JsonValue> r) {
    if (state_ == State::failed) return;
    const JsonValue* status = r ? r->get("status") : nullptr;
    auto s = status && status->string() ? *status->string() : std::string_view();
    if (!r || s == "failed" || s == "cancelled")
      return done(Error::make(ErrorCode::vm_boot_failed,
                              "migration failed: " + (r ? "status " + std::string(s) : r.error().message)));
    if (s == "completed") return done(ok());
    migration_done_ = done;
    uv_timer_start(poll_timer_.get(), [](uv_timer_t* t) {
      if (auto* vm = owner_of<Vm>(t); vm && vm->migration_done_) vm->await_migration(std::move(vm->migration_done_));
    }, kMigrationPollMs, 0);
  });
}

void Vm::restore() {
  restored_ = true;
  qmp_->execute("migrate-set-capabilities", kIgnoreShared, [](Result<JsonValue>) {});
  qmp_->execute("migrate-incoming", R"({"uri":"fd:migration"})", [this](Result<JsonValue> r) {
    if (!r) return fail(Error::make(ErrorCode::vm_boot_failed, "migrate-incoming refused: " + r.error().message));
    await_migration([this](Result<void> m) {
      if (!m) return fail(std::move(m).error());
      qmp_->execute("cont", "", [this](Result<JsonValue>) { resume_guest(); });
    });
  });
}

void Vm::resume_guest() {
  // Fresh entropy, clock and name before the agent says hello.
  proto::Resume resume;
  resume.seed.resize(64);
  unique_fd urandom(::open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!urandom || ::read(urandom.get(), resume.seed.data(), resume.seed.size()) != 64)
    return fail(Error::make(ErrorCode::internal, "cannot read host entropy"));
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  resume.realtime_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(now.tv_nsec);
  resume.warm_up = warm_up_;
  resume.pids_max = config_->run_pids_max;
  resume.hostname = "sandbox-" + to_hex(resume.seed.substr(0, 2));
  if (!write(resume)) fail(Error::make(ErrorCode::communication, "cannot reach the restored agent"));
}

void Vm::snapshot(std::function<void(Result<void>)> done) {
  if (state_ != State::ready || !qmp_) return done(Error::make(ErrorCode::internal, "snapshot is not legal now"));
  qmp_->execute("migrate-set-capabilities", kIgnoreShared, [](Result<JsonValue>) {});
  qmp_->execute("migrate", R"({"uri":"fd:migration"})", [this, done](Result<JsonValue> r) {
    if (!r) return done(Error::make(ErrorCode::internal, "migrate refused: " + r.error().message));
    await_migration(done);
  });
}

void Vm::on_agent_bytes(std::string_view bytes) {
  if (state_ == State::failed) return;
  reader_.feed(bytes);
  while (state_ != State::failed) {
    auto m = reader_.next();
    if (!m) return;
    if (!*m) return fail(Error::make(ErrorCode::communication, "agent sent " + m->error().message));
    on_message(std::move(**m));
  }
}

void Vm::on_message(proto::Message&& m) {
  // Handlers are called through copies: one may replace this VM's handlers.
  if (auto* hello = std::get_if<proto::Hello>(&m); hello && state_ == State::booting) {
    if (hello->version != proto::kProtocolVersion)
      return fail(Error::make(ErrorCode::vm_boot_failed, "agent speaks protocol " + std::to_string(hello->version) +
                                                             ", the daemon " + std::to_string(proto::kProtocolVersion)));
    prestarted_ = schema::EnumNames<Language>::parse(hello->prestarted);
    // A booted guest takes the operator's CAs before it is anyone's; a
    // restored one has them from its template.
    if (!restored_ && !config_->extra_ca_pem.empty()) {
      trust_pending_ = true;
      if (auto r = write(proto::Trust{config_->extra_ca_pem}); !r)
        fail(std::move(r).error().context("handing the agent the extra CA certificates"));
      return;
    }
    state_ = State::ready;
    ready_at_ = Clock::now();
    uv_timer_stop(boot_timer_.get());
    if (auto cb = events_.ready) cb();
    return;
  }
  if (trust_pending_ && state_ == State::booting) {
    if (auto* err = std::get_if<proto::ErrorReply>(&m))
      return fail(Error::make(ErrorCode::vm_boot_failed, "the guest refused the extra CA certificates: " + err->message));
    if (std::holds_alternative<proto::Ack>(m)) {
      trust_pending_ = false;
      state_ = State::ready;
      ready_at_ = Clock::now();
      uv_timer_stop(boot_timer_.get());
      if (auto cb = events_.ready) cb();
      return;
    }
  }
  if (auto* pong = std::get_if<proto::Pong>(&m); pong && state_ != State::booting) {
    if (auto cb = events_.pong) cb(pong->seq);
    return;
  }
  if (state_ == State::busy) {
    if (auto* out = std::get_if<proto::Output>(&m); out && out->id == job_id_) {
      if (auto cb = events_.output) cb(std::move(*out));
      return;
    }
    if (auto* done = std::get_if<proto::ExecDone>(&m); done && done->id == job_id_) {
      state_ = State::ready;
      if (auto cb = events_.done) cb(std::move(*done));
      return;
    }
    // Id 0: the agent could not read a frame of ours, so it cannot name it.
    if (auto* err = std::get_if<proto::ErrorReply>(&m); err && (err->id == job_id_ || err->id == 0)) {
      state_ = State::ready;
      if (auto cb = events_.job_error) cb(std::move(*err));
      return;
    }
    if (auto* chunk = std::get_if<proto::FileChunk>(&m); chunk && chunk->id == job_id_) {
      if (auto cb = events_.file) cb(std::move(m));
      return;
    }
    auto* fd = std::get_if<proto::FileDone>(&m);
    auto* fl = std::get_if<proto::FileList>(&m);
    if ((fd && fd->id == job_id_) || (fl && fl->id == job_id_)) {
      state_ = State::ready;
      if (auto cb = events_.file) cb(std::move(m));
      return;
    }
  }
  fail(Error::make(ErrorCode::communication, "agent sent an unexpected '" + std::string(proto::type_name(m)) +
                                                 "' in state " + std::string(vm_state_name(state_))));
}

void Vm::on_exit() {
  auto status = qemu_.process.try_wait();
  if (state_ == State::failed) return;
  std::string how = status ? describe_wait_status(*status) : "exited";
  if (state_ == State::booting)
    fail(Error::make(ErrorCode::vm_boot_failed, "QEMU " + how + " during boot; console: " + tail_for_error(console_)));
  else
    fail(Error::make(ErrorCode::communication, "VM " + how + " unexpectedly"));
}

void Vm::fail(Error e) {
  if (state_ == State::failed) return;
  state_ = State::failed;
  if (boot_timer_) uv_timer_stop(boot_timer_.get());
  // Kill now; the exit watch or the destructor reaps.
  (void)qemu_.process.signal(SIGKILL);
  if (auto cb = events_.failed) cb(std::move(e));
}

}  // namespace sandbox::daemon
