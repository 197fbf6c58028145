// The domain core: runs code in fresh VMs. Knows nothing of sockets or
// D-Bus; transports validate framing, authorize, call in here and map errors.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/result.h"
#include "daemon/qemu_argv.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

class Vm;

struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// Receives one run's events: output chunks in order, then exactly one of
// result or error. Request ids are the caller's own.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  virtual void on_output(uint64_t request_id, proto::Stream stream, std::string_view data) = 0;
  virtual void on_result(proto::RunResult result) = 0;
  virtual void on_error(proto::ErrorReply error) = 0;
};

struct ManagerOptions {
  VmSpec vm;  // accel, qemu, images, vcpus; memory comes from each request
  std::chrono::milliseconds boot_timeout{20'000};
  uint32_t boot_retries = 1;
  // Past timeout + grace + this, the daemon kills the VM itself.
  std::chrono::milliseconds kill_slack{5'000};
  // SIGTERM at the timeout, SIGKILL this much later (enforced in the guest).
  std::chrono::milliseconds kill_grace{2'000};
  uint32_t pids_max = 256;
};

class Manager {
 public:
  using RunId = uint64_t;

  Manager(uv_loop_t* loop, ManagerOptions options);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Validates and starts a run. Invalid requests fail here, synchronously;
  // everything later reaches `observer`.
  Result<RunId> run(const Caller& caller, proto::RunRequest request, std::weak_ptr<RunObserver> observer);
  // Ends a run whose caller went away: the VM is destroyed, nobody is told.
  void cancel(RunId id);
  // Cancels everything; used at shutdown.
  void cancel_all();
  size_t active_runs() const;
  const ManagerOptions& options() const { return options_; }

 private:
  class Run;
  friend class Run;
  void finished(RunId id);
  void bury(std::unique_ptr<Vm> vm);
  void schedule_sweep();

  uv_loop_t* loop_;
  ManagerOptions options_;
  RunId next_id_ = 1;
  std::map<RunId, std::unique_ptr<Run>> runs_;
  // Objects whose destruction must wait until no callback of theirs is on
  // the stack.
  std::vector<std::unique_ptr<Run>> dead_runs_;
  std::vector<std::unique_ptr<Vm>> dead_vms_;
  UvHandle<uv_timer_t> sweep_;
};

}  // namespace sandbox::daemon
