// Admission: how many leases each uid may hold (runs and sessions, each
// with its own cap, `capacity` past it), and the queue of leases waiting for
// a VM, served in arrival order. Whether a VM can be had now (a warm one,
// room in the fleet, an idle pool VM to evict) is the caller's to say.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>

#include <sandbox/result.h>

namespace sandbox::daemon {

using LeaseId = uint64_t;

class Scheduler {
 public:
  struct Limits {
    uint32_t runs_per_uid = 0;      // running and queued
    uint32_t sessions_per_uid = 0;  // open, each holds a VM
  };
  enum class Kind { run, session };

  explicit Scheduler(Limits limits) : limits_(limits) {}

  // Counts a new lease of `uid`, or refuses it with `capacity`.
  Result<void> reserve(uid_t uid, Kind kind);
  void release(uid_t uid, Kind kind);
  uint32_t held(uid_t uid, Kind kind) const;
  const Limits& limits() const { return limits_; }

  void enqueue(LeaseId id) { queue_.push_back(id); }
  void remove(LeaseId id);
  // Offers queued leases to `start` in arrival order until one cannot
  // start yet (it stays first in line) or the queue is empty.
  void pump(const std::function<bool(LeaseId)>& start);
  size_t queued() const { return queue_.size(); }

 private:
  Limits limits_;
  std::map<uid_t, uint32_t> runs_, sessions_;
  std::deque<LeaseId> queue_;
};

}  // namespace sandbox::daemon
