// One QEMU microVM and the agent inside it, driven from the libuv loop: the
// real VmHandle. The launcher starts QEMU; this object owns the process
// (killed with it, and reaped by the Reaper), reads the agent channel and
// the console, runs the boot deadline, and drives snapshot restore and
// save over QMP.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <sandbox/limits.h>

#include "common/framing.h"
#include "daemon/launcher.h"
#include "daemon/net_relay.h"
#include "daemon/qmp.h"
#include "daemon/reaper.h"
#include "daemon/uv_util.h"
#include "daemon/vm_handle.h"

namespace sandbox::daemon {

// Console output kept per VM for boot-failure reports.
inline constexpr size_t kConsoleTailBytes = 8 << 10;

class Vm : public VmHandle {
 public:
  // With `reaper`, the VM's end does not wait for QEMU to be gone.
  static Result<std::unique_ptr<Vm>> start(uv_loop_t* loop, const VmConfig& config, VmLaunch launch,
                                           VmEvents events, Reaper* reaper = nullptr);
  ~Vm() override;

  State state() const override { return state_; }
  void set_events(VmEvents events) override { events_ = std::move(events); }
  Result<void> start_job(uint64_t id, const std::vector<proto::Message>& frames) override;
  Result<void> send(const proto::Message& message) override;
  Result<void> ping(uint64_t seq) override;
  void snapshot(std::function<void(Result<void>)> done) override;
  bool restored() const override { return restored_; }
  std::optional<Language> prestarted() const override { return prestarted_; }
  Clock::time_point started_at() const override { return started_; }
  Clock::time_point ready_at() const override { return ready_at_; }
  ProcessUsage usage() const override;
  Result<void> configure_network(const NetPolicy& policy, std::string who,
                                 std::function<void(Result<void>)> done) override;
  std::vector<ExposedPort> exposed_ports() const override;
  NetworkStats take_network_stats() override;
  pid_t pid() const { return qemu_.process.pid(); }
  std::string name() const override { return qemu_.name; }

 private:
  Vm() = default;
  Result<void> watch(uv_loop_t* loop, std::chrono::milliseconds boot_timeout);
  Result<void> write(const proto::Message& m);
  void on_agent_bytes(std::string_view bytes);
  void on_message(proto::Message&& m);
  void on_exit();
  void fail(Error e);
  // Polls query-migrate until the migration completes or fails.
  void await_migration(std::function<void(Result<void>)> done);
  void restore();
  void resume_guest();

  State state_ = State::booting;
  VmEvents events_;
  const VmConfig* config_ = nullptr;
  Reaper* reaper_ = nullptr;
  LaunchedQemu qemu_;
  UvHandle<uv_pipe_t> agent_;
  UvHandle<uv_pipe_t> console_pipe_;
  UvHandle<uv_poll_t> exit_watch_;
  UvHandle<uv_timer_t> boot_timer_;
  UvHandle<uv_timer_t> poll_timer_;
  std::unique_ptr<QmpClient> qmp_;
  std::unique_ptr<NetRelay> net_;
  unique_fd migration_;  // the snapshot's device state, until QEMU has it
  std::function<void(Result<void>)> migration_done_;
  bool restored_ = false;
  bool warm_up_ = false;
  bool trust_pending_ = false;  // the extra CAs sent, their Ack awaited
  MessageReader reader_{limits::kMaxFrameBytes};
  std::string console_;
  std::optional<Language> prestarted_;
  uint64_t job_id_ = 0;
  Clock::time_point started_, ready_at_;
};

// Starts real QEMU VMs for the core.
class QemuVmFactory : public VmFactory {
 public:
  QemuVmFactory(uv_loop_t* loop, VmConfig config)
      : loop_(loop), config_(std::move(config)), reaper_(loop, config_.host.cgroups) {}
  Result<std::unique_ptr<VmHandle>> start(VmLaunch launch, VmEvents events) override;
  const VmConfig& config() const { return config_; }

 private:
  uv_loop_t* loop_;
  VmConfig config_;
  Reaper reaper_;  // after config_: it uses its cgroups
};

}  // namespace sandbox::daemon
