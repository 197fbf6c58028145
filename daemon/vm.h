// One QEMU microVM and the agent inside it, driven from the libuv loop.
//
// States and what is legal in each:
//   booting    -> ready (agent said hello) | failed
//   ready      -> executing (exec() or a file request) | failed
//   executing  -> ready (exec done, file done, error)  | failed
//   failed     terminal; the QEMU process is gone or being killed
// The destructor kills QEMU in any state.
#pragma once

#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "common/framing.h"
#include "common/limits.h"
#include "common/protocol.h"
#include "common/result.h"
#include "daemon/cgroups.h"
#include "daemon/process.h"
#include "daemon/qemu_argv.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

// Console output kept per VM for boot-failure reports.
inline constexpr size_t kConsoleTailBytes = 8 << 10;

// What every QEMU shares on the host side: the images (opened read-only by
// the daemon and inherited), the user it runs as, its seccomp program, its
// cgroup limits and where it is recorded for start-up recovery.
struct VmHost {
  int kernel_fd = -1, initrd_fd = -1, rootfs_fd = -1;
  std::optional<SpawnOptions::User> user;
  const std::vector<sock_filter>* seccomp = nullptr;
  const Cgroups* cgroups = nullptr;
  // memory.max is the guest's memory plus this (QEMU, its translation
  // cache, device buffers); memory.high sits a quarter of it lower.
  uint32_t memory_overhead_mb = 192;
  uint32_t pids_max = 128;
  uint32_t cpu_percent = 0;
  // <records_dir>/<name> holds "pid start-time" of each live QEMU.
  std::string records_dir;
};

class Vm {
 public:
  enum class State { booting, ready, executing, failed };
  using Clock = std::chrono::steady_clock;

  struct Events {
    std::function<void()> ready;
    std::function<void(proto::Output&&)> output;
    std::function<void(proto::ExecDone&&)> done;
    // The agent refused an exec (guest-side error); the VM stays usable.
    std::function<void(proto::ErrorReply&&)> exec_error;
    // Terminal: boot deadline, QEMU exit, broken channel, protocol violation.
    std::function<void(Error)> failed;
    // Answer to ping().
    std::function<void(uint64_t seq)> pong;
    // File traffic of the current request: FileChunk (more follow), then
    // FileDone or FileList (the request is over).
    std::function<void(proto::Message&&)> file;
  };

  // Spawns QEMU; `spec.agent_fd` and `spec.qmp_fd` are ignored (the VM
  // picks the numbers). `migration_fd` is the snapshot's device state: read
  // when `spec.incoming`, written by snapshot() when `spec.memory_shared`.
  // A restored VM is "booting" until its agent has answered the Resume.
  // `memory_fd` holds the guest RAM (a snapshot template's or clone's);
  // QEMU opens it as /proc/self/fd/N.
  static Result<std::unique_ptr<Vm>> start(uv_loop_t* loop, VmSpec spec, std::chrono::milliseconds boot_timeout,
                                           Events events, int migration_fd = -1, int memory_fd = -1);
  ~Vm();

  State state() const { return state_; }
  // A VM handed from the warm pool to a run gets the run's handlers.
  void set_events(Events events) { events_ = std::move(events); }
  Result<void> exec(const proto::Exec& exec);
  // Sends a file request (its frames in order) under request id `id`.
  Result<void> file_request(uint64_t id, const std::vector<proto::Message>& frames);
  // Liveness probe, legal in ready.
  Result<void> ping(uint64_t seq);
  // Saves the device state to the migration fd (RAM stays in the shared
  // memory file); legal in ready, on a VM started with memory_shared.
  void snapshot(std::function<void(Result<void>)> done);
  bool restored() const { return restored_; }
  // The language whose interpreter is waiting, per the agent's hello.
  std::optional<proto::Language> prestarted() const { return prestarted_; }
  Clock::time_point started_at() const { return started_; }
  Clock::time_point ready_at() const { return ready_at_; }
  pid_t pid() const { return process_.pid(); }
  // CPU time and peak memory of QEMU: from its cgroup when it has one
  // (threads that exited included), else from /proc.
  ProcessUsage usage() const;

 private:
  Vm() = default;
  void on_agent_bytes(std::string_view bytes);
  void on_message(proto::Message&& m);
  void fail(Error e);

  // A minimal QMP client: one command at a time, answers matched in order.
  using QmpReply = std::function<void(bool ok, const std::string& line)>;
  void qmp(std::string command, QmpReply reply);
  void on_qmp_bytes(std::string_view bytes);
  // Polls query-migrate until the migration completes or fails.
  void await_migration(std::function<void(Result<void>)> done);
  void restore();

  State state_ = State::booting;
  Events events_;
  Process process_;
  UvHandle<uv_pipe_t> agent_;
  UvHandle<uv_pipe_t> console_pipe_;
  UvHandle<uv_poll_t> exit_watch_;
  UvHandle<uv_timer_t> boot_timer_;
  UvHandle<uv_pipe_t> qmp_;
  UvHandle<uv_timer_t> poll_timer_;
  std::string qmp_buffer_;
  bool qmp_greeted_ = false;
  std::deque<QmpReply> qmp_pending_;
  bool restored_ = false;
  bool warm_up_ = false;
  std::function<void(Result<void>)> migration_done_;
  FrameDecoder decoder_{limits::kMaxAgentFrameBytes};
  std::string console_;
  std::optional<proto::Language> prestarted_;
  uint64_t exec_id_ = 0;
  Clock::time_point started_, ready_at_;
  const VmHost* host_ = nullptr;
  std::string name_;  // cgroup and record name
  bool has_cgroup_ = false;
};

std::string_view vm_state_name(Vm::State state);

}  // namespace sandbox::daemon
