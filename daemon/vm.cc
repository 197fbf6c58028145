#include "daemon/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace sandbox::daemon {
namespace {

constexpr int kAgentFdInChild = 3;

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

Result<std::unique_ptr<Vm>> Vm::start(uv_loop_t* loop, VmSpec spec, std::chrono::milliseconds boot_timeout,
                                      Events events) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Error::sys("socketpair");
  unique_fd host_end(sv[0]), guest_end(sv[1]);
  int con[2];
  if (::pipe2(con, O_CLOEXEC) != 0) return Error::sys("pipe2");
  unique_fd con_r(con[0]), con_w(con[1]);

  spec.agent_fd = kAgentFdInChild;
  auto argv = qemu_argv(spec);
  if (!argv) return std::move(argv).error();

  auto vm = std::unique_ptr<Vm>(new Vm());
  vm->events_ = std::move(events);
  vm->started_ = Clock::now();
  SpawnOptions opts;
  opts.argv = std::move(*argv);
  opts.fds = {{1, con_w.get()}, {2, con_w.get()}, {kAgentFdInChild, guest_end.get()}};
  auto proc = Process::spawn(opts);
  if (!proc) return std::move(proc).error().context("starting QEMU");
  vm->process_ = std::move(*proc);
  guest_end.reset();
  con_w.reset();

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
  agent_.reset();
  console_pipe_.reset();
  exit_watch_.reset();
  boot_timer_.reset();
  process_.kill_and_wait();
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

Result<void> Vm::ping(uint64_t seq) {
  if (state_ != State::ready)
    return Error::make(ErrorCode::internal, "ping is not legal in state " + std::string(vm_state_name(state_)));
  if (int rc = uv_write_string(reinterpret_cast<uv_stream_t*>(agent_.get()), frame_message(proto::Ping{seq})); rc != 0)
    return uv_error("writing to the agent", rc);
  return ok();
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
    kernel_ = hello->kernel;
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
