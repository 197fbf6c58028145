// The edge between the domain core (leases, pool, scheduler, snapshots)
// and a VM: what the core may ask of a VM and what it hears back. The real
// implementation is Vm (QEMU, vm.h); tests use a fake that needs no QEMU,
// so every scheduling, pool and session rule is checked in milliseconds.
//
// A VM's states and what is legal in each:
//   booting  -> ready (agent said hello) | failed
//   ready    -> busy (a job was sent)    | failed
//   busy     -> ready (the job's answer) | failed
//   failed   terminal; the VM is gone or going
// Callbacks never destroy the VM they come from: the core releases VMs
// through Fleet, which destroys them on a later loop turn.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sandbox/result.h>

#include "common/net_rules.h"
#include "common/process.h"
#include "common/protocol.h"

namespace sandbox::daemon {

struct VmEvents {
  std::function<void()> ready;
  std::function<void(proto::Output&&)> output;
  std::function<void(proto::ExecDone&&)> done;
  // The guest refused or could not run the job; the VM stays usable.
  std::function<void(proto::ErrorReply&&)> job_error;
  // File traffic of the current job: FileChunk (more follows), then
  // FileDone or FileList (the job is over).
  std::function<void(proto::Message&&)> file;
  // Terminal: boot deadline, QEMU exit, broken channel, protocol violation.
  std::function<void(Error)> failed;
  std::function<void(uint64_t seq)> pong;
};

// What a VM is started as; the daemon-wide part (images, QEMU, accelerator)
// is the factory's.
struct VmShape {
  uint32_t memory_mb = 256;
  // The interpreter the agent starts before its hello, if any.
  std::optional<Language> prestart;
  // After a restore: run a trivial program first (TCG's translation cache).
  bool warm_up = false;
  // A package layer's image, open read-only (-1: none), for this language.
  int layer_fd = -1;
  std::optional<Language> layer;
  // A package builder (SPEC F14): boots the builder root instead of the
  // guest root, with `scratch_fd` (open read-write) as its scratch disk.
  bool builder = false;
  int scratch_fd = -1;
  // The same file opened read-only: QEMU opens a disk in both modes and
  // takes, from an fd set, a descriptor of each.
  int scratch_ro_fd = -1;
};

class VmHandle {
 public:
  enum class State { booting, ready, busy, failed };
  using Clock = std::chrono::steady_clock;

  virtual ~VmHandle() = default;
  virtual State state() const = 0;
  // A VM handed from the pool to a lease gets the lease's handlers.
  virtual void set_events(VmEvents events) = 0;
  // A job (an exec, or a file request and its chunks), legal in ready.
  virtual Result<void> start_job(uint64_t id, const std::vector<proto::Message>& frames) = 0;
  // More of the running job (a cancel), legal in busy.
  virtual Result<void> send(const proto::Message& message) = 0;
  // Liveness probe, legal in ready; answered through `pong`.
  virtual Result<void> ping(uint64_t seq) = 0;
  // Saves the VM for clones (a snapshot template only), legal in ready.
  virtual void snapshot(std::function<void(Result<void>)> done) = 0;
  // Restored from a snapshot rather than booted.
  virtual bool restored() const = 0;
  // The language whose interpreter is waiting, per the agent's hello.
  virtual std::optional<Language> prestarted() const = 0;
  virtual Clock::time_point started_at() const = 0;
  virtual Clock::time_point ready_at() const = 0;
  // CPU time and peak memory on the host.
  virtual ProcessUsage usage() const = 0;
  // A name for logs and the audit trail ("vm-N"), if the VM has one.
  virtual std::string name() const { return {}; }
  // Puts a network policy in force (ready or busy): host listeners at once,
  // the guest's side when it acknowledges, then `done`. `who` names the
  // caller in the network log. A VM without a network channel has none.
  virtual Result<void> configure_network(const NetPolicy&, std::string /*who*/,
                                         std::function<void(Result<void>)> /*done*/) {
    return Error::make(ErrorCode::internal, "this VM has no network channel");
  }
  virtual std::vector<ExposedPort> exposed_ports() const { return {}; }
  // Connections, bytes and denials since the last call.
  virtual NetworkStats take_network_stats() { return {}; }
};

std::string_view vm_state_name(VmHandle::State state);

}  // namespace sandbox::daemon
