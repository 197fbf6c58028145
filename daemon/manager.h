// The domain core: runs code in fresh VMs, keeps a warm pool of VMs whose
// interpreter is already waiting, and schedules runs within the VM budget.
// Knows nothing of sockets or D-Bus; transports validate framing, authorize,
// call in here and map errors.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/result.h"
#include "daemon/qemu_argv.h"
#include "daemon/snapshots.h"
#include "daemon/uv_util.h"
#include "daemon/vm.h"

namespace sandbox::daemon {

class Vm;
class SnapshotStore;

struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// Receives one request's events: for a run or a session exec, output chunks
// in order, then exactly one of result or error; for other session requests
// exactly one of reply or error. Request ids are the caller's own.
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  virtual void on_output(uint64_t request_id, proto::Stream stream, std::string_view data) = 0;
  virtual void on_result(proto::RunResult result) = 0;
  virtual void on_error(proto::ErrorReply error) = 0;
  // SessionList (a session was created), Ack, FileDone, FileContent, FileList.
  virtual void on_reply(proto::Message reply) = 0;
};

inline constexpr size_t kLanguageCount = 3;

struct ManagerOptions {
  std::string version;       // reported in status
  std::string accel_reason;
  // For status: the per-VM cgroup limits, or why there are none.
  std::string host_limits;  // why this accelerator, for status
  VmSpec vm;  // accel, qemu, images, vcpus; memory comes from each request
  std::chrono::milliseconds boot_timeout{20'000};
  uint32_t boot_retries = 1;
  // Past timeout + grace + this, the daemon kills the VM itself.
  std::chrono::milliseconds kill_slack{5'000};
  // SIGTERM at the timeout, SIGKILL this much later (enforced in the guest).
  std::chrono::milliseconds kill_grace{2'000};
  uint32_t pids_max = 256;

  // Scheduler: every QEMU process counts, warm ones included.
  uint32_t max_vms = 8;
  uint32_t max_runs_per_uid = 6;  // running and queued
  std::chrono::milliseconds queue_timeout{30'000};

  // Warm pool, per language (index = proto::Language).
  std::array<uint32_t, kLanguageCount> pool_size{0, 0, 0};
  uint32_t pool_memory_mb = 256;  // only runs of this size are served warm
  uint32_t pool_refill_concurrency = 1;
  std::chrono::milliseconds pool_max_idle{600'000};
  std::chrono::milliseconds pool_health_interval{15'000};

  // Snapshot cache; null boots every VM.
  SnapshotStore* snapshots = nullptr;
  // Whether warm-pool VMs are restored too (else only cold runs are).
  bool pool_restore = true;

  // Sessions: open ones per uid (each holds a VM), and the idle timeout
  // when the creator names none.
  uint32_t max_sessions_per_uid = 4;
  uint32_t session_idle_timeout_ms = 300'000;
};

class Manager {
 public:
  using RunId = uint64_t;

  Manager(uv_loop_t* loop, ManagerOptions options);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Starts filling the warm pool.
  void start();
  // Validates and starts (or queues) a run. Invalid requests and refusals
  // fail here, synchronously; everything later reaches `observer`.
  Result<RunId> run(const Caller& caller, proto::RunRequest request, std::weak_ptr<RunObserver> observer);
  // Opens a session; the reply (a SessionList with its one entry) or the
  // error reaches `observer` once its VM is ready.
  Result<RunId> create_session(const Caller& caller, proto::SessionCreate request, std::weak_ptr<RunObserver> observer);
  // Queues a request on a session: SessionExec, SessionClose, FileWrite,
  // FileRead or FileListRequest. A session of another uid is not_found, as
  // is an unknown one; a closed one is session_closed.
  Result<void> session_request(const Caller& caller, uint64_t request_id, proto::Message request,
                               std::weak_ptr<RunObserver> observer);
  // The caller's open sessions.
  std::vector<proto::SessionInfo> sessions(const Caller& caller) const;
  // Ends a run (or a session still being created) whose caller went away:
  // the VM is destroyed, nobody is told.
  void cancel(RunId id);
  void cancel_all();
  // Stops taking runs, empties the pool, lets running ones finish for
  // `grace`, then cancels the rest; `done` runs once nothing is left.
  void drain(std::chrono::milliseconds grace, std::function<void()> done);
  bool draining() const { return draining_; }

  proto::Status status() const;
  // The snapshot cache, emptied first when `drop` (templates in flight finish).
  std::vector<proto::SnapshotInfo> snapshots(bool drop);
  size_t active_runs() const { return runs_.size(); }

 private:
  class Run;
  friend class Run;

  struct Idle {
    std::unique_ptr<Vm> vm;
    std::chrono::steady_clock::time_point since;
    uint64_t ping_seq = 0;  // outstanding ping, 0 when answered
  };
  struct Pool {
    std::deque<Idle> ready;
    std::map<Vm*, std::unique_ptr<Vm>> booting;
    uint64_t hits = 0;
    uint64_t misses = 0;
  };

  // VM lifecycle accounting. start_vm restores from a snapshot of
  // `language` when there is one (and starts making one when there is not);
  // *how says "snapshot" or "boot".
  Result<std::unique_ptr<Vm>> start_vm(VmSpec spec, proto::Language language, Vm::Events events, std::string* how,
                                       bool allow_restore = true);
  Result<std::unique_ptr<Vm>> boot_vm(VmSpec spec, proto::Language language, std::function<void(Vm*)> on_ready,
                                      std::function<void(Vm*, Error)> on_failed);
  // A restored VM failed: its snapshot goes, the next VM boots and makes a new one.
  void discard_snapshot(proto::Language language, uint32_t memory_mb, const std::string& why);
  void maybe_create_snapshot(proto::Language language, uint32_t memory_mb);
  void bury(std::unique_ptr<Vm> vm);
  bool has_capacity() const { return live_vms_ < options_.max_vms; }
  bool evict_idle();

  // Pool.
  std::unique_ptr<Vm> take_warm(proto::Language language);
  void refill();
  void on_pool_ready(proto::Language language, Vm* vm);
  void on_pool_failed(proto::Language language, Vm* vm, Error e);
  void remove_idle(Vm* vm, const std::string& why);
  void health_tick();

  // Scheduling.
  void admit();
  void finished(RunId id);
  void schedule_sweep();
  void pump_sessions();
  void maybe_drained();

  uv_loop_t* loop_;
  ManagerOptions options_;
  RunId next_id_ = 1;
  uint64_t next_ping_ = 1;
  uint32_t live_vms_ = 0;
  std::map<RunId, std::unique_ptr<Run>> runs_;
  std::deque<RunId> queue_;
  std::map<uid_t, uint32_t> per_uid_;
  std::map<uid_t, uint32_t> sessions_per_uid_;
  std::map<std::string, RunId> sessions_;  // open ones, by session id
  // Recently closed sessions, so their owner hears session_closed (and why)
  // rather than not_found. Bounded: the oldest are forgotten.
  struct Closed {
    uid_t uid;
    std::string why;
  };
  std::map<std::string, Closed> closed_;
  std::deque<std::string> closed_order_;
  std::array<Pool, kLanguageCount> pools_;
  struct Template {
    std::unique_ptr<Vm> vm;
    std::shared_ptr<SnapshotStore::Pending> pending;
  };
  std::map<std::string, Template> templates_;  // snapshots being made, by key
  bool draining_ = false;
  std::function<void()> drained_;
  // Objects whose destruction must wait until no callback of theirs is on
  // the stack.
  std::vector<std::unique_ptr<Run>> dead_runs_;
  std::vector<std::unique_ptr<Vm>> dead_vms_;
  UvHandle<uv_timer_t> sweep_;
  UvHandle<uv_timer_t> health_;
  UvHandle<uv_timer_t> retry_refill_;
  UvHandle<uv_timer_t> drain_timer_;
};

}  // namespace sandbox::daemon
