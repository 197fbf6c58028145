// Every VM the daemon runs, started through one factory and counted against
// one budget (max_concurrent_vms: warm, template, leased alike). Released
// VMs are destroyed on a later loop turn, never inside a callback of theirs.
#pragma once

#include <uv.h>

#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include <sandbox/result.h>

#include "common/unique_fd.h"
#include "daemon/uv_util.h"
#include "daemon/vm_handle.h"

namespace sandbox::daemon {

// How a VM's memory comes to be: booted, restored from a snapshot (its
// device state and sealed RAM), or booted as a snapshot template (RAM in a
// memfd the daemon keeps, device state saved by snapshot()).
struct VmLaunch {
  VmShape shape;
  struct Snapshot {
    unique_fd state;
    int ram_fd = -1;  // owned by the snapshot store
  };
  std::optional<Snapshot> restore;
  std::optional<Snapshot> make_template;
};

class VmFactory {
 public:
  virtual ~VmFactory() = default;
  virtual Result<std::unique_ptr<VmHandle>> start(VmLaunch launch, VmEvents events) = 0;
};

class Fleet {
 public:
  Fleet(uv_loop_t* loop, VmFactory& factory, uint32_t max_vms) : factory_(factory), max_(max_vms), graveyard_(loop) {}

  bool has_room() const { return live_ < max_; }
  uint32_t live() const { return live_; }
  uint32_t max() const { return max_; }
  // Guest memory of every live VM, in MB.
  uint64_t memory_mb() const { return memory_mb_; }
  Result<std::unique_ptr<VmHandle>> start(VmLaunch launch, VmEvents events) {
    uint32_t mb = launch.shape.memory_mb;
    auto vm = factory_.start(std::move(launch), std::move(events));
    if (vm) {
      ++live_;
      memory_[vm->get()] = mb;
      memory_mb_ += mb;
    }
    return vm;
  }
  // The VM stops counting now and is destroyed (QEMU killed) a moment later.
  void release(std::unique_ptr<VmHandle> vm) {
    if (!vm) return;
    vm->set_events({});  // nobody hears from a VM that is going
    if (live_ > 0) --live_;
    if (auto it = memory_.find(vm.get()); it != memory_.end()) {
      memory_mb_ -= it->second;
      memory_.erase(it);
    }
    std::shared_ptr<VmHandle> dead(std::move(vm));
    graveyard_.post([dead]() mutable { dead.reset(); });
  }
  // Destroys what is waiting (shutdown).
  void flush() { graveyard_.run(); }

 private:
  VmFactory& factory_;
  uint32_t max_;
  uint32_t live_ = 0;
  std::unordered_map<const VmHandle*, uint32_t> memory_;
  uint64_t memory_mb_ = 0;
  Deferred graveyard_;
};

}  // namespace sandbox::daemon
