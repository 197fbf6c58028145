// One VM lease: a run (one exec, then the VM goes) or a session (jobs, one
// at a time in arrival order, until it is closed, idles out or its VM
// dies). The lease owns its VM and its jobs; what it needs from the rest
// of the core (a VM, room, release) it asks of its LeaseHost.
//
// States, and the events legal in each (kLegal in lease.cc):
//   queued    admit -> starting; queue deadline, cancel -> finished
//   starting  VM ready -> idle (a session says so; a run goes busy at once);
//             VM failed -> starting (another try) or finished; cancel -> finished
//   idle      job -> busy; close, idle timeout, VM failed, cancel -> finished
//   busy      job done -> idle (session) or finished (run); host deadline,
//             VM failed, cancel -> finished
//   finished  nothing; the host forgets the lease
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "daemon/audit.h"
#include "daemon/layers.h"
#include "daemon/budget.h"
#include "daemon/metrics.h"
#include "daemon/scheduler.h"
#include "daemon/uv_util.h"
#include "daemon/vm_handle.h"

namespace sandbox::daemon {

// The guest's proxy variables: set with egress on, unset (empty) with it off.
EnvList proxy_env(bool egress);

struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// Where a request's answers go: output and file chunks as they come, then
// the one final message (result, error or reply).
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void deliver(proto::Message&& message) = 0;
};

using Clock = std::chrono::steady_clock;

// A request on a lease: a run's exec, or a session's exec, close or file call.
struct Job {
  uint64_t request_id = 0;  // the caller's
  proto::Message request;   // Run, SessionExec, SessionClose, FileWrite, FileRead, FileListRequest, SessionNetwork
  std::vector<std::string> chunks;  // a FileWrite's data, complete
  std::optional<ByteBudget::Hold> hold;  // the budget the chunks take
  std::weak_ptr<Sink> sink;
  Clock::time_point accepted = Clock::now();
  uint64_t token = 0;  // names it for cancel_job
};

struct LeaseSpec {
  Language language = Language::python;
  EnvList env;
  std::chrono::milliseconds timeout{30'000};  // each exec's default
  uint32_t memory_mb = 256;
  std::chrono::milliseconds idle_timeout{300'000};
  std::string session;  // empty for a run
  // Network: put in force on the VM before its first job (a warm or
  // restored VM gets it at checkout; VMs are never reused, so none carries
  // an earlier lease's policy).
  NetPolicy net;
  std::vector<std::string> allowed_domains;  // as asked, for session listings
  // The package layer attached read-only to its VM (held until the lease
  // ends, so eviction spares it); null without packages.
  std::shared_ptr<LayerGrant> layer;
};

// Defaults come from Config (config.h) through options_from (options.h).
struct LeaseConfig {
  std::chrono::milliseconds queue_timeout{};
  // The interpreter's start-up, before the code's clock starts.
  std::chrono::milliseconds startup_timeout{};
  // SIGTERM at the timeout, SIGKILL this much later (enforced in the guest).
  std::chrono::milliseconds kill_grace{};
  // Past startup + timeout + grace + this, the daemon kills the VM itself.
  std::chrono::milliseconds kill_slack{};
  // A file job the guest does not finish in this long loses its VM: the
  // largest transfer at a crawl.
  std::chrono::milliseconds file_deadline{300'000};
  uint32_t boot_retries = 0;
  uint32_t pids_max = 0;
  std::string accelerator;
};

class Lease;

class LeaseHost {
 public:
  virtual ~LeaseHost() = default;
  virtual const LeaseConfig& lease_config() const = 0;
  // A warm VM that fits (a pool hit), or null.
  virtual std::unique_ptr<VmHandle> take_warm(const LeaseSpec& spec) = 0;
  // The lease boots instead (a pool miss, if the pool serves its kind).
  virtual void cold_start(const LeaseSpec& spec) = 0;
  // Whether a VM may be started now (room in the fleet, or made by evicting
  // an idle pool VM).
  virtual bool make_room() = 0;
  // Starts a VM for the lease, restored from a snapshot if allowed and
  // there is one; *how: "snapshot" or "boot".
  virtual Result<std::unique_ptr<VmHandle>> start_vm(const LeaseSpec& spec, VmEvents events, bool allow_restore,
                                                     std::string* how) = 0;
  // A restored VM failed before it was ready.
  virtual void restore_failed(const LeaseSpec& spec, const Error& e) = 0;
  virtual void release_vm(std::unique_ptr<VmHandle> vm) = 0;
  // The lease is over; the host drops it on a later loop turn.
  virtual void lease_ended(Lease& lease) = 0;
  // Something changed (a job queued, a VM freed): pump on a later loop turn.
  virtual void poke() = 0;
  virtual bool draining() const = 0;
  // Where outcomes are counted.
  virtual Metrics& metrics() = 0;
};

class Lease {
 public:
  enum class State { queued, starting, idle, busy, finished };
  enum class Event { admit, vm_ready, job, job_done, vm_failed, cancel, close, idle_timeout, queue_deadline, host_deadline };

  // `request_id` and `sink` are the creator's: a session's opening reply
  // goes there (a run's result goes to its one job's sink).
  Lease(LeaseHost& host, uv_loop_t* loop, LeaseId id, Caller caller, LeaseSpec spec, uint64_t request_id,
        std::weak_ptr<Sink> sink);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  LeaseId id() const { return id_; }
  State state() const { return state_; }
  const Caller& caller() const { return caller_; }
  const LeaseSpec& spec() const { return spec_; }
  // The package layer, once the cache has it (before the lease is admitted).
  // While its package layer is built the lease is not waiting for a slot:
  // the queue deadline starts again when the layer is set.
  void pause_queue_clock();
  void set_layer(std::shared_ptr<LayerGrant> layer);
  bool is_session() const { return !spec_.session.empty(); }
  const std::string& closed_reason() const { return closed_reason_; }
  size_t pending_jobs() const { return jobs_.size(); }
  SessionInfo info() const;

  // Appends a job; it starts from the loop, never inside this call.
  void enqueue(Job job);
  // Starts on a warm VM or a fresh one; false when there is no room yet.
  bool try_start();
  // Starts the next job if the VM is free.
  void pump();
  // The caller of job `token` went away: a waiting job is dropped; a
  // running exec is stopped as at its timeout (the session stays usable).
  void cancel_job(uint64_t token);
  // The creator went away (a run, or a session still opening): the VM goes.
  void cancel();
  // Ends a session: its VM goes; waiting jobs hear why.
  void close(const std::string& why);
  // Ends the lease with an error to whoever waits on it.
  void fail(Error e);

 private:
  // The queue deadline: a lease that finds no VM slot within it fails.
  void start_queue_clock();
  bool accept(Event e);
  VmEvents vm_events();
  void adopt(std::unique_ptr<VmHandle> vm);
  Result<void> boot();
  void on_vm_ready();
  void on_network_ready(Result<void> r);
  void on_vm_failed(Error e);
  void arm_idle();
  void start_exec(const std::string& code, std::chrono::milliseconds timeout);
  void start_file_job();
  void start_network_change(const proto::SessionNetwork& request);
  void on_output(proto::Output&& o);
  void on_done(const proto::ExecDone& d);
  void on_file(proto::Message&& m);
  void on_job_error(Error e);
  void on_host_deadline();
  RunResult base_result();
  void succeed(RunResult r);
  void job_finished();
  void end();
  std::string name() const;
  void deliver(const std::weak_ptr<Sink>& sink, proto::Message&& m);
  // The audit entry and metrics of how something on this lease ended.
  AuditEntry audit_entry(AuditKind kind, std::string_view request) const;
  void record_result(const RunResult& r);
  void record_error(const Error& e);

  LeaseHost& host_;
  LeaseId id_;
  Caller caller_;
  LeaseSpec spec_;
  uint64_t request_id_;
  std::weak_ptr<Sink> sink_;
  State state_ = State::queued;
  std::unique_ptr<VmHandle> vm_;
  UvHandle<uv_timer_t> timer_;  // queue deadline, then each job's host deadline
  UvHandle<uv_timer_t> idle_;   // a session's idle timeout
  std::deque<Job> jobs_;
  std::optional<Job> current_;
  bool current_cancelled_ = false;
  uint64_t agent_seq_ = 0;  // ids on the agent channel
  uint64_t exec_count_ = 0;
  std::string closed_reason_;
  uint32_t attempts_ = 0;
  bool warm_ = false;
  bool restoring_ = false;
  std::string vm_start_;
  std::string vm_name_;
  bool opened_ = false;  // a session that reached its first idle
  std::string stdout_, stderr_;
  bool stdout_truncated_ = false, stderr_truncated_ = false;
  uint64_t file_bytes_ = 0;
  size_t file_chunks_ = 0;
  Clock::time_point accepted_, spawned_, ready_, exec_sent_;
  uint64_t created_wall_ = 0, last_activity_wall_ = 0;
  uint64_t cpu_at_start_ = 0;
  bool net_configured_ = false;
  bool proxy_env_set_ = false;  // the interpreter has the proxy variables
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for callbacks that may outlive it
};

std::string_view lease_state_name(Lease::State state);

}  // namespace sandbox::daemon
